"""One training loop for every family of the bank.

- Device: CPU or CUDA (bf16 autocast on CUDA); `torchrun` DDP when WORLD_SIZE > 1 (gloo on CPU,
  NCCL on GPU), each rank drawing its own part of the global batch.
- EMA of the weights (the EMA model is the one saved and sampled).
- Progress bar on stderr; stop after a number of steps or a time budget, whichever comes first.
- Resume: the full state (model, EMA, optimizer, step, RNG) is saved as safetensors + JSON in
  `state_dir` every `save_every` steps and at the end; a rerun continues from it exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from .base import Generator


@dataclasses.dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    minutes: float | None = None  # wall-clock budget; None = no limit
    save_every: int = 500
    hflip: bool = True
    warmup: int = 100

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    losses: list[float]
    resumed_from: int


def _dist():
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def _save_state(state_dir: Path, model, ema, opt, step: int, gen: torch.Generator, losses, tcfg) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng"] = gen.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {"step": step, "param_groups": osd["param_groups"], "losses": losses[-2000:],
            "train_config": tcfg.to_dict(), "model": model.name, "config": model.config.to_dict()}
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / ".state.safetensors.tmp"
    save_file(tensors, str(tmp))
    (state_dir / ".state.json.tmp").write_text(json.dumps(meta))
    os.replace(tmp, state_dir / "state.safetensors")
    os.replace(state_dir / ".state.json.tmp", state_dir / "state.json")


_MISSING = object()


def _load_state(state_dir: Path, model, ema, opt, gen: torch.Generator) -> tuple[int, list[float]]:
    f, j = state_dir / "state.safetensors", state_dir / "state.json"
    if not (f.is_file() and j.is_file()):
        return 0, []
    meta = json.loads(j.read_text())
    saved, now = meta.get("config") or {}, model.config.to_dict()
    changed = {k for k in saved.keys() | now.keys() if saved.get(k, _MISSING) != now.get(k, _MISSING)}
    added = {k for k in changed if k not in saved}
    if meta.get("model") != model.name or changed - added:
        raise ValueError(f"the saved training state in {state_dir} is for another model/config; "
                         "remove it or choose another --out")
    if added:
        # Fields the family gained after this state was saved (e.g. a new training objective):
        # the run goes on with their current values, a fine-tune that the card's history records.
        print(f"resuming {state_dir} with config fields it predates: "
              + ", ".join(f"{k}={now[k]!r}" for k in sorted(added)), file=sys.stderr)
    t = load_file(str(f))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    state: dict = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    gen.set_state(t["rng"])
    if "torch_rng" in t:  # the loss's own noise (reparameterization, timesteps) continues too
        torch.set_rng_state(t["torch_rng"])
    return int(meta["step"]), list(meta.get("losses", []))


def train(
    model: Generator,
    data: torch.Tensor,
    tcfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    state_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Generator, TrainResult]:
    """Train `model` on `data` ((N, 3, H, W) or (N, T, 3, H, W) in [-1, 1]); return the EMA model."""
    dist, rank, world = _dist()
    device = torch.device(device)
    if dist is not None and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(tcfg.seed)
    model.to(device).train()
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=tcfg.betas, weight_decay=tcfg.weight_decay)
    gen = torch.Generator().manual_seed(tcfg.seed)
    state_path = Path(state_dir) if state_dir else None
    start, losses = (0, [])
    if state_path is not None:
        start, losses = _load_state(state_path, model, ema, opt, gen)
        model.to(device)
        ema.to(device)
    if dist is not None:
        for p in model.parameters():
            dist.broadcast(p.data, 0)

    n = len(data)
    local_bs = max(1, tcfg.batch_size // world)
    t0 = time.time()
    bar = None
    if progress and rank == 0 and start < tcfg.steps:
        from tqdm import tqdm

        bar = tqdm(total=tcfg.steps, initial=start, desc=f"train {model.name}", file=sys.stderr,
                   dynamic_ncols=True, mininterval=1.0)
    step = start
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    while step < tcfg.steps:
        if tcfg.minutes is not None and time.time() - t0 > tcfg.minutes * 60:
            break
        # Every rank draws the same global batch and takes its own slice: DDP then matches a
        # single process on the same global batch.
        idx = torch.randint(0, n, (local_bs * world,), generator=gen)
        flip = torch.rand(local_bs * world, generator=gen) < 0.5
        idx, flip = idx[rank * local_bs:(rank + 1) * local_bs], flip[rank * local_bs:(rank + 1) * local_bs]
        batch = data[idx].to(device, non_blocking=True).float()
        if tcfg.hflip:
            batch = torch.where(flip.to(device).view(-1, *[1] * (batch.dim() - 1)), batch.flip(-1), batch)
        lr = tcfg.lr * min(1.0, (step + 1) / max(1, tcfg.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        if amp is not None:
            with amp:
                loss = model.loss(batch)
        else:
            loss = model.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{model.name}: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if dist is not None:
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= world
        if tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        if hasattr(model, "after_step"):
            model.after_step(step)
        with torch.no_grad():
            d = min(tcfg.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm.detach(), 1 - d)
            for be, bm in zip(ema.buffers(), model.buffers()):
                be.copy_(bm)
        step += 1
        lv = float(loss.detach())
        losses.append(lv)
        if on_step:
            on_step(step, lv)
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if state_path is not None and rank == 0 and step % tcfg.save_every == 0:
            _save_state(state_path, model, ema, opt, step, gen, losses, tcfg)
    if bar is not None:
        bar.close()
    if state_path is not None and rank == 0 and step > start:
        _save_state(state_path, model, ema, opt, step, gen, losses, tcfg)
    tail = losses[-50:] or [float("nan")]
    return ema.eval(), TrainResult(step, time.time() - t0, sum(tail) / len(tail), losses, start)
