"""Training, cards and sample grids for the generator bank, on real data.

`train_architecture` is what `forensics bank train ARCH` runs: real crops (bundled photos split by
source, or a user folder) → the shared training loop (resumable) → the EMA model saved as
safetensors + config.json, with a card (config, data, steps, seed, metrics on the real *test*
split, the exact command) and a sample grid.

Card metrics include `fidelity`: per architecture, the Fréchet distance of N samples to N real
test images in forensics/fidelity.py's fixed feature space, with the real-vs-real floor at that N.
`score_checkpoints` (`forensics bank score ARCH|all`) recomputes it for existing checkpoints.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from generators import base, latent_walk
from generators.train import TrainConfig, train

from . import fidelity, media, realdata
from .errors import UsageError

# Per-model training defaults sized for 2 CPU cores (≤ 30 min). GPU runs may raise them.
TRAIN_DEFAULTS: dict[str, dict] = {
    "vae": {"steps": 2500, "batch_size": 64, "lr": 1e-3, "ema_decay": 0.995},
    # diffusion / flow models (issue 4): step counts above what fits; `--minutes` ends the run
    "ddpm": {"steps": 6000, "batch_size": 32, "lr": 6e-4, "ema_decay": 0.999},
    # ldm: the first `ae_steps` (config) train the autoencoder, the rest the latent denoiser;
    # a short EMA so the saved (EMA) autoencoder catches up with the frozen one in phase 2
    "ldm": {"steps": 4000, "batch_size": 32, "lr": 6e-4, "ema_decay": 0.995},
    "rectified_flow": {"steps": 8000, "batch_size": 32, "lr": 6e-4, "ema_decay": 0.999},
    "reflow": {"steps": 8000, "batch_size": 32, "lr": 2e-4, "ema_decay": 0.999, "warmup": 0},
    # issue 3 (GAN, flows, autoregressive): step counts above what fits; `--minutes` ends the run.
    # gan: no global gradient clipping (it would couple G and D, see generators/gan.py), Adam
    # beta1 = 0 as usual for GANs; short EMAs because the shipped runs are short.
    "gan": {"steps": 5000, "batch_size": 32, "lr": 2e-4, "betas": (0.0, 0.99), "grad_clip": 0.0,
            "ema_decay": 0.995, "warmup": 0},
    "glow": {"steps": 5000, "batch_size": 32, "lr": 1e-3, "ema_decay": 0.99},
    "tarflow": {"steps": 5000, "batch_size": 32, "lr": 5e-4, "ema_decay": 0.99},
    "pixelcnn": {"steps": 5000, "batch_size": 16, "lr": 1e-3, "ema_decay": 0.99},
    # vq_transformer: the first `vq_steps` (config) train the VQ-VAE and the prior, the rest the
    # prior alone; ema 0.99 so the saved VQ-VAE catches up with the frozen one in phase 2
    "vq_transformer": {"steps": 5000, "batch_size": 32, "lr": 1e-3, "ema_decay": 0.99},
    # issue 5: clips of 8 frames; a batch of 4 clips is 32 frames; `--minutes` ends the run
    "video_diffusion": {"steps": 20000, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.995, "warmup": 20},
}
DATA_PER_SOURCE = 400


def real_training_data(data_dir: str | None = None, size: int = 32, seed: int = 0,
                       per_source: int = DATA_PER_SOURCE) -> tuple[realdata.RealSet, dict]:
    """Real crops (all splits, labeled) and a description of them for the card."""
    if data_dir:
        sources = realdata.folder_sources(data_dir)
        if not sources:
            raise UsageError(f"--data {data_dir}: no readable images found")
        desc = {"kind": "folder", "path": str(data_dir)}
    else:
        sources = realdata.bundled_sources()
        desc = {"kind": "bundled photos (scikit-image, scikit-learn)"}
    rs = realdata.default_crops(per_source=per_source, size=size, seed=seed, sources=sources)
    desc.update({
        "crops_per_source": per_source, "size": size, "seed": seed,
        "sources_by_split": {sp: sorted({s.name for s in sources if s.split == sp}) for sp in realdata.SPLITS},
        "items_by_split": {sp: int(sum(1 for x in rs.splits if x == sp)) for sp in realdata.SPLITS},
    })
    return rs, desc


# Video models: clips per source = per_source // this (400 crops → 100 clips of T frames each).
VIDEO_CLIPS_DIVISOR = 4


def real_training_clips(data_dir: str | None = None, size: int = 32, frames: int = 8, seed: int = 0,
                        per_source: int = 100) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Real clips (train, test) as (N, T, 3, size, size) in [-1, 1] and their description.

    Default: virtual-camera clips over the bundled photos, split by source photo; with a folder:
    its videos cut into clips (center square, resized), split by a hash of their path."""
    clips: dict[str, list[np.ndarray]] = {sp: [] for sp in realdata.SPLITS}
    if data_dir:
        for clip, _fps, _src, split in realdata.folder_clips(data_dir, frames, size, max_clips_per_video=per_source):
            clips[split].append(clip)
        if not any(clips.values()):
            raise UsageError(f"--data {data_dir}: no readable videos with {frames} frames found")
        desc = {"kind": "video folder", "path": str(data_dir), "max_clips_per_video": per_source}
    else:
        for clip, _src, split in realdata.default_clips(per_source, frames, size, seed):
            clips[split].append(clip)
        desc = {"kind": "virtual-camera clips over the bundled photos (scikit-image, scikit-learn)",
                "clips_per_source": per_source,
                "sources_by_split": {sp: sorted({s.name for s in realdata.bundled_sources() if s.split == sp})
                                     for sp in realdata.SPLITS}}
    desc.update({"frames": frames, "size": size, "seed": seed, "fps": 8.0,
                 "items_by_split": {sp: len(v) for sp, v in clips.items()}})
    empty = np.zeros((0, frames, size, size, 3), np.uint8)
    return (to_tensor(np.stack(clips["train"]) if clips["train"] else empty),
            to_tensor(np.stack(clips["test"]) if clips["test"] else empty), desc)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return base.from_uint8(images).contiguous()


def grid(images: np.ndarray, cols: int = 8, pad: int = 2, zoom: int = 2) -> np.ndarray:
    """Tile uint8 (N, H, W, 3) into one picture, each tile enlarged `zoom`x (nearest)."""
    n, h, w, _ = images.shape
    if zoom > 1:
        images = images.repeat(zoom, 1).repeat(zoom, 2)
        h, w = h * zoom, w * zoom
    rows = (n + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im
    return out


def save_grid(model: base.Generator, path: Path, n: int = 64, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    if model.modality == "video":  # a strip per clip: a few clips, extended to twice their length
        frames = 2 * int(getattr(model.config, "frames", 8))
        x = model.sample(min(n, 6), generator=g, frames=frames)                 # (n, T, 3, H, W)
        return media.write_png(path, grid(base.to_uint8(x).reshape(-1, *x.shape[-2:], 3), cols=x.shape[1]))
    x = model.sample(n, generator=g)
    imgs = base.to_uint8(x if x.dim() == 4 else x[:, 0])
    return media.write_png(path, grid(imgs))


def train_architecture(arch: str, *, out: str | Path | None = None, data: str | None = None,
                       minutes: float | None = None, steps: int | None = None, preset: str = "cpu",
                       seed: int = 0, device: str = "auto", per_source: int = DATA_PER_SOURCE,
                       progress: bool = True, resume: bool = True, save_every: int | None = None,
                       fid_n: int | None = None, teacher_dir: str | Path | None = None,
                       pairs: int | None = None) -> dict:
    """fid_n: samples (= real images) for the card's Fréchet distance (default fidelity.DEFAULT_N,
    capped at the real test split; 0 skips it). teacher_dir / pairs: for a model with a teacher
    (reflow), the teacher's checkpoint (default: the shipped one) and how many couplings to draw."""
    if arch not in base.architectures():
        raise UsageError(f"unknown architecture {arch!r}; choose from {', '.join(base.architectures())}")
    model_name = base.ARCHITECTURES[arch][0]
    parents = base.get_class(model_name).parents
    if parents:  # before loading any data: a composite has nothing to train
        raise UsageError(f"{arch} has no weights of its own: it composes the {' and '.join(parents.values())} "
                         f"checkpoints; train those instead")
    dev = base.resolve_device(device)
    out = Path(out) if out else base.CHECKPOINT_ROOT / model_name
    state_dir = out / "train_state"
    torch.manual_seed(seed)  # the initial weights are part of what --seed reproduces
    model = base.create(model_name, preset)
    if model.modality == "video":  # real clips (virtual camera over the photos, or a video folder)
        train_x, test_x, desc = real_training_clips(data, model.config.image_size, model.config.frames,
                                                    seed, max(1, per_source // VIDEO_CLIPS_DIVISOR))
    else:
        rs, desc = real_training_data(data, model.config.image_size, seed, per_source)
        train_x = to_tensor(rs.split("train").images)
        test_x = to_tensor(rs.split("test").images)
    if not resume and state_dir.exists():  # before reflow's setup: its couplings live there too
        for f in state_dir.iterdir():
            f.unlink()
    if getattr(model, "teacher", None):  # reflow: the teacher's couplings replace independent noise
        model, desc["reflow"] = _reflow_setup(model, teacher_dir, state_dir, pairs, seed, dev, progress)
    tdefaults = dict(TRAIN_DEFAULTS.get(model_name, {}))
    if steps is not None:
        tdefaults["steps"] = steps
    if save_every:
        tdefaults["save_every"] = save_every
    tcfg = TrainConfig(seed=seed, minutes=minutes, **tdefaults)
    t0 = time.time()
    ema, result = train(model, train_x, tcfg, device=dev, state_dir=state_dir, progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes the checkpoint
        return {"architecture": arch, "rank": int(os.environ["RANK"]), "steps": result.steps}
    ema.to(dev)
    metrics = ema.evaluate(test_x.to(dev)) if len(test_x) else {}
    metrics = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()}
    ema.save(out)
    save_grid(ema, out / "grid.png", seed=seed)
    if fid_n != 0 and len(test_x) > 1:
        try:
            ref = fidelity.Reference(test_x, train_x, n=fid_n or fidelity.DEFAULT_N, seed=seed)
            metrics["fidelity"] = {arch: _fidelity_entry(ema, arch, ref, out, seed)}
        except Exception as exc:  # noqa: BLE001 — the weights are saved; a metric failure must not lose the card
            metrics["fidelity"] = {arch: {"error": f"{type(exc).__name__}: {exc}"}}
    card = {
        "architecture": arch,
        "model": model_name,
        "family": ema.family,
        "modality": ema.modality,
        "parameters": ema.num_parameters(),
        "config": ema.config.to_dict(),
        "train_config": tcfg.to_dict(),
        "data": desc,
        "steps": result.steps,
        "seed": seed,
        "final_loss": round(result.final_loss, 5),
        "seconds": round(time.time() - t0, 1),
        "resumed_from_step": result.resumed_from,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "metrics_on": "real test split (sources never seen in training)",
        "metrics": metrics,
        "sha256": base.checkpoint_sha256(out),
        "command": "forensics " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("forensics") else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if card["command"] is None:
        card["command"] = f"forensics bank train {arch} --seed {seed}" + (f" --steps {steps}" if steps else "") + (
            f" --minutes {minutes}" if minutes else "") + (f" --data {data}" if data else "")
    # A resumed run keeps the earlier runs' commands, so the card says how the weights were made.
    old = out / "card.json"
    history = []
    if result.resumed_from and old.is_file():
        prev = json.loads(old.read_text())
        history = prev.get("history") or [{"command": prev.get("command"), "steps": prev.get("steps"),
                                           "seconds": prev.get("seconds")}]
    card["history"] = history + [{"command": card["command"], "steps": card["steps"], "seconds": card["seconds"]}]
    old.write_text(json.dumps(card, indent=2) + "\n")
    return card


REFLOW_PAIRS = 2048


def _reflow_setup(model: base.Generator, teacher_dir, state_dir: Path, pairs: int | None, seed: int,
                  dev: torch.device, progress: bool) -> tuple[base.Generator, dict]:
    """Start a reflow run: the model takes the teacher's config and (unless resuming) weights, and
    trains on (ε, teacher ODE(ε)) couplings, drawn once and kept with the training state so a
    resumed run trains on the same pairs."""
    from safetensors.torch import load_file, save_file

    tdir = Path(teacher_dir) if teacher_dir else base.CHECKPOINT_ROOT / model.teacher
    if not (tdir / "config.json").is_file():
        raise UsageError(f"{model.name} straightens a {model.teacher} checkpoint; none at {tdir}: "
                         f"train one with `forensics bank train {model.teacher}`")
    teacher = base.load(tdir, device=dev)
    if teacher.name != model.teacher:
        raise UsageError(f"{tdir} holds a {teacher.name} model; {model.name} needs a {model.teacher} teacher")
    student = type(model)(type(model).Config(**teacher.config.to_dict()))
    student.load_state_dict(teacher.state_dict())        # resumed runs load their own state over this
    n = int(pairs or REFLOW_PAIRS)
    cache = state_dir / "pairs.safetensors"
    if cache.is_file():
        t = load_file(str(cache))
        eps, x0 = t["eps"], t["x0"]
    else:
        if progress:
            print(f"reflow: drawing {n} couplings from {tdir} (Heun, {teacher.config.euler_steps} evaluations)",
                  file=sys.stderr, flush=True)
        eps, x0 = teacher.reflow_pairs(n, generator=torch.Generator().manual_seed(seed),
                                       steps=teacher.config.euler_steps, batch=128)
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / ".pairs.safetensors.tmp"
        save_file({"eps": eps.contiguous(), "x0": x0.contiguous()}, str(tmp))
        os.replace(tmp, cache)
    student.set_reflow_pairs((eps, x0))
    shipped = tdir.resolve() == (base.CHECKPOINT_ROOT / model.teacher).resolve()
    return student, {"teacher": f"shipped {model.teacher}" if shipped else str(tdir),
                     "teacher_sha256": base.checkpoint_sha256(tdir), "pairs": len(eps),
                     "pair_sampler": f"heun, {teacher.config.euler_steps} evaluations", "pair_seed": seed}


def _fidelity_entry(model: base.Generator, arch: str, ref: fidelity.Reference, ckpt: Path, seed: int,
                    batch: int = 64, inception_weights: str | None = None) -> dict:
    r = fidelity.score_model(model, ref, seed=seed, batch=batch, sampler=base.ARCHITECTURES[arch][1],
                             inception_weights=inception_weights)
    r["checkpoint_sha256"] = base.checkpoint_sha256(ckpt)  # a later retrain makes a stale score visible
    return r


def _reference_for(card: dict, modality: str, n: int, seed: int) -> fidelity.Reference:
    """The real test / train images a card's model was trained and measured on, at N."""
    d = card.get("data") or {}
    folder = d.get("path") if d.get("kind") in ("folder", "video folder") else None
    size, data_seed = int(d.get("size", 32)), int(d.get("seed", 0))
    if modality == "video":
        per = int(d.get("clips_per_source") or d.get("max_clips_per_video") or DATA_PER_SOURCE // VIDEO_CLIPS_DIVISOR)
        train_x, test_x, _ = real_training_clips(folder, size, int(d.get("frames", 8)), data_seed, per)
    else:
        rs, _ = real_training_data(folder, size, data_seed, int(d.get("crops_per_source", DATA_PER_SOURCE)))
        train_x, test_x = to_tensor(rs.split("train").images), to_tensor(rs.split("test").images)
    return fidelity.Reference(test_x, train_x, n=n, seed=seed)


def score_checkpoints(which: str, *, checkpoint: str | Path | None = None, n: int = fidelity.DEFAULT_N,
                      seed: int = 0, device: str = "auto", batch: int = 64,
                      inception_weights: str | None = None, progress: bool = True) -> list[dict]:
    """Fréchet distance of existing checkpoints, written into their card.json metrics.

    which: an architecture or `all` (every image/video architecture with a checkpoint; latent
    walks are skipped: their frames are the base model's samples). checkpoint: score that folder
    instead of the shipped one (then `all` means every architecture that uses its model).
    Only `metrics.fidelity.<arch>` of each card changes; every other field is kept."""
    archs = [a for a in base.architectures() if a not in latent_walk.WALKS]
    if which != "all" and which not in base.architectures():
        raise UsageError(f"unknown architecture {which!r}; choose from all, {', '.join(archs)}")
    if which in latent_walk.WALKS:
        raise UsageError(f"{which} is a latent walk of {latent_walk.WALKS[which][0]}; score that instead")
    if which != "all" and base.get_class(base.ARCHITECTURES[which][0]).parents:
        raise UsageError(f"{which} composes other checkpoints and has no card of its own to score into; "
                         f"score {', '.join(base.get_class(base.ARCHITECTURES[which][0]).parents.values())}")
    if checkpoint is not None:
        ck = Path(checkpoint)
        if not (ck / "config.json").is_file():
            raise UsageError(f"no checkpoint at {ck} (config.json missing)")
        model_name = json.loads((ck / "config.json").read_text()).get("name")
        chosen = [a for a in (archs if which == "all" else [which]) if base.ARCHITECTURES[a][0] == model_name]
        if not chosen:
            raise UsageError(f"{ck} holds a {model_name!r} model, not one that {which} uses")
        plan = [(a, ck) for a in chosen]
    else:
        plan = [(a, base.CHECKPOINT_ROOT / base.ARCHITECTURES[a][0]) for a in (archs if which == "all" else [which])]
        plan = [(a, d) for a, d in plan if (d / "model.safetensors").is_file() or which != "all"]
    dev = base.resolve_device(device)
    refs: dict[str, fidelity.Reference] = {}
    rows = []
    for arch, ck in plan:
        model = base.load(ck, device=dev)
        card_path = ck / "card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        key = json.dumps([card.get("data"), model.modality], sort_keys=True)
        if key not in refs:
            refs[key] = _reference_for(card, model.modality, n, seed)
        if progress:
            print(f"bank score {arch}: sampling {refs[key].n} from {ck}", file=sys.stderr, flush=True)
        r = _fidelity_entry(model, arch, refs[key], ck, seed, batch, inception_weights)
        # Re-read just before writing: another score of the same card (ddpm / ddim) may have landed.
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        card.setdefault("metrics", {})
        card["metrics"].setdefault("fidelity", {})[arch] = r
        tmp = card_path.with_name(".card.json.tmp")
        tmp.write_text(json.dumps(card, indent=2) + "\n")
        os.replace(tmp, card_path)
        rows.append({"architecture": arch, "checkpoint": str(ck), **r})
    return rows


def bank_list() -> list[dict]:
    """Every architecture with its model, sampler and whether a checkpoint ships."""
    rows = []
    for arch in base.architectures():
        model_name, sampler = base.ARCHITECTURES[arch]
        d = base.CHECKPOINT_ROOT / model_name
        card = {}
        if (d / "card.json").is_file():
            card = json.loads((d / "card.json").read_text())
        cls = base.get_class(model_name)
        walk = arch in latent_walk.WALKS  # a latent walk: clips from an image model's checkpoint
        row = {"architecture": arch, "model": model_name, "family": cls.family,
               "modality": "video" if walk else cls.modality, "sampler": sampler or cls.default_sampler,
               "checkpoint": str(d) if (d / "model.safetensors").is_file() else None,
               "steps": card.get("steps"), "metrics": card.get("metrics", {})}
        if cls.parents:  # a composite (hybrid): no checkpoint of its own, it needs its parents'
            row["composes"] = {role: {"model": m, "checkpoint": str(base.CHECKPOINT_ROOT / m)
                                      if (base.CHECKPOINT_ROOT / m / "model.safetensors").is_file() else None}
                               for role, m in cls.parents.items()}
        rows.append(row)
    return rows
