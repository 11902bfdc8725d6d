"""The survey's NFE claims, measured on the bank's own diffusion and flow models.

Claims under test: DDIM reaches a given quality in far fewer network evaluations (NFE) than
ancestral DDPM; latent diffusion makes each evaluation cheaper; rectified flow's straight paths
need the fewest steps (Euler), and a 2nd-order solver (Heun) helps at few steps.

For each sampler and number of steps: N samples from fixed seeds, the wall time per image, and
the Fréchet distance (FD) between the samples and real crops of the *test* split (photos never
seen in training), in two feature spaces:
- `fd_conv`: a fixed random conv net (seeded, nothing downloaded; 3 stride-2 conv layers, global
  average and max pooling → 256-d; `CONV_NET`, built by forensics.fidelity.FeatureNet);
- `fd_freq`: the frequency detector's features (forensics.detectors.frequency.features: residual
  spectrum, radial power, DCT statistics, colour-residual correlations).
Both are standardized on the real crops and projected on the real crops' first 32 principal axes
before the Fréchet distance (so that N of a few hundred gives a usable covariance; the feature
net, the projection and the distance are forensics/fidelity.py's). FD is biased
upward at small N: compare rows of one run (same N), not with published FIDs. `real_floor` is the
FD between the real val and test splits (different photos): the distance that real-vs-real has.

Inversion: real test crops → DDIM inversion (50 steps) → DDIM sampling (50 steps, no clipping),
PSNR of the round trip; the same with the rectified flow's reverse ODE (Heun) then forward.

Prints one JSON object; writes a PNG plot (FD vs NFE, log axis) with --plot.

Usage: python bench/nfe.py [--quick | --full] [--n N] [--plot PNG] [--ckpt-root DIR] [--threads 1]
(the default: NFE 1, 2, 5, 10, 20, 50, 100 for each sampler, N = 128; --full adds 1000-step DDPM)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from forensics import bank  # noqa: E402
from forensics.fidelity import FeatureNet, FrechetSpace, features  # noqa: E402
from forensics.detectors import frequency  # noqa: E402
from generators import base  # noqa: E402
from generators import samplers as S  # noqa: E402

# row -> (model, sampler, steps); flow_heun uses 2 evaluations per step
DEFAULT = {
    "ddpm_ancestral": ("ddpm", "ddpm", [5, 10, 20, 50, 100]),
    "ddim": ("ddpm", "ddim", [1, 2, 5, 10, 20, 50, 100]),
    "ldm_ddim": ("ldm", "ddim", [1, 2, 5, 10, 20, 50, 100]),
    "flow_euler": ("rectified_flow", "euler", [1, 2, 5, 10, 20, 50, 100]),
    "flow_heun": ("rectified_flow", "heun", [1, 3, 5, 10, 25, 50]),
    "reflow_euler": ("reflow", "euler", [1, 2, 5, 10, 20, 50]),
}
FULL = {**DEFAULT, "ddpm_ancestral": ("ddpm", "ddpm", [5, 10, 20, 50, 100, 1000])}
QUICK = {
    "ddpm_ancestral": ("ddpm", "ddpm", [10, 25, 100]),
    "ddim": ("ddpm", "ddim", [1, 2, 5, 10, 25, 50]),
    "ldm_ddim": ("ldm", "ddim", [1, 2, 5, 10, 25, 50]),
    "flow_euler": ("rectified_flow", "euler", [1, 2, 5, 10, 25, 50]),
    "flow_heun": ("rectified_flow", "heun", [1, 3, 5, 13, 25]),
    "reflow_euler": ("reflow", "euler", [1, 2, 5, 10, 25]),
}


# This bench's feature space since it was first run (kept so its numbers stay comparable); the
# project's card metric uses fidelity's default multi-scale net instead.
CONV_NET = dict(seed=0, widths=(32, 64, 128), strides=(2, 2, 2), pooled=(2,), pools=("mean", "max"), proj=None)


def _uint8(x: torch.Tensor) -> np.ndarray:
    return base.to_uint8(x)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * math.log10(4.0 / max((a - b).pow(2).mean().item(), 1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer settings, N=96")
    ap.add_argument("--full", action="store_true", help="adds 1000-step ancestral DDPM, N=256 (long on a CPU)")
    ap.add_argument("--n", type=int, help="samples per setting (default 128; 96 --quick, 256 --full)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--ckpt-root", default=str(base.CHECKPOINT_ROOT), help="folder with ddpm/ ldm/ rectified_flow/")
    ap.add_argument("--only", help="comma list of rows (ddpm_ancestral, ddim, ldm_ddim, flow_euler, flow_heun, reflow_euler)")
    ap.add_argument("--plot", help="write a PNG plot of FD vs NFE here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    plan = QUICK if a.quick else FULL if a.full else DEFAULT
    if a.only:
        plan = {k: v for k, v in plan.items() if k in a.only.split(",")}
    n = a.n or (96 if a.quick else 256 if a.full else 128)
    t_start = time.time()

    rs, _ = bank.real_training_data(per_source=100 if a.quick else 250)
    test = rs.split("test").images
    val = rs.split("val").images
    net = FeatureNet(**CONV_NET)

    def conv(x: torch.Tensor) -> np.ndarray:
        return features(x, net=net)

    real_t = base.from_uint8(test)
    space_conv = FrechetSpace(conv(real_t))
    space_freq = FrechetSpace(frequency.features(test))
    floor = {"fd_conv": space_conv.fd(conv(base.from_uint8(val))),
             "fd_freq": space_freq.fd(frequency.features(val))}

    models: dict[str, base.Generator] = {}
    rows = []
    for row, (model_name, sampler, steps_list) in plan.items():
        ck = Path(a.ckpt_root) / model_name
        if not (ck / "model.safetensors").is_file():
            rows.append({"row": row, "skipped": f"no checkpoint at {ck}"})
            continue
        m = models.get(model_name) or base.load(ck)
        models[model_name] = m
        for steps in steps_list:
            t0 = time.time()
            xs = []
            for i in range(0, n, a.batch):
                k = min(a.batch, n - i)
                g = torch.Generator().manual_seed(1000 + i)   # the same noise for every setting
                xs.append(m.sample(k, generator=g, steps=steps, sampler=sampler))
            x = torch.cat(xs)
            dt = time.time() - t0
            u8 = _uint8(x)
            rows.append({"row": row, "model": model_name, "sampler": sampler, "steps": steps,
                         "nfe": S.nfe(sampler, steps), "seconds_per_image": round(dt / n, 5),
                         "fd_conv": round(space_conv.fd(conv(x)), 3),
                         "fd_freq": round(space_freq.fd(frequency.features(u8)), 3)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    inversion = {}
    x_real = real_t[torch.linspace(0, len(real_t) - 1, 16).long()]
    if "ddpm" in models or (Path(a.ckpt_root) / "ddpm" / "model.safetensors").is_file():
        m = models.get("ddpm") or base.load(Path(a.ckpt_root) / "ddpm")
        for steps, refine in ((50, 0), (50, 2), (50, 4), (50, 10), (20, 10)):
            t0 = time.time()
            xT = m.invert(x_real, steps=steps, refine=refine)
            t_inv = time.time() - t0
            rec = S.ddim_sample(m, noise=xT, steps=steps, clip_x0=False).clamp(-1, 1)
            inversion[f"ddim_{steps}_refine{refine}_psnr_db"] = round(_psnr(rec, x_real), 2)
            inversion[f"ddim_{steps}_refine{refine}_invert_seconds"] = round(t_inv, 2)
        inversion["ddim_x_T_std"] = round(xT.std().item(), 3)
    if "rectified_flow" in models or (Path(a.ckpt_root) / "rectified_flow" / "model.safetensors").is_file():
        m = models.get("rectified_flow") or base.load(Path(a.ckpt_root) / "rectified_flow")
        for steps in (16, 50):
            x1 = m.invert(x_real, steps=steps, method="heun")
            rec = S.heun_sample(m, noise=x1, steps=steps).clamp(-1, 1)
            inversion[f"flow_heun_{steps}_psnr_db"] = round(_psnr(rec, x_real), 2)
        inversion["flow_x_1_std"] = round(x1.std().item(), 3)

    out = {"n_samples": n, "n_real_test": len(test), "feature_dims_after_pca": 32,
           "real_floor_val_vs_test": {k: round(v, 3) for k, v in floor.items()},
           "rows": rows, "inversion": inversion,
           "checkpoints": {k: json.loads((Path(a.ckpt_root) / k / "card.json").read_text()).get("steps")
                           for k in models if (Path(a.ckpt_root) / k / "card.json").is_file()},
           "torch_threads": torch.get_num_threads(), "seconds": round(time.time() - t_start, 1)}
    if a.plot:
        out["plot"] = str(plot(rows, floor, Path(a.plot)))
    print(json.dumps(out))


def plot(rows: list[dict], floor: dict, path: Path) -> Path:
    """FD (random-conv features) vs NFE, log x axis, drawn with OpenCV."""
    import cv2

    W, H, L, R, T, B = 760, 480, 70, 170, 30, 50
    img = np.full((H, W, 3), 255, np.uint8)
    pts = [r for r in rows if "nfe" in r]
    if not pts:
        return path
    xmax = math.log10(max(r["nfe"] for r in pts)) + 0.1
    ymax = max(max(r["fd_conv"] for r in pts), floor["fd_conv"]) * 1.05

    def xy(nfe_, fd):
        return (int(L + (math.log10(nfe_) / xmax) * (W - L - R)), int(H - B - fd / ymax * (H - T - B)))

    cv2.rectangle(img, (L, T), (W - R, H - B), (0, 0, 0), 1)
    for d in range(0, int(xmax) + 1):
        p = xy(10 ** d, 0)
        cv2.putText(img, str(10 ** d), (p[0] - 10, H - B + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    for k in range(6):
        v = ymax * k / 5
        p = xy(1, v)
        cv2.putText(img, f"{v:.0f}", (5, p[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "NFE (log)", (W // 2 - 60, H - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "FD vs real test (random-conv features)", (L, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    fy = xy(1, floor["fd_conv"])[1]
    cv2.line(img, (L, fy), (W - R, fy), (160, 160, 160), 1)
    colors = [(200, 60, 40), (40, 120, 220), (40, 170, 60), (150, 50, 170), (20, 140, 150), (230, 150, 20)]
    for i, name in enumerate(dict.fromkeys(r["row"] for r in pts)):
        c = colors[i % len(colors)]
        seq = [xy(r["nfe"], r["fd_conv"]) for r in pts if r["row"] == name]
        for p, q in zip(seq[:-1], seq[1:]):
            cv2.line(img, p, q, c, 2, cv2.LINE_AA)
        for p in seq:
            cv2.circle(img, p, 3, c, -1)
        cv2.putText(img, name, (W - R + 10, T + 20 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1)
    cv2.putText(img, "real floor", (W - R + 10, fy + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (160, 160, 160), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(img[:, :, ::-1]))
    return path


if __name__ == "__main__":
    main()
