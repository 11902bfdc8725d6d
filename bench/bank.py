"""The generator bank on this machine: size, sampling speed, likelihood and sample quality.

For each shipped image architecture (vae, gan, glow, tarflow, pixelcnn, vq_transformer, ddpm,
ddim, ldm, rectified_flow), one object:
- `parameters` of the checkpoint;
- `samples_per_second` of its default sampler (stated: `sampler`, `steps`, `batch`), measured
  while drawing the N samples scored below, on this device and thread count;
- `bits_per_dim` where the card defines one (with the card's key and what it bounds), else null;
- `fd`, `fd_floor`, `n`: forensics/fidelity.py's Fréchet distance of N samples to N real test
  crops, and of N real train crops to the same N test crops (the real-vs-real floor). All
  architectures are scored against the same N real images, so their rows compare; values at a
  different N do not (FD is biased upward at small N).

Prints one JSON object (per-architecture progress lines go to stderr).

Usage: python bench/bank.py [--quick] [--n N] [--only vae,gan] [--ckpt-root DIR] [--batch B]
       [--device cpu|cuda] [--threads T]     (default N = 256; --quick: N = 64)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from forensics import bank, fidelity  # noqa: E402
from generators import base  # noqa: E402

ARCHS = ["vae", "gan", "glow", "tarflow", "pixelcnn", "vq_transformer", "ddpm", "ddim", "ldm", "rectified_flow"]
# architecture -> (card metric, what it is). Others define no pixel likelihood.
BITS = {
    "vae": ("neg_elbo_bits_per_dim", "upper bound (negative ELBO), 8-bit data"),
    "glow": ("bits_per_dim", "uniformly dequantized, 8-bit data"),
    "pixelcnn": ("bits_per_dim", "exact discrete likelihood, 8-bit data"),
    "tarflow": ("bits_per_dim_noisy", "of the sigma-noised data (see noise_floor_bits_per_dim); not comparable to the others"),
}
NO_BITS = {
    "vq_transformer": "none: the prior's code length (prior_bits_per_pixel_dim) is not a likelihood of the pixels",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 64")
    ap.add_argument("--n", type=int, help=f"samples = real images per side (default {fidelity.DEFAULT_N}; 64 --quick)")
    ap.add_argument("--only", help="comma list of architectures")
    ap.add_argument("--ckpt-root", default=str(base.CHECKPOINT_ROOT), help="folder with one checkpoint folder per model")
    ap.add_argument("--batch", type=int, default=64, help="sampling batch size")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    n = a.n or (64 if a.quick else fidelity.DEFAULT_N)
    archs = [x for x in ARCHS if not a.only or x in a.only.split(",")]
    base.architectures()  # fills the registry
    dev = base.resolve_device(a.device)
    t_start = time.time()

    rs, desc = bank.real_training_data()
    ref = fidelity.Reference(bank.to_tensor(rs.split("test").images), bank.to_tensor(rs.split("train").images),
                             n=n, seed=a.seed)
    families = {}
    for arch in archs:
        model_name, sampler = base.ARCHITECTURES[arch]
        ck = Path(a.ckpt_root) / model_name
        if not (ck / "model.safetensors").is_file():
            families[arch] = {"skipped": f"no checkpoint at {ck}"}
            continue
        card = json.loads((ck / "card.json").read_text()) if (ck / "card.json").is_file() else {}
        model = base.load(ck, device=dev)
        r = fidelity.score_model(model, ref, seed=a.seed, batch=a.batch, sampler=sampler, inception=False)
        metrics = card.get("metrics", {})
        key, what = BITS.get(arch, (None, None))
        row = {"model": model_name, "family": model.family, "parameters": model.num_parameters(),
               "sampler": r["sampler"], "steps": r["steps"], "batch": a.batch,
               "samples_per_second": round(ref.n / max(r["sample_seconds"], 1e-9), 3),
               "bits_per_dim": metrics.get(key) if key else None,
               **({"bits_per_dim_metric": key, "bits_per_dim_is": what} if key and key in metrics else
                  {"bits_per_dim_note": NO_BITS.get(arch, "no likelihood on the card")}),
               "fd": r["fd"], "fd_floor": r["fd_floor"], "n": r["n"],
               "train_steps": card.get("steps"), "checkpoint_sha256": base.checkpoint_sha256(ck)[:16]}
        families[arch] = row
        print(json.dumps({"architecture": arch, **row}), file=sys.stderr, flush=True)

    out = {"n": ref.n, "feature_space": fidelity.FEATURE_SPACE, "fd_floor": round(ref.floor, 4),
           "real_reference": {"test_items": int(desc["items_by_split"]["test"]),
                              "train_items": int(desc["items_by_split"]["train"]),
                              "crops_per_source": desc["crops_per_source"]},
           "device": str(dev), "torch_threads": torch.get_num_threads(), "batch": a.batch,
           "inception_fid": "not computed here (see forensics bank score)",
           "families": families, "seconds": round(time.time() - t_start, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
