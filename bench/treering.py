"""Tree-Ring watermark bench: prints one JSON object.

For each carrier (the shipped `ddpm` checkpoint sampled by DDIM, η = 0, 50 steps; the shipped
`rectified_flow`, Euler 32 steps) it samples N images from marked noise (seeds 0 … N-1) and N from
plain noise (seeds 100000 …, the same sampler), then runs detection (forensics.watermark.treering:
inversion with the module's default steps, the key-randomness test) on the clean PNGs and on JPEG-75
copies (forensics.attacks). It reports, per carrier and attack:
- `auc` (z-score statistic) and `auc_distance` (Tree-Ring L1 distance, lower = marked);
- `tpr_at_1pct_fpr`: the share of marked images above the score that ≤ 1 % of unmarked ones exceed;
- `fp_at_threshold` / `tpr_at_threshold`: at the default threshold p ≤ 1e-6;
plus embedding time (sampling from marked noise, and the marking of the noise alone) and detection
time per image, the false positives on real 32×32 photo crops (a null unlike the model's own
images), and the moments of the marked noise (treering.marginal_std). The key is a fixed bench
key, never the user's.

    python bench/treering.py [--quick] [--n 200] [--real 200] [--batch 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from forensics import attacks, realdata  # noqa: E402
from forensics.watermark import posthoc, treering  # noqa: E402
from generators import base  # noqa: E402

KEY = posthoc.WatermarkKey(bytes.fromhex("7ee1" * 16))
UNMARKED_SEED0 = 100000
GOALS = {"auc_clean": 0.99, "tpr_jpeg75_at_1pct_fpr": 0.9}


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a marked image > score of an unmarked one), ties counted half (Mann-Whitney)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float = 0.01) -> float:
    """TPR at the strictest score threshold that at most fpr·N unmarked images exceed."""
    neg = np.sort(np.asarray(neg, float))[::-1]
    k = int(np.floor(fpr * len(neg)))  # unmarked images allowed above the threshold
    thr = neg[k] if k < len(neg) else -np.inf
    return float(np.mean(np.asarray(pos, float) > thr))


def noise_for(seeds: list[int]) -> torch.Tensor:
    """Each item's x_T drawn from its own seed, exactly as `forensics generate` draws it."""
    return torch.stack([torch.randn((3, 32, 32), generator=torch.Generator().manual_seed(s)) for s in seeds])


def sample(model, sampler: str, steps: int, eps: torch.Tensor, batch: int) -> np.ndarray:
    out = []
    for i in range(0, len(eps), batch):
        x = model.sample(len(eps[i:i + batch]), generator=torch.Generator().manual_seed(0), steps=steps,
                         sampler=sampler, noise=eps[i:i + batch])
        out.append(base.to_uint8(x))
    return np.concatenate(out)


def summarize(rm: list[dict], ru: list[dict]) -> dict:
    sm = np.array([r["statistic"] for r in rm])
    su = np.array([r["statistic"] for r in ru])
    dm = np.array([r["distance"] for r in rm])
    du = np.array([r["distance"] for r in ru])
    return {"auc": round(auc(sm, su), 4), "auc_distance": round(auc(-dm, -du), 4),
            "tpr_at_1pct_fpr": round(tpr_at_fpr(sm, su, 0.01), 4),
            "tpr_at_threshold": round(float(np.mean([r["detected"] for r in rm])), 4),
            "fp_at_threshold": int(sum(r["detected"] for r in ru)),
            "marked_statistic": {"min": round(float(sm.min()), 3), "median": round(float(np.median(sm)), 3)},
            "unmarked_statistic": {"median": round(float(np.median(su)), 3), "max": round(float(su.max()), 3)},
            "marked_log10_p_median": round(float(np.median([r["log10_p"] for r in rm])), 2),
            "unmarked_p_min": min(r["p_value"] for r in ru)}


def run_arch(arch: str, sampler: str, steps: int, n: int, batch: int, real: np.ndarray | None) -> dict:
    model = treering.load_model(arch)
    p = treering.pattern_for(KEY, treering.noise_shape(model))
    eps_m = noise_for(list(range(n)))
    eps_u = noise_for(list(range(UNMARKED_SEED0, UNMARKED_SEED0 + n)))
    t0 = time.perf_counter()
    x_T = treering.mark_noise(eps_m, p)
    t_mark = time.perf_counter() - t0
    t0 = time.perf_counter()
    marked = sample(model, sampler, steps, x_T, batch)
    t_embed = time.perf_counter() - t0
    unmarked = sample(model, sampler, steps, eps_u, batch)
    res = {"checkpoint_sha256": base.checkpoint_sha256(base.CHECKPOINT_ROOT / treering.CARRIERS[arch][0]),
           "sampler": sampler, "steps": steps, "inversion": treering.INVERSION[arch],
           "n_marked": n, "n_unmarked": n,
           "mark_noise_s_per_image": round(t_mark / n, 6),
           "embed_s_per_image": round((t_mark + t_embed) / n, 4)}
    for name in ("none", "jpeg:75"):
        f = attacks.parse(name)
        am = [f(im) for im in marked]
        au = [f(im) for im in unmarked]
        t0 = time.perf_counter()
        rm = treering.detect_images(am, KEY, arch, batch=batch)
        dt = time.perf_counter() - t0
        ru = treering.detect_images(au, KEY, arch, batch=batch)
        res["clean" if name == "none" else "jpeg75"] = summarize(rm, ru)
        if name == "none":
            res["detect_s_per_image"] = round(dt / n, 4)
    if real is not None and len(real):
        rr = treering.detect_images(list(real), KEY, arch, batch=batch)
        res["real_photos"] = {"n": len(rr), "fp_at_threshold": int(sum(r["detected"] for r in rr)),
                              "statistic_max": round(max(r["statistic"] for r in rr), 3),
                              "p_min": min(r["p_value"] for r in rr)}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="24 + 24 images per carrier, 20 DDIM / 16 Euler steps")
    ap.add_argument("--n", type=int, help="marked (and unmarked) images per carrier (default 200)")
    ap.add_argument("--real", type=int, help="real photo crops tested as a further null (default = n)")
    ap.add_argument("--batch", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    n = a.n or (24 if a.quick else 200)
    n_real = n if a.real is None else a.real
    steps = {"ddim": 20, "rectified_flow": 16} if a.quick else {"ddim": 50, "rectified_flow": 32}
    real = None
    if n_real > 0:
        crops = realdata.default_crops(per_source=max(1, -(-n_real // len(realdata.bundled_sources()))), seed=7)
        real = crops.images[:n_real]
    t_start = time.time()
    out = {"bench": "treering", "quick": a.quick, "algorithm": treering.ALGORITHM,
           "band": list(treering.BAND), "strength": treering.DEFAULT_STRENGTH,
           "default_threshold": treering.DEFAULT_THRESHOLD,
           "marginal": treering.marginal_std(treering.pattern_for(KEY, (3, 32, 32)), n=512),
           "threads": torch.get_num_threads(), "machine": platform.machine(), "device": "cpu"}
    for arch, sampler in (("ddim", "ddim"), ("rectified_flow", "euler")):
        out[arch] = run_arch(arch, sampler, steps[arch], n, a.batch, real)
    out["goals"] = {arch: {"auc_clean": out[arch]["clean"]["auc"] >= GOALS["auc_clean"],
                           "tpr_jpeg75_at_1pct_fpr": out[arch]["jpeg75"]["tpr_at_1pct_fpr"]
                           >= GOALS["tpr_jpeg75_at_1pct_fpr"]} for arch in ("ddim", "rectified_flow")}
    out["goals_met"] = all(all(v.values()) for v in out["goals"].values())
    out["seconds"] = round(time.time() - t_start, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
