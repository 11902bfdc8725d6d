"""Labeled synthetic media from the bank, written into a corpus (resumable).

Item i of architecture A has seed `seed + i` and file `images/A/<seed>.png` (or `clips/…mp4`);
it is sampled with its own torch.Generator, so an item is reproducible on its own and a rerun
after a kill regenerates exactly the missing items. Synthetic items are split by a hash of
(architecture, seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from generators import base, latent_walk

from . import realdata
from .corpus import CorpusWriter
from .errors import UsageError


def parse_archs(spec: str) -> list[str]:
    archs = [a.strip() for a in spec.split(",") if a.strip()]
    known = base.architectures()
    bad = [a for a in archs if a not in known]
    if not archs or bad:
        raise UsageError(f"unknown architecture {', '.join(bad) or spec!r}; choose from {', '.join(known)}")
    return archs


def parse_shard(spec: str | None) -> tuple[tuple[int, int], bool]:
    """`I/N`, or torchrun's RANK/WORLD_SIZE when launched by it: ((i, n), launched_by_torchrun)."""
    import os

    if spec:
        try:
            i, n = (int(x) for x in spec.split("/"))
        except ValueError:
            raise UsageError(f"--shard must look like I/N (e.g. 0/4); got {spec!r}") from None
        if not 0 <= i < n:
            raise UsageError(f"--shard must be I/N with 0 ≤ I < N; got {spec}")
        return (i, n), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return (int(os.environ.get("RANK", "0")), world), True
    return (0, 1), False


def generate(archs: list[str], n: int, out: str | Path, *, seed: int = 0, sampler: str | None = None,
             steps: int | None = None, device: str = "auto", checkpoint: str | None = None,
             progress: bool = True, writer: CorpusWriter | None = None,
             shard: tuple[int, int] = (0, 1), sign: bool = False, keys_dir: str | None = None,
             frames: int | None = None, watermark: str | None = None,
             watermark_key: str | None = None) -> dict:
    """Write n items per architecture into the corpus at `out`; return counts of this run.

    sign: every output is C2PA-signed (provenance.sign.sign_pixels) before its row is written,
    so the row's sha256 is the signed file's and its `c2pa` field names the manifest.
    watermark: "treering" samples ddim / rectified_flow from noise carrying the key
    (forensics.watermark.treering); "posthoc" marks every output with the post-hoc watermark,
    payload = the first 32 bits of SHA-256("<arch>:<seed>") (the row's id). The key is the
    watermark key file (`watermark_key`, default the config folder's; made on first use).
    Each row's `watermark` field records it (null when none).
    """
    if n < 0:
        raise UsageError(f"--n must be ≥ 0; got {n}")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be ≥ 1; got {steps}")
    if frames is not None and frames < 1:
        raise UsageError(f"--frames must be ≥ 1; got {frames}")
    if not (0 <= shard[0] < shard[1]):
        raise UsageError(f"--shard must be i/n with 0 ≤ i < n; got {shard[0]}/{shard[1]}")
    dev = base.resolve_device(device)
    wm_key = _watermark_setup(watermark, archs, sampler, sign, watermark_key)
    if sampler:
        for arch in archs:
            model_name = base.ARCHITECTURES[arch][0]
            # The architecture label names the sampler where one model has several (ddpm / ddim,
            # video_diffusion / video_diffusion_tsr): a row must not say ddim for an ancestral sample.
            other = [a for a, (m, smp) in base.ARCHITECTURES.items() if a != arch and (m, smp) == (model_name, sampler)]
            if other:
                raise UsageError(f"--arch {arch} --sampler {sampler}: that is architecture {other[0]}; "
                                 f"use --arch {other[0]}")
    signing_keys = None
    if sign:
        from .provenance.keys import load_keys

        signing_keys = load_keys(keys_dir)  # fail before sampling when there are no keys
    own = writer is None
    w = writer or CorpusWriter(out, shard=shard)
    made = skipped = 0
    try:
        for arch in archs:
            model_name, arch_sampler = base.ARCHITECTURES[arch]
            ckpt_dir = Path(checkpoint) if checkpoint else base.CHECKPOINT_ROOT / model_name
            model = base.load(ckpt_dir if checkpoint else arch, device=dev)
            model = latent_walk.wrap(arch, model)  # `<base>_interp`: a walk through an image model's latents
            # --frames: clip length for video models (video_diffusion extends autoregressively)
            sample_kw = {"frames": frames} if frames is not None and model.modality == "video" else {}
            composite = bool(getattr(model, "parents", None))  # hybrid: hashes come from its parents
            ckpt_sha = model.checkpoint_sha256() if composite else base.checkpoint_sha256(ckpt_dir)
            use_sampler = sampler or arch_sampler or model.default_sampler
            if watermark == "treering":
                from .watermark import treering

                if model.name != treering.CARRIERS[arch][0]:
                    raise UsageError(f"--watermark treering: {ckpt_dir} holds a {model.name} model, "
                                     f"not {treering.CARRIERS[arch][0]}")
            todo = [seed + i for i in range(n) if (seed + i) % shard[1] == shard[0]]
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), desc=f"generate {arch}", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
            for s in todo:
                ext, sub = ("mp4", "clips") if model.modality == "video" else ("png", "images")
                fn = f"{sub}/{arch}/{s:08d}.{ext}"
                if w.has(fn):
                    skipped += 1
                else:
                    g = torch.Generator().manual_seed(s)
                    mark = None
                    if watermark == "treering":
                        x = treering.sample(model, arch, 1, wm_key, generator=g, steps=steps, sampler=use_sampler)[0]
                        mark = treering.row_field(wm_key)
                    else:
                        x = model.sample(1, generator=g, steps=steps, sampler=use_sampler, **sample_kw)[0]
                    row = dict(label="synthetic", family=model.family, architecture=arch,
                               sampler=use_sampler, steps=steps or _default_steps(model, use_sampler),
                               seed=s, checkpoint_sha256=ckpt_sha, source=f"bank:{model_name}",
                               split=realdata.split_of(f"{arch}:{s}"), watermark=mark)
                    if composite:
                        row.update(model.corpus_fields(use_sampler, row["steps"]))
                    pixels = base.to_uint8(x)
                    if watermark == "posthoc":
                        pixels, row["watermark"] = _posthoc_mark(pixels, wm_key, arch, s)
                    if signing_keys is not None:
                        fps = _fps(model, use_sampler) if model.modality == "video" else None
                        _add_signed(w, fn, pixels, row, signing_keys, fps)
                    elif model.modality == "video":
                        w.add_clip(fn, pixels, fps=_fps(model, use_sampler), **row)
                    else:
                        w.add_image(fn, pixels, **row)
                    made += 1
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
    finally:
        if own:
            w.close()
    return {"out": str(out), "made": made, "skipped_existing": skipped, "total_rows": len(w.rows)}


WATERMARKS = ("none", "treering", "posthoc")


def _watermark_setup(watermark: str | None, archs: list[str], sampler: str | None, sign: bool,
                     key_path: str | None):
    """Check --watermark against the architectures before anything is sampled; the key (made on
    first use) or None."""
    if watermark in (None, "none"):
        return None
    if watermark not in WATERMARKS:
        raise UsageError(f"--watermark must be one of {', '.join(WATERMARKS)}; got {watermark!r}")
    from .watermark import posthoc

    if watermark == "treering":
        from .watermark import treering

        for arch in archs:
            treering.check_carrier(arch, sampler or base.ARCHITECTURES[arch][1])
    elif sign:
        raise UsageError("--sign already embeds the post-hoc watermark (its payload is the soft-binding id); "
                         "drop --watermark posthoc")
    return posthoc.load_key(key_path, create=True)


def _posthoc_mark(pixels, key, arch: str, seed: int):
    """The post-hoc mark on one image (H, W, 3) or clip (T, H, W, 3); payload = the row's id."""
    import hashlib

    from .watermark import posthoc

    payload = hashlib.sha256(f"{arch}:{seed}".encode()).digest()[:4]
    marked = posthoc.embed_frames(pixels, key, payload) if pixels.ndim == 4 else posthoc.embed(pixels, key, payload)
    return marked, {"method": "posthoc", "algorithm": posthoc.ALGORITHM, "key_fingerprint": key.fingerprint,
                    "payload": payload.hex()}


def _fps(model, sampler: str | None) -> float:
    """Frame rate of a video model's clips (a temporal upsampling sampler raises it)."""
    if hasattr(model, "fps_for"):
        return float(model.fps_for(sampler))
    return float(getattr(model.config, "fps", 8))


def _default_steps(model, sampler: str | None) -> int | None:
    """The steps a model samples with when --steps is not given (per sampler where it has several)."""
    if hasattr(model, "steps_for"):
        return model.steps_for(sampler)
    return getattr(model, "default_steps", None)


def _add_signed(w: CorpusWriter, fn: str, pixels, row: dict, keys, fps: float | None) -> dict:
    """Sign one generated item into a hidden temp folder, then rename it into the corpus with its row."""
    import shutil
    import tempfile

    from .corpus import safe_path
    from .provenance.sign import sign_pixels

    final = safe_path(w.root, fn)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".tmp-sign-", dir=w.root))
    try:
        info = sign_pixels(pixels, tmp_dir / final.name, keys=keys, architecture=row["architecture"],
                           checkpoint_sha256=row["checkpoint_sha256"], fps=fps, title=final.name,
                           generator={k: row[k] for k in ("family", "sampler", "steps", "seed")},
                           record_path=final)
        video = pixels.ndim == 4
        extra = {"c2pa": {"manifest_id": info["manifest_id"], "signer": info["signer"], "action": info["action"],
                          "soft_binding": info["soft_binding"]}}
        if info["soft_binding"] and not row.get("watermark"):
            extra["watermark"] = {"method": "posthoc", "payload": info["soft_binding"]["binding_id"],
                                  "purpose": "c2pa soft binding"}
        return w.add_file(fn, tmp_dir / final.name, modality="video" if video else "image",
                          width=int(pixels.shape[-2]), height=int(pixels.shape[-3]),
                          frames=int(pixels.shape[0]) if video else 1, fps=fps, **{**row, **extra})
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
