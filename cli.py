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
    p.add_argument("--report", metavar="DIR", help="write JSON and heatmap PNGs here")

    p = sub.add_parser("generate", parents=[common], help="write labeled synthetic media from the bank",
                       description="Sample bank generators into a labeled corpus folder (resumable).")
    p.add_argument("--arch", required=True, help="architecture(s), comma separated (see `bank list`)")
    p.add_argument("--n", type=int, required=True, help="items per architecture")
    p.add_argument("--out", required=True, help="corpus folder (created or resumed)")
    p.add_argument("--seed", type=int, default=0, help="first seed; item i uses seed+i")
    p.add_argument("--sampler", help="sampler name for families that have several")
    p.add_argument("--steps", type=int, help="sampling steps for iterative samplers")
    p.add_argument("--checkpoint", help="a checkpoint folder instead of the shipped default")

    p = sub.add_parser("bank", help="the generator bank: list, train, grid",
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
    b = bsub.add_parser("grid", parents=[common], help="write a sample grid PNG")
    b.add_argument("arch")
    b.add_argument("--out", help="PNG path (default: ARCH_grid.png)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--checkpoint", help="checkpoint folder")

    p = sub.add_parser("corpus", help="build, inspect and verify corpora",
                       description="Build a corpus from a recipe, show its card, verify its files.")
    csub = p.add_subparsers(dest="corpus_command", required=True, parser_class=_Parser)
    c = csub.add_parser("build", parents=[common], help="build (or resume) a corpus from a TOML recipe")
    c.add_argument("recipe")
    c.add_argument("--out", help="corpus folder (default: the recipe's)")
    c = csub.add_parser("info", parents=[common], help="the card and counts of a corpus")
    c.add_argument("dir")
    c = csub.add_parser("verify", parents=[common], help="check every file against its row")
    c.add_argument("dir")

    p = sub.add_parser("train", parents=[common], help="fit a detector on a corpus",
                       description="Fit a detector on a corpus and save it with a card.")
    p.add_argument("detector")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", help="checkpoint folder (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0)
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
    from forensics import detect, media
    from forensics.errors import ForensicsError, UsageError

    if a.max_frames < 1:
        raise UsageError(f"--max-frames must be ≥ 1; got {a.max_frames}")
    dets = detect.load_detectors(a.detectors)
    files: list[Path] = []
    for raw in a.paths:
        p = Path(raw)
        if p.is_dir():
            found = list(media.iter_media_files(p))
            if not found:
                raise UsageError(f"{p}: directory contains no media files")
            files += found
        else:
            files.append(p)
    failed = 0
    for f in files:
        try:
            r = detect.detect_file(f, dets, max_frames=a.max_frames, report_dir=a.report)
        except ForensicsError as exc:
            failed += 1
            if len(files) == 1:
                raise
            sys.stderr.write(f"forensics: {exc.one_line()}\n")
            if a.json:
                print(json.dumps({"path": str(f), "error": exc.one_line()}))
            continue
        if a.json:
            print(json.dumps(r))
        else:
            print(f"{r['verdict']:>9}  p_synthetic={r['p_synthetic']:.3f}  (threshold {r['threshold']:.3f})  "
                  f"{r['modality']}  {r['path']}")
    if len(files) > 1 and not a.json:
        print(f"{len(files) - failed} scored, {failed} failed")
    return 2 if failed else 0


def cmd_generate(a) -> int:
    from forensics.generate import generate, parse_archs

    r = generate(parse_archs(a.arch), a.n, a.out, seed=a.seed, sampler=a.sampler, steps=a.steps,
                 device=a.device, checkpoint=a.checkpoint, progress=not a.quiet)
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
                print(f"{r['architecture']:<16} {r['family']:<16} {r['modality']:<6} {ck}")
    elif a.bank_command == "train":
        card = bank.train_architecture(a.arch, out=a.out, data=a.data, minutes=a.minutes, steps=a.steps,
                                       preset=a.preset, seed=a.seed, device=a.device,
                                       per_source=a.per_source, progress=not a.quiet, resume=not a.fresh)
        _print(card if a.json else f"trained {card['architecture']}: {card['steps']} steps, "
               f"metrics {json.dumps(card['metrics'])}", a.json)
    elif a.bank_command == "grid":
        from generators import base

        model = base.load(a.checkpoint or a.arch, device=base.resolve_device(a.device))
        out = bank.save_grid(model, Path(a.out or f"{a.arch}_grid.png"), seed=a.seed)
        _print({"grid": str(out)} if a.json else f"wrote {out}", a.json)
    return 0


def cmd_corpus(a) -> int:
    from forensics import corpus, recipe

    if a.corpus_command == "build":
        r = recipe.build(a.recipe, a.out, device=a.device, progress=not a.quiet)
        _print(r if a.json else f"corpus {r['out']}: {json.dumps(r['counts'])}", a.json)
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

    card = train_detector(a.detector, a.corpus, a.out, seed=a.seed)
    _print(card if a.json else f"trained {a.detector}: test metrics {json.dumps(card['metrics'])}", a.json)
    return 0


COMMANDS = {"detect": cmd_detect, "generate": cmd_generate, "bank": cmd_bank, "corpus": cmd_corpus,
            "train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from forensics.errors import ForensicsError
    from generators.base import GeneratorError

    try:
        return COMMANDS[args.command](args)
    except ForensicsError as exc:
        sys.stderr.write(f"forensics: {exc.one_line()}\n")
        return exc.exit_code
    except GeneratorError as exc:
        sys.stderr.write(f"forensics: {' '.join(str(exc).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("forensics: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line; the traceback only on request
        if os.environ.get("FORENSICS_DEBUG"):
            raise
        sys.stderr.write(f"forensics: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
                         "(set FORENSICS_DEBUG=1 for a traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
