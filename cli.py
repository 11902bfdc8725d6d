"""The `forensics` command: parse arguments, call the library, print. No forensic logic here.

Exit codes: 0 ran (the verdict is in the output), 2 bad input or usage (one line on stderr),
1 unexpected internal error (set FORENSICS_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr and exit 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _common(json_flag: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run models (auto: CUDA when present)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    ap = _Parser(prog="forensics", description="Synthetic media forensics toolkit.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("detect", parents=[common], help="is this image or video synthetic?",
                       description="Score images and videos (files or folders) for synthetic origin.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--detectors", help="comma list (default: every installed detector)")
    p.add_argument("--max-frames", type=int, default=32, help="frames sampled per video (default 32)")
    p.add_argument("--stride", type=int, metavar="N",
                   help="frames between consecutive sampled frames of a video (default: about fps/8, the "
                        "~1/8 s spacing the temporal detector was trained on)")
    p.add_argument("--report", metavar="DIR", help="write JSON and heatmap PNGs here")

    p = sub.add_parser("generate", parents=[common], help="write labeled synthetic media from the bank",
                       description="Sample bank generators into a labeled corpus folder (resumable).")
    p.add_argument("--arch", required=True, help="architecture(s), comma separated (see `bank list`)")
    p.add_argument("--n", type=int, required=True, help="items per architecture")
    p.add_argument("--out", required=True, help="corpus folder (created or resumed)")
    p.add_argument("--seed", type=int, default=0, help="first seed; item i uses seed+i")
    p.add_argument("--sampler", help="sampler name for families that have several")
    p.add_argument("--steps", type=int, help="sampling steps for iterative samplers")
    p.add_argument("--frames", type=int, help="frames per clip for video architectures (default: the model's)")
    p.add_argument("--checkpoint", help="a checkpoint folder instead of the shipped default")
    p.add_argument("--sign", action="store_true",
                   help="sign every output with C2PA (see `provenance init`) and record it in the rows")
    p.add_argument("--keys", metavar="DIR", help="signing key folder for --sign (default: the config folder)")
    p.add_argument("--watermark", nargs="?", const="posthoc", default=None, choices=["none", "treering", "posthoc"],
                   help="treering: the key in the initial noise (ddim, rectified_flow); posthoc (bare "
                        "--watermark): the post-hoc mark on every output, payload from SHA-256('<arch>:<seed>')")
    p.add_argument("--watermark-key", metavar="FILE",
                   help="watermark key file (default: the config folder's watermark.key, made on first use)")
    p.add_argument("--shard", metavar="I/N", help="write only shard I of N (default: torchrun's RANK/WORLD_SIZE); "
                   "merge with `corpus merge DIR`, automatic under torchrun")

    p = sub.add_parser("bank", help="the generator bank: list, train, grid, score",
                       description="List, train and preview the bank's generators.")
    bsub = p.add_subparsers(dest="bank_command", required=True, parser_class=_Parser)
    b = bsub.add_parser("list", parents=[common], help="architectures and their checkpoints")
    b = bsub.add_parser("train", parents=[common], help="train an architecture on real data (resumable)")
    b.add_argument("arch")
    b.add_argument("--data", help="folder of real images (default: bundled photos)")
    b.add_argument("--minutes", type=float, help="wall-clock budget")
    b.add_argument("--steps", type=int, help="training steps (default per architecture)")
    b.add_argument("--preset", default="cpu", help="model size preset: tiny, cpu, gpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="checkpoint folder (default: the shipped one)")
    b.add_argument("--per-source", type=int, default=400, help="real crops per source photo")
    b.add_argument("--fresh", action="store_true", help="ignore a saved training state")
    b.add_argument("--save-every", type=int, help="save the resumable training state every N steps")
    b.add_argument("--fid-n", type=int, help="samples for the card's Fréchet distance (default 256; 0 skips)")
    b.add_argument("--teacher", metavar="DIR", help="reflow: the rectified_flow checkpoint to straighten "
                   "(default: the shipped one)")
    b.add_argument("--pairs", type=int, help="reflow: (noise, sample) couplings drawn from the teacher (default 2048)")
    b = bsub.add_parser("grid", parents=[common], help="write a sample grid PNG")
    b.add_argument("arch")
    b.add_argument("--out", help="PNG path (default: ARCH_grid.png)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--checkpoint", help="checkpoint folder")
    b = bsub.add_parser("score", parents=[common], help="Fréchet distance of checkpoints, written into their cards",
                        description="Sample N images, compute the Fréchet distance to N real test images "
                                    "(forensics/fidelity.py) and the real-vs-real floor, and write them into "
                                    "card.json metrics.fidelity.ARCH.")
    b.add_argument("arch", help="an architecture, or all")
    b.add_argument("--n", type=int, default=256, help="samples = real images per side (default 256)")
    b.add_argument("--checkpoint", help="score this checkpoint folder instead of the shipped one")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--batch", type=int, default=64, help="sampling batch size")
    b.add_argument("--inception-weights", metavar="PATH",
                   help="torchvision Inception-v3 weights for standard FID (default: $FORENSICS_INCEPTION_WEIGHTS "
                        "or the torch hub cache; never downloaded)")

    p = sub.add_parser("corpus", help="build, inspect and verify corpora",
                       description="Build a corpus from a recipe, show its card, verify its files.")
    csub = p.add_subparsers(dest="corpus_command", required=True, parser_class=_Parser)
    c = csub.add_parser("build", parents=[common], help="build (or resume) a corpus from a TOML recipe")
    c.add_argument("recipe")
    c.add_argument("--out", help="corpus folder (default: the recipe's)")
    c = csub.add_parser("info", parents=[common], help="the card and counts of a corpus")
    c.add_argument("dir")
    c = csub.add_parser("merge", parents=[common], help="fold the shards of a sharded `generate` into one manifest")
    c.add_argument("dir")
    c = csub.add_parser("verify", parents=[common], help="check every file against its row")
    c.add_argument("dir")

    p = sub.add_parser("train", parents=[common], help="fit a detector on a corpus",
                       description="Fit a detector on a corpus and save it with a card.")
    p.add_argument("detector")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", help="checkpoint folder (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="training steps (artifact; default 4000)")
    p.add_argument("--minutes", type=float, help="wall-clock budget (artifact; default 7)")

    p = sub.add_parser("evaluate", parents=[common], help="metrics, leave-one-out matrix, robustness sweeps",
                       description="Evaluate the detectors on a corpus split: metrics per architecture and family, "
                                   "attribution, robustness to perturbations, leave-one-family-out; writes "
                                   "results.json, PNG plots and index.html.")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True, help="folder for results.json, plots and index.html")
    p.add_argument("--attacks", help="comma list of perturbations, e.g. jpeg:75,resize:0.5,blur:1 "
                                     "('none' to skip; default: a sweep of JPEG, resize, blur, noise, crop, WebP)")
    p.add_argument("--leave-one-out", metavar="BY",
                   help="'family' or 'architecture' (hold out each in turn) or a comma list of families")
    p.add_argument("--detectors", help="comma list (default: every installed detector)")
    p.add_argument("--loo-detectors", default="frequency,artifact", help="detectors refitted per held-out group")
    p.add_argument("--loo-steps", type=int, default=600, help="artifact training steps per held-out group")
    p.add_argument("--split", default="test", help="corpus split to evaluate on (default test)")
    p.add_argument("--max-per-arch", type=int, help="at most this many items per architecture (and real)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("watermark", help="post-hoc watermark: embed, detect (also Tree-Ring detection)",
                       description="Keyed robust watermark with a 32-bit payload (images and MP4). The key is "
                                   "made on first use at $XDG_CONFIG_HOME/forensics/watermark.key (else "
                                   "~/.config/forensics), mode 0600, or --key FILE. `detect --method treering` "
                                   "tests for the Tree-Ring mark of `generate --watermark treering` (same key).")
    wsub = p.add_subparsers(dest="watermark_command", required=True, parser_class=_Parser)
    w = wsub.add_parser("embed", parents=[common], help="mark an image (PNG/JPEG out) or a video (MP4 out)")
    w.add_argument("input", metavar="IN")
    w.add_argument("output", metavar="OUT")
    w.add_argument("--payload", metavar="HEX", help="32-bit id, up to 8 hex digits (default: from IN's SHA-256)")
    w.add_argument("--key", metavar="FILE", help="key file (created when missing)")
    w.add_argument("--strength", type=float, default=1.0,
                   help="mark amplitude; 1 gives PSNR ≈ 42 dB, 2 ≈ 36 dB and more robustness")
    w = wsub.add_parser("detect", parents=[common], help="test files for the watermark (p-value, payload)")
    w.add_argument("paths", nargs="+", metavar="IN")
    w.add_argument("--key", metavar="FILE", help="key file (default: the default key)")
    w.add_argument("--method", default="posthoc", choices=["posthoc", "treering"],
                   help="posthoc (default); treering: the key in the initial noise of ddim / rectified_flow, "
                        "found by inverting the sampler (images; other sizes are stretched to 32x32)")
    w.add_argument("--arch", default="auto", choices=["auto", "ddim", "rectified_flow"],
                   help="treering: the model to invert (auto: both shipped models, Bonferroni-combined)")
    w.add_argument("--inversion-steps", type=int,
                   help="treering: inversion steps (default: ddim 20, rectified_flow 8 Heun steps)")
    w.add_argument("--threshold", type=float, default=1e-6,
                   help="detect when the p-value is at most this (the false-positive rate; default 1e-6)")
    w.add_argument("--max-frames", type=int, default=64, help="frames sampled per video (default 64)")

    keys_opt = argparse.ArgumentParser(add_help=False)
    keys_opt.add_argument("--keys", metavar="DIR",
                          help="key folder (default: $XDG_CONFIG_HOME/forensics, else ~/.config/forensics)")
    trust_opt = argparse.ArgumentParser(add_help=False)
    trust_opt.add_argument("--trust-anchors", metavar="PEM",
                           help="trust these CA certificates instead of the key folder's CA ('none': trust no one)")
    trust_opt.add_argument("--no-soft-binding", action="store_true",
                           help="do not look for the watermark to recover a stripped manifest")
    p = sub.add_parser("provenance", help="C2PA content credentials: init, sign, verify",
                       description="Local signing keys, C2PA signing and verification with watermark soft binding.")
    psub = p.add_subparsers(dest="provenance_command", required=True, parser_class=_Parser)
    q = psub.add_parser("init", parents=[common], help="create a local CA and an ES256 signing certificate")
    q.add_argument("--dir", help="key folder (default: $XDG_CONFIG_HOME/forensics, else ~/.config/forensics)")
    q.add_argument("--force", action="store_true", help="replace existing keys (old signatures stop being trusted)")
    q.add_argument("--name", default="forensics local signer", help="the signing certificate's common name")
    q.add_argument("--days", type=int, default=730, help="validity of the signing certificate in days")
    q = psub.add_parser("sign", parents=[common, keys_opt], help="sign a JPEG, PNG, WebP or MP4",
                        description="Sign IN into OUT (format from OUT's extension). With --arch the manifest says "
                                    "c2pa.created / trainedAlgorithmicMedia (a bank output); otherwise c2pa.edited "
                                    "with IN as the parent ingredient.")
    q.add_argument("input", metavar="IN")
    q.add_argument("output", metavar="OUT")
    q.add_argument("--arch", help="bank architecture that generated IN (marks it a bank output)")
    q.add_argument("--checkpoint-sha256", help="the generating checkpoint's hash (corpus row checkpoint_sha256)")
    q.add_argument("--action", choices=["created", "edited"], help="default: created with --arch, else edited")
    q.add_argument("--no-watermark", action="store_true",
                   help="sign the bytes as they are: no watermark, so no soft binding")
    q = psub.add_parser("verify", parents=[common, keys_opt, trust_opt], help="validate a file's C2PA manifest")
    q.add_argument("input", metavar="IN")

    p = sub.add_parser("audit", parents=[common, keys_opt, trust_opt],
                       help="provenance + watermark + detectors, per file",
                       description="Audit files or folders: C2PA credentials (recovered through the watermark "
                                   "when stripped), watermarks and detectors, with one summary per file.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--report", metavar="DIR", help="write audit.html (a row per file) and audit.jsonl here")
    p.add_argument("--detectors", help="comma list (default: every installed detector)")
    p.add_argument("--max-frames", type=int, default=32, help="frames sampled per video (default 32)")
    return ap


def _version() -> str:
    from forensics import __version__

    return f"forensics {__version__}"


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=None if isinstance(obj, dict) and "path" in obj else 2))
    elif isinstance(obj, (dict, list)):
        print(json.dumps(obj, indent=2))
    else:
        print(obj)


# ---------------------------------------------------------------------------------------------


def cmd_detect(a) -> int:
    # Scoring parallelizes over patch chunks with its own threads; OpenBLAS's threads on top only
    # spin (on 2 cores they cost `detect clip.mp4` ~0.1 s and 0.3 s of CPU). This only works
    # before numpy is first imported (a fresh process), and a caller's own setting wins.
    if "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    from forensics import framepipe

    # One video: ffmpeg starts decoding its sampled frames now, on the other core, while numpy,
    # OpenCV and the detectors load (standard library only until here); `run` may have started
    # it already, before building the parser. A pipe for another request is closed unused.
    global _EARLY_PIPE
    pipe, _EARLY_PIPE = _EARLY_PIPE, None
    if pipe is not None and not pipe.serves(a.paths, a.max_frames, a.stride):
        pipe.close()
        pipe = None
    if pipe is None:
        pipe = framepipe.start_for(a.paths, a.max_frames, a.stride)
    try:
        return _detect(a, pipe)
    finally:
        if pipe is not None:
            pipe.close()


def _detect(a, pipe) -> int:
    from forensics import detect, framepipe, media
    from forensics.errors import ForensicsError, UsageError

    if a.max_frames < 1:
        raise UsageError(f"--max-frames must be ≥ 1; got {a.max_frames}")
    if a.stride is not None and a.stride < 1:
        raise UsageError(f"--stride must be ≥ 1; got {a.stride}")
    dets = detect.load_detectors(a.detectors)
    single = len(a.paths) == 1 and not Path(a.paths[0]).is_dir()
    scored = failed = 0
    files = media.expand_paths(a.paths)  # streamed: one line per file as it is scored
    f = next(files, None)
    try:
        while f is not None:
            nxt = next(files, None)
            # Several files: the next video decodes (ffmpeg, on the other core) while this file is
            # scored, so a folder of clips costs about the larger of decoding and scoring per clip.
            ahead = (framepipe.start_for([str(nxt)], a.max_frames, a.stride)
                     if nxt is not None and nxt.suffix.lower() in media.VIDEO_EXTS else None)
            try:
                r = detect.detect_file(f, dets, max_frames=a.max_frames, report_dir=a.report, prefetched=pipe,
                                       stride=a.stride)
            except ForensicsError as exc:
                if single:
                    raise
                failed += 1
                sys.stderr.write(f"forensics: {exc.one_line()}\n")
                if a.json:
                    print(json.dumps({"path": str(f), "error": exc.one_line()}), flush=True)
                continue
            finally:
                if pipe is not None:
                    pipe.close()
                pipe, f = ahead, nxt
            scored += 1
            if a.json:
                print(json.dumps(r), flush=True)
            else:
                p_txt = "n/a" if r["p_synthetic"] is None else f"{r['p_synthetic']:.3f}"
                t_txt = "n/a" if r["threshold"] is None else f"{r['threshold']:.3f}"
                print(f"{r['verdict']:>9}  p_synthetic={p_txt}  (threshold {t_txt})  {r['modality']}  {r['path']}",
                      flush=True)
                if (r.get("metadata") or {}).get("decisive"):
                    print(f"           {r['reason']}")
    finally:
        if pipe is not None:
            pipe.close()
    if single:
        return 0
    if scored + failed == 0:
        raise UsageError(f"{', '.join(a.paths)}: no media files found")
    if a.json:
        print(json.dumps({"summary": {"files": scored + failed, "scored": scored, "failed": failed}}))
    else:
        print(f"{scored} scored, {failed} failed")
    return 2 if failed else 0


def cmd_generate(a) -> int:
    from forensics.generate import generate, parse_archs, parse_shard

    shard, torchrun = parse_shard(a.shard)

    r = generate(parse_archs(a.arch), a.n, a.out, seed=a.seed, sampler=a.sampler, steps=a.steps,
                 device=a.device, checkpoint=a.checkpoint, progress=not a.quiet,
                 sign=a.sign, keys_dir=a.keys, shard=shard, frames=a.frames,
                 watermark=a.watermark, watermark_key=a.watermark_key)
    if torchrun:
        import torch.distributed as dist

        dist.barrier()
        if shard[0] == 0:
            from forensics.corpus import merge_shards

            r.update(merge_shards(a.out))
    _print(r if a.json else f"wrote {r['made']} new items ({r['skipped_existing']} already there); "
           f"{r['total_rows']} rows in {r['out']}", a.json)
    return 0


def cmd_bank(a) -> int:
    from forensics import bank

    if a.bank_command == "list":
        rows = bank.bank_list()
        if a.json:
            _print(rows, True)
        else:
            for r in rows:
                ck = "trained" if r["checkpoint"] else "no checkpoint"
                if r.get("composes"):  # hybrid: built from other architectures' checkpoints
                    parts = [f"{p['model']}{'' if p['checkpoint'] else ' (missing)'}" for p in r["composes"].values()]
                    ck = "composes " + " + ".join(parts)
                print(f"{r['architecture']:<20} {r['family']:<16} {r['modality']:<6} {ck}")
    elif a.bank_command == "train":
        card = bank.train_architecture(a.arch, out=a.out, data=a.data, minutes=a.minutes, steps=a.steps,
                                       preset=a.preset, seed=a.seed, device=a.device,
                                       per_source=a.per_source, progress=not a.quiet, resume=not a.fresh,
                                       save_every=a.save_every, fid_n=a.fid_n, teacher_dir=a.teacher,
                                       pairs=a.pairs)
        _print(card if a.json else f"trained {card['architecture']}: {card['steps']} steps, "
               f"metrics {json.dumps(card['metrics'])}", a.json)
    elif a.bank_command == "grid":
        from generators import base

        model = base.load(a.checkpoint or a.arch, device=base.resolve_device(a.device))
        out = bank.save_grid(model, Path(a.out or f"{a.arch}_grid.png"), seed=a.seed)
        _print({"grid": str(out)} if a.json else f"wrote {out}", a.json)
    elif a.bank_command == "score":
        rows = bank.score_checkpoints(a.arch, checkpoint=a.checkpoint, n=a.n, seed=a.seed, device=a.device,
                                      batch=a.batch, inception_weights=a.inception_weights, progress=not a.quiet)
        for r in rows:  # --json: one object per line
            print(json.dumps(r) if a.json else f"{r['architecture']:<16} FD {r['fd']:.3f}  (floor {r['fd_floor']:.3f}, "
                   f"N={r['n']})  inception FID {r['inception_fid'] if r['inception_fid'] is not None else 'skipped'}"
                  f"  → {r['checkpoint']}/card.json")
    return 0


def cmd_corpus(a) -> int:
    from forensics import corpus, recipe

    if a.corpus_command == "build":
        r = recipe.build(a.recipe, a.out, device=a.device, progress=not a.quiet)
        _print(r if a.json else f"corpus {r['out']}: {json.dumps(r['counts'])}", a.json)
        return 0
    if a.corpus_command == "merge":
        _print(corpus.merge_shards(a.dir), True)
        return 0
    if a.corpus_command == "info":
        c = corpus.Corpus(a.dir)
        info = {**c.card, "counts": corpus.counts(c.rows)}
        _print(info, True)
        return 0
    r = corpus.verify(a.dir)
    if a.json:
        _print(r, True)
    else:
        print(f"{r['path']}: {r['rows']} rows, {'OK' if r['ok'] else 'PROBLEMS'}")
        for line in r["problems"][:50]:
            print("  " + line)
        if r["orphans"]:
            print(f"  {len(r['orphans'])} files not listed in metadata.jsonl")
    return 0 if r["ok"] else 2


def cmd_train(a) -> int:
    from forensics.fit import train_detector

    opts = {k: v for k, v in (("steps", a.steps), ("minutes", a.minutes)) if v is not None}
    card = train_detector(a.detector, a.corpus, a.out, seed=a.seed, **opts)
    _print(card if a.json else f"trained {a.detector}: test metrics {json.dumps(card['metrics'])}", a.json)
    return 0


def cmd_evaluate(a) -> int:
    from forensics.evaluate import evaluate

    r = evaluate(a.corpus, a.out, detectors=a.detectors, attacks=a.attacks, leave_one_out=a.leave_one_out,
                 loo_detectors=a.loo_detectors, loo_opts={"artifact": {"steps": a.loo_steps, "minutes": 3.0}},
                 split=a.split, max_per_arch=a.max_per_arch, seed=a.seed, progress=not a.quiet)
    if a.json:
        _print({"out": a.out, "goals": r["goals"], "files": r["files"]}, True)
    else:
        for n, m in r["metrics"].items():
            per = ", ".join(f"{k} {v['auc']:.3f}" for k, v in m["by_architecture"].items() if v["auc"] is not None)
            print(f"{n:<10} AUC {m['overall']['auc']:.3f}  FPR@thr {m['overall']['fpr_at_threshold']:.3f}  "
                  f"TPR@thr {m['overall']['tpr_at_threshold']:.3f}  [{per}]")
        print(f"report: {r['files']['html']}")
    return 0


def cmd_provenance(a) -> int:
    from forensics.provenance import keys

    if a.provenance_command == "init":
        r = keys.init_keys(a.dir, force=a.force, common_name=a.name, signer_days=a.days)
        _print(r if a.json else f"{'created' if r['created'] else 'kept existing'} keys in {r['dir']} "
               f"(signer {r['signer']!r}, valid to {r['not_after']}; trust anchor {r['ca']})", a.json)
        return 0
    if a.provenance_command == "sign":
        from forensics.provenance.sign import sign_file

        r = sign_file(a.input, a.output, keys_dir=a.keys, action=a.action, architecture=a.arch,
                      checkpoint_sha256=a.checkpoint_sha256, watermark=not a.no_watermark)
        sb = r["soft_binding"]
        _print(r if a.json else f"signed {r['path']} ({r['action']}, {r['manifest_id']}, signer {r['signer']!r}"
               f"{', soft binding ' + sb['alg'] + ' id ' + sb['binding_id'] if sb else ', no soft binding'}"
               f"{' (the existing watermark, not marked again)' if sb and sb.get('mode') == 'reused' else ''})"
               f"{'' if not sb or sb.get('readable') else '; WARNING: the watermark does not read back from this file, so the soft binding will not recover it'}",
               a.json)
        return 0
    from forensics.provenance.verify import verify_file

    r = verify_file(a.input, anchors=a.trust_anchors, keys_dir=a.keys, soft_binding=not a.no_soft_binding)
    if a.json:
        _print(r, True)
        return 0
    print(f"{r['state']}: {r['summary']}")
    for label, m in (("file", r), ("recovered", r.get("recovered"))):
        if not m or not m.get("manifest_id"):
            continue
        print(f"  [{label}] manifest {m['manifest_id']}  signer {(m.get('signer') or {}).get('common_name')}"
              f"  claim generator {m.get('claim_generator')}")
        for act in m.get("actions") or []:
            print(f"    action {act['action']}" + (f"  {act['digitalSourceType']}" if act.get("digitalSourceType") else ""))
        for ing in m.get("ingredients") or []:
            print(f"    ingredient {ing['title']} ({ing['relationship']}, manifest {ing['manifest_id']})")
        if m.get("soft_binding"):
            print(f"    soft binding {m['soft_binding']['alg']} id {m['soft_binding']['binding_id']}")
        for s in m.get("status") or []:
            print(f"    {s['kind']:<13} {s['code']}: {s['meaning']}")
        if m.get("note"):
            print(f"    note: {m['note']}")
    return 0


def cmd_audit(a) -> int:
    from forensics.audit import Auditor, expand, write_report
    from forensics.errors import ForensicsError, UsageError

    auditor = Auditor(detectors=a.detectors, anchors=a.trust_anchors, keys_dir=a.keys,
                      max_frames=a.max_frames, soft_binding=not a.no_soft_binding)
    if auditor.detector_note:
        sys.stderr.write(f"forensics: {auditor.detector_note}\n")
    single = len(a.paths) == 1 and not Path(a.paths[0]).is_dir()
    # Rows are kept only for --report: a folder of 100,000 files must stream in flat memory.
    rows, audited, failed = [], 0, 0
    for f in expand(a.paths):
        try:
            r = auditor.audit(f)
        except ForensicsError as exc:
            failed += 1
            sys.stderr.write(f"forensics: {exc.one_line()}\n")
            r = {"path": str(f), "error": exc.one_line()}
            print(json.dumps(r) if a.json else f"{'error':>9}  {f}", flush=True)
        else:
            audited += 1
            if a.json:
                print(json.dumps(r), flush=True)
            else:
                s = r["summary"]
                print(f"{s['verdict']:>9}  {r['path']}\n           {'; '.join(s['reasons'])}", flush=True)
        if a.report:
            rows.append(r)
    if audited + failed == 0:
        raise UsageError("no media files found in " + ", ".join(a.paths))
    if a.report:
        rep = write_report(a.report, rows)
        if not a.json:
            print(f"report: {rep['html']}")
    if a.json:
        if not single:
            print(json.dumps({"summary": {"files": audited + failed, "audited": audited, "failed": failed}}))
    else:
        print(f"{audited} audited, {failed} failed")
    return 2 if failed else 0


def cmd_watermark(a) -> int:
    from forensics import media
    from forensics.errors import ForensicsError, UsageError
    from forensics.watermark import posthoc

    if a.watermark_command == "embed":
        payload = posthoc.parse_payload(a.payload) if a.payload is not None else None
        media.sniff(a.input)  # a bad input fails before a key is made
        key = posthoc.load_key(a.key, create=True)
        r = posthoc.embed_file(a.input, a.output, key, payload, strength=a.strength)
        _print(r if a.json else f"wrote {r['path']}: payload {r['payload']}, PSNR {r['psnr_db']} dB, "
               f"key {r['key_fingerprint']}", a.json)
        return 0
    key = posthoc.load_key(a.key)
    if a.method == "treering":
        from forensics.watermark import treering

        def detect_one(f):
            return treering.detect_file(f, a.arch, key, threshold=a.threshold, steps=a.inversion_steps,
                                        device=a.device)
    else:
        def detect_one(f):
            return posthoc.detect_file(f, key, threshold=a.threshold, max_frames=a.max_frames)
    single = len(a.paths) == 1 and not Path(a.paths[0]).is_dir()

    def files():  # streamed: a folder of 100,000 files is never listed up front
        for raw in a.paths:
            p = Path(raw)
            found = False
            for f in (media.iter_media_files(p) if p.is_dir() else [p]):
                found = True
                yield f
            if p.is_dir() and not found:
                raise UsageError(f"{p}: directory contains no media files")

    tested = marked = failed = 0
    for f in files():
        try:
            r = detect_one(f)
        except ForensicsError as exc:
            failed += 1
            if single:
                raise
            sys.stderr.write(f"forensics: {exc.one_line()}\n")
            print(json.dumps({"path": str(f), "method": a.method, "error": exc.one_line()}) if a.json
                  else f"{'error':>8}  {f}", flush=True)
            continue
        tested += 1
        marked += bool(r["detected"])
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            if a.method == "treering":
                what = f"treering {r['arch']}" if r["detected"] else "not detected"
            else:
                what = f"payload={r['payload'] or 'unreadable'}" if r["detected"] else "not detected"
            print(f"{'marked' if r['detected'] else 'unmarked':>8}  {what}  p={r['p_value']:.3g}  {r['path']}",
                  flush=True)
    if not single:
        summary = {"files": tested + failed, "tested": tested, "marked": marked, "failed": failed}
        print(json.dumps({"summary": summary}) if a.json else f"{tested} tested, {marked} marked, {failed} failed")
    return 2 if failed else 0


COMMANDS = {"detect": cmd_detect, "generate": cmd_generate, "bank": cmd_bank, "corpus": cmd_corpus,
            "train": cmd_train, "evaluate": cmd_evaluate, "provenance": cmd_provenance, "audit": cmd_audit,
            "watermark": cmd_watermark}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from forensics.errors import ForensicsError

    try:
        return COMMANDS[args.command](args)
    except ForensicsError as exc:
        sys.stderr.write(f"forensics: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("forensics: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line; the traceback only on request
        if type(exc).__name__ == "GeneratorError":  # generators' own typed error (imported lazily: torch)
            sys.stderr.write(f"forensics: {' '.join(str(exc).split())}\n")
            return 2
        if os.environ.get("FORENSICS_DEBUG"):
            raise
        sys.stderr.write(f"forensics: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
                         "(set FORENSICS_DEBUG=1 for a traceback)\n")
        return 1


_EARLY_PIPE = None


def _start_pipe_early(argv: list[str]) -> None:
    """`forensics detect clip.mp4 ...`: start decoding before argparse builds the parser (~20 ms of
    every subcommand's options). A rough reading of the arguments, only for the pipe; anything
    it does not recognize starts nothing, and cmd_detect checks the pipe against the real parse."""
    global _EARLY_PIPE
    if not argv or argv[0] != "detect":
        return
    paths, max_frames, stride, rest = [], "32", None, iter(argv[1:])   # 32: --max-frames' default below
    for arg in rest:
        if arg in ("--json", "--quiet"):
            continue
        if arg in ("--device", "--detectors", "--report", "--max-frames", "--stride"):
            val = next(rest, None)
            if val is None:
                return
            if arg == "--max-frames":
                max_frames = val
            elif arg == "--stride":
                stride = val
        elif arg.startswith("--max-frames="):
            max_frames = arg.split("=", 1)[1]
        elif arg.startswith("--stride="):
            stride = arg.split("=", 1)[1]
        elif arg.startswith(("--device=", "--detectors=", "--report=")):
            continue
        elif arg.startswith("-"):
            return                                         # help, a typo, or `--`: leave it to argparse
        else:
            paths.append(arg)
    if not max_frames.isdigit() or (stride is not None and not stride.isdigit()):
        return
    from forensics import framepipe

    _EARLY_PIPE = framepipe.start_for(paths, int(max_frames), None if stride is None else int(stride))


def run() -> None:
    """The console script. `detect` is often run once per file by other tools: once its output is
    flushed it skips the interpreter's teardown of numpy and OpenCV (~50 ms, a quarter of the
    time ffmpeg takes to decode a 10 s clip); every file it wrote was closed by then."""
    _start_pipe_early(sys.argv[1:])
    try:
        rc = main()
    finally:
        if _EARLY_PIPE is not None:       # not taken by cmd_detect (a usage error, --help)
            _EARLY_PIPE.close()
    if len(sys.argv) > 1 and sys.argv[1] == "detect":
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run()
