"""Clip-level accuracy on the video corpus's test split: one JSON object on stdout.

Two tasks, each real test clips (virtual camera over test photos never seen in training) against
- `video_diffusion`: clips from the video diffusion model;
- `frame_wise`: latent walks through image models, every frame generated on its own
  (architectures `*_interp`: VAE, GAN, Glow, DDIM, latent diffusion).
Two scorers, each by clip-level AUC, and at its threshold by TPR/FPR:
- `temporal`: the temporal detector's clip logit;
- `detect`: the full `forensics detect` clip verdict path on the MP4 (run sampling, per-frame
  subset, every installed detector, fusion): the fused p_synthetic (unrounded) for the AUC and
  the verdict (synthetic / uncertain / real) for the rates. A few clips go through
  `detect.detect_file` itself to check that this path gives the same p.
Per-architecture AUCs and the per-frame detectors alone (artifact, frequency) are included.

    .venv/bin/python bench/video_accuracy.py [--corpus datasets/corpora/video] [--split test] [--unseen DIR]

`--unseen DIR` adds clips of generators that made none of the training clips (a corpus written by
`forensics generate`, e.g. `--arch video_diffusion_tsr`), scored against the same real test clips.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def group_of(row: dict) -> str | None:
    if row["label"] == "real":
        return "real"
    a = row.get("architecture") or ""
    if a == "video_diffusion":
        return "video_diffusion"
    if a.endswith("_interp"):
        return "frame_wise"
    return None


def rates(y, p, thr) -> dict:
    import numpy as np

    y, p = np.asarray(y), np.asarray(p)
    return {"tpr_at_threshold": round(float((p[y == 1] >= thr).mean()), 4) if (y == 1).any() else None,
            "fpr_at_threshold": round(float((p[y == 0] >= thr).mean()), 4) if (y == 0).any() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT / "datasets" / "corpora" / "video"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--check", type=int, default=6, help="clips also run through detect.detect_file")
    ap.add_argument("--unseen", metavar="DIR",
                    help="a corpus of synthetic clips from generators the detectors were not trained on (e.g. "
                         "`forensics generate --arch video_diffusion_tsr`); all its clips are scored against the real "
                         "test clips as `unseen_vs_real`")
    a = ap.parse_args()
    import numpy as np

    from forensics import detect, metrics
    from forensics.corpus import Corpus
    from forensics.detectors import base as dbase

    if not (Path(a.corpus) / "metadata.jsonl").is_file():
        why = (f"no corpus at {a.corpus}; build it with `forensics corpus build datasets/recipes/video.toml` "
               "(resumable)")
        print(json.dumps({"error": why}))
        sys.stderr.write(f"video_accuracy: {why}\n")
        raise SystemExit(2)
    load0 = os.getloadavg()
    t_start = time.time()
    c = Corpus(a.corpus)
    rows = [r for r in c.select(split=a.split, modality="video") if group_of(r)]
    dets = detect.load_detectors()
    jobs = [(c, r, group_of(r)) for r in rows]
    if a.unseen:
        cu = Corpus(a.unseen)
        jobs += [(cu, r, "unseen") for r in cu.select(modality="video") if r["label"] == "synthetic"]
    recs = []
    for corpus, r, group in jobs:
        path = corpus.path(r)
        m = detect.load_media(path)
        ev = detect.score_media(m, dets)
        p, thr, info = detect.fuse(ev, dets, m.modality)
        recs.append({"row": r, "group": group, "path": path, "p": p, "thr": thr, "verdict": detect.verdict(p, thr, info),
                     "fusion": f"{info['method']}:{info['model']}" if info.get("model") else info["method"], **{n: e.score for n, e in ev.items()},
                     **{f"{n}_p": e.p_synthetic for n, e in ev.items()}})
    # the same numbers through detect_file itself (rounded there to 4 decimals)
    checked, mismatched = 0, 0
    for k in np.linspace(0, len(recs) - 1, min(a.check, len(recs))).round().astype(int):
        out = detect.detect_file(recs[k]["path"], dets)
        checked += 1
        mismatched += int(abs(out["p_synthetic"] - round(recs[k]["p"], 4)) > 1e-4)

    def task(name: str) -> dict:
        sel = [x for x in recs if x["group"] in ("real", name)]
        y = np.array([int(x["group"] != "real") for x in sel])
        res = {"n_real": int((y == 0).sum()), "n_synthetic": int(y.sum())}
        if "temporal" in dets:
            zt = np.array([x.get("temporal", np.nan) for x in sel])
            res["temporal"] = {"auc": round(metrics.auc(y, zt), 4),
                               **rates(y, [x.get("temporal_p", np.nan) for x in sel], dets["temporal"].threshold)}
        pd = np.array([x["p"] for x in sel])
        verdicts = np.array([x["verdict"] for x in sel])
        res["detect"] = {"auc": round(metrics.auc(y, pd), 4),
                         "threshold": round(float(sel[0]["thr"]), 4) if sel else None,
                         "fusion": sorted({x["fusion"] for x in sel}),
                         "verdicts_real": {v: int(((verdicts == v) & (y == 0)).sum()) for v in ("real", "uncertain", "synthetic")},
                         "verdicts_synthetic": {v: int(((verdicts == v) & (y == 1)).sum()) for v in ("real", "uncertain", "synthetic")},
                         "tpr_synthetic_verdict": round(float((verdicts[y == 1] == "synthetic").mean()), 4) if y.any() else None,
                         "fpr_synthetic_verdict": round(float((verdicts[y == 0] == "synthetic").mean()), 4) if (y == 0).any() else None}
        for n in ("artifact", "frequency"):
            if n in dets:
                res[n] = {"auc": round(metrics.auc(y, np.array([x[n] for x in sel])), 4)}
        archs = sorted({x["row"].get("architecture") for x in sel if x["group"] != "real"})
        if len(archs) > 1:
            real = [x for x in sel if x["group"] == "real"]
            res["by_architecture"] = {}
            for ar in archs:
                sub = real + [x for x in sel if x["row"].get("architecture") == ar]
                yy = np.array([int(x["group"] != "real") for x in sub])
                res["by_architecture"][ar] = {
                    "n": int(yy.sum()),
                    "detect_auc": round(metrics.auc(yy, np.array([x["p"] for x in sub])), 4),
                    **({"temporal_auc": round(metrics.auc(yy, np.array([x.get("temporal", np.nan) for x in sub])), 4)}
                       if "temporal" in dets else {})}
        return res

    out = {
        "corpus": str(Path(a.corpus).resolve().relative_to(ROOT)) if str(Path(a.corpus).resolve()).startswith(str(ROOT)) else a.corpus,
        "split": a.split,
        "detectors": sorted(dets),
        "models": {n: dbase.card_sha256(d.directory)[:12] for n, d in dets.items() if d.directory},
        "clip": {"frames": sorted({r.get("frames") for r in rows}), "size": sorted({(r.get("width"), r.get("height")) for r in rows}),
                 "fps": sorted({r.get("fps") for r in rows})},
        "video_diffusion_vs_real": task("video_diffusion"),
        "frame_wise_vs_real": task("frame_wise"),
        **({"unseen_vs_real": {"corpus": a.unseen, **task("unseen")}} if a.unseen else {}),
        "detect_file_check": {"clips": checked, "p_mismatches": mismatched},
        "seconds": round(time.time() - t_start, 1),
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    goals = [out[t][s]["auc"] for t in ("video_diffusion_vs_real", "frame_wise_vs_real") for s in ("temporal", "detect")
             if s in out[t]]
    out["goal_auc_0_95_met"] = bool(goals) and all(g >= 0.95 for g in goals)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
