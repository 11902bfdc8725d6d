"""DDIM sampling speed: our UNet + sampler against Hugging Face diffusers' `UNet2DModel` +
`DDIMScheduler`, at a matched parameter count, in one run on one machine.

- Ours: the shipped `ddpm` checkpoint (generators/checkpoints/ddpm), `sample(sampler="ddim")`.
- diffusers, same network layout: the same widths, levels, residual blocks per level, attention
  resolutions, GroupNorm groups, timestep-embedding width and scale-shift conditioning, randomly
  initialized (speed does not depend on the weights). Our UNet folds 2x2 pixels into channels
  first (`unshuffle`, a space-to-depth stem) and runs at 16x16; diffusers has no such stem, so the
  headline comparison (`diffusers`) wraps its UNet in the same pixel_unshuffle / pixel_shuffle —
  equal parameters *and* equal work. `diffusers_plain` is the stock UNet2DModel on the 32x32
  image (also within 10 % of our parameter count, 4x the spatial work): what someone who picks
  diffusers off the shelf at this size gets.
- Both sides: DDIM with η = 0, v-prediction, cosine ("squaredcos_cap_v2") schedule, "trailing"
  timestep spacing, x̂_0 clipped to [-1, 1], float32, the same batch size, steps, image size and
  torch threads, under torch.inference_mode. The diffusers loop is the one its DDIMPipeline runs
  (`unet(x, t).sample` → `scheduler.step(...).prev_sample`). Each side runs as it ships: ours
  switches its UNet to channels-last memory on the CPU (DDPM.sample), diffusers stays NCHW.
- Timing: one warm-up run per setting, then `--repeats` runs with the sides interleaved (so load
  from other processes on a shared machine falls on both alike); the median is reported.

Prints one JSON object (params, img/s of each side, ratio ours / diffusers per setting). Without
diffusers installed (`pip install -e '.[bench]'`) it prints a JSON object with a skip reason.

    python bench/sampling_speed.py [--threads 1] [--steps 10,50] [--batch 1,16] [--repeats 3] [--no-plain]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from generators import base  # noqa: E402
from generators.diffusion import DDPMConfig  # noqa: E402

PARAM_TOLERANCE = 0.10


def _groups(c: int, max_groups: int = 8) -> int:
    # the GroupNorm group count our UNet uses (generators/nn.py): the largest divisor of c ≤ 8
    g = min(max_groups, c)
    while c % g:
        g -= 1
    return g


def diffusers_unet_kwargs(cfg: DDPMConfig, *, unshuffle: bool = True) -> dict:
    """`UNet2DModel` arguments with the layout of our UNet for `cfg`.

    unshuffle=True: the network sees the image after the same space-to-depth stem as ours
    (cfg.unshuffle² x channels at S / unshuffle); False: the plain image."""
    r = cfg.unshuffle if unshuffle else 1
    res0 = cfg.image_size // r
    widths = tuple(cfg.ch * m for m in cfg.mults)
    # our attn_res counts the side of the feature map *after* the stem; map it by level
    attn = [(cfg.image_size // cfg.unshuffle) // 2 ** i in cfg.attn_res for i in range(len(widths))]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return dict(
        sample_size=res0, in_channels=cfg.channels * r * r, out_channels=cfg.channels * r * r,
        block_out_channels=widths, layers_per_block=cfg.num_res,
        down_block_types=down, up_block_types=up,
        norm_num_groups=_groups(cfg.ch), attention_head_dim=widths[-1] // cfg.heads,
        resnet_time_scale_shift="scale_shift", flip_sin_to_cos=True, freq_shift=0,
        dropout=cfg.dropout,
    )


class _Unshuffled(nn.Module):
    """A diffusers UNet behind our space-to-depth stem: (B, C, S, S) → (B, C, S, S)."""

    def __init__(self, unet: nn.Module, r: int):
        super().__init__()
        self.unet, self.r = unet, r

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        y = self.unet(F.pixel_unshuffle(x, self.r), t).sample                # (B, C r², S/r, S/r)
        return F.pixel_shuffle(y, self.r)


def build_diffusers_unet(cfg: DDPMConfig, *, unshuffle: bool = True, seed: int = 0) -> nn.Module:
    """A randomly initialized diffusers UNet matched to `cfg`; returns a module (x, t) → tensor."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**diffusers_unet_kwargs(cfg, unshuffle=unshuffle)).eval()
    r = cfg.unshuffle if unshuffle else 1
    return _Unshuffled(unet, r).eval()


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def check_matched(ours: int, theirs: int, tol: float = PARAM_TOLERANCE) -> float:
    """Relative difference of parameter counts; raises when it exceeds `tol`."""
    rel = abs(theirs - ours) / ours
    if rel > tol:
        raise ValueError(f"parameter counts differ by {rel:.1%} (ours {ours}, diffusers {theirs}); "
                         f"more than the {tol:.0%} a fair speed comparison allows")
    return rel


def make_scheduler(cfg: DDPMConfig):
    from diffusers import DDIMScheduler

    if cfg.schedule != "cosine" or cfg.prediction != "v":
        raise ValueError("the bench maps the cosine schedule with v-prediction (the shipped ddpm)")
    return DDIMScheduler(num_train_timesteps=cfg.timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", timestep_spacing="trailing",
                         clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True)


def diffusers_sample(net: nn.Module, scheduler, shape, steps: int, generator: torch.Generator) -> torch.Tensor:
    """The DDIMPipeline loop, η = 0."""
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator)
    for t in scheduler.timesteps:
        out = net(x, t)
        x = scheduler.step(out, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--steps", default="10,50")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ckpt", default=str(base.CHECKPOINT_ROOT / "ddpm"))
    ap.add_argument("--no-plain", action="store_true", help="skip the stock 32x32 diffusers UNet")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    env = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "dtype": "float32",
           "device": "cpu"}
    try:
        import diffusers
    except ImportError as exc:
        print(json.dumps({"skipped": True, "reason": f"diffusers is not installed ({exc}); "
                          "it is a bench-only extra: pip install -e '.[bench]'", **env}))
        return 0
    env["diffusers"] = diffusers.__version__

    ours = base.load(a.ckpt, device="cpu").eval()
    cfg = ours.config
    n_ours = count_params(ours)
    sides = {"ours": None, "diffusers": build_diffusers_unet(cfg, unshuffle=True)}
    if not a.no_plain:
        sides["diffusers_plain"] = build_diffusers_unet(cfg, unshuffle=False)
    params = {"ours": n_ours}
    for k, net in sides.items():
        if net is not None:
            params[k] = count_params(net)
            check_matched(n_ours, params[k])
    scheduler = make_scheduler(cfg)
    shape0 = (cfg.channels, cfg.image_size, cfg.image_size)

    def run(side: str, b: int, steps: int) -> float:
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if side == "ours":
                ours.sample(b, generator=g, steps=steps, sampler="ddim")
            else:
                diffusers_sample(sides[side], scheduler, (b, *shape0), steps, g)
        return time.perf_counter() - t0

    rows = []
    for steps in [int(s) for s in a.steps.split(",")]:
        for b in [int(s) for s in a.batch.split(",")]:
            times = {k: [] for k in sides}
            for k in sides:
                run(k, b, steps)                                                     # warm-up
            for _ in range(a.repeats):
                for k in sides:
                    times[k].append(run(k, b, steps))
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"steps": steps, "batch": b,
                   **{f"{k}_img_per_s": round(b / med[k], 3) for k in sides},
                   **{f"{k}_median_s": round(med[k], 4) for k in sides},
                   "ratio_ours_over_diffusers": round(med["diffusers"] / med["ours"], 3)}
            if "diffusers_plain" in sides:
                row["ratio_ours_over_diffusers_plain"] = round(med["diffusers_plain"] / med["ours"], 3)
            rows.append(row)
            print(f"steps={steps} batch={b}: " + ", ".join(f"{k} {b / med[k]:.2f} img/s" for k in sides),
                  file=sys.stderr)
    ratios = [r["ratio_ours_over_diffusers"] for r in rows]
    out = {"bench": "sampling_speed", **env, "repeats": a.repeats, "statistic": "median",
           "checkpoint": str(a.ckpt), "image_size": cfg.image_size, "params": params,
           "param_rel_diff": {k: round(abs(v - n_ours) / n_ours, 4) for k, v in params.items() if k != "ours"},
           "notes": "diffusers = same layout incl. our 2x2 space-to-depth stem (equal work); diffusers_plain = "
                    "stock UNet2DModel on the 32x32 image; ours runs channels-last on CPU, diffusers NCHW",
           "rows": rows, "min_ratio_ours_over_diffusers": min(ratios), "goal_ratio": 1.0,
           "goal_met": min(ratios) >= 1.0}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
