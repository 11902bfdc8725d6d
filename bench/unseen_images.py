"""Image detection on generator weights the detectors never saw: one JSON object on stdout.

The shipped detectors were fitted on a corpus (default: datasets/corpora/default) whose rows
name the generator checkpoints that made them. This bench scores a second corpus of synthetic
images written by `forensics generate` — typically from retrained checkpoints, or from
architectures absent from the training corpus (reflow, hybrid) — against the real TEST split of
the training corpus (photos never used in fitting), with exactly the `forensics detect` path
(detect.load_media, every installed image detector, detect.fuse). It reports the fused AUC,
TPR at the shipped threshold, and per architecture whether its checkpoint hash occurs in the
training corpus (`seen_checkpoint`).

    forensics generate --arch vae,gan,reflow,hybrid --n 40 --seed 7000 --out runs/unseen_images
    python bench/unseen_images.py --unseen runs/unseen_images [--corpus datasets/corpora/default]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unseen", required=True, help="corpus of synthetic images to score")
    ap.add_argument("--corpus", default=str(ROOT / "datasets" / "corpora" / "default"),
                    help="the detectors' training corpus (its real test split is the negative class)")
    a = ap.parse_args()
    import numpy as np

    from forensics import detect, metrics
    from forensics.corpus import Corpus

    for c in (a.corpus, a.unseen):
        if not (Path(c) / "metadata.jsonl").is_file():
            print(json.dumps({"error": f"no corpus at {c}"}))
            raise SystemExit(2)
    t0 = time.time()
    train_c, unseen_c = Corpus(a.corpus), Corpus(a.unseen)
    seen_sha = {r.get("checkpoint_sha256") for r in train_c.rows if r["label"] == "synthetic"}
    dets = {n: d for n, d in detect.load_detectors().items() if "image" in d.modalities}

    def score(path) -> tuple[float, float]:
        m = detect.load_media(path)
        p, thr, _ = detect.fuse(detect.score_media(m, dets), dets)
        return p, thr

    real = [score(train_c.path(r)) for r in train_c.select(split="test", label="real", modality="image")]
    synth: dict[str, list[float]] = {}
    seen: dict[str, bool] = {}
    for r in unseen_c.select(label="synthetic", modality="image"):
        synth.setdefault(r["architecture"], []).append(score(unseen_c.path(r))[0])
        seen[r["architecture"]] = r.get("checkpoint_sha256") in seen_sha
    thr = real[0][1]
    p_real = np.array([p for p, _ in real])

    def block(ps: list[float]) -> dict:
        y = np.r_[np.zeros(len(p_real)), np.ones(len(ps))]
        return {"n": len(ps), "auc": round(metrics.auc(y, np.r_[p_real, ps]), 4),
                "tpr_at_threshold": round(float((np.array(ps) >= thr).mean()), 4)}

    all_p = [p for v in synth.values() for p in v]
    rel = Path(a.corpus).resolve()
    corpus_name = str(rel.relative_to(ROOT)) if rel.is_relative_to(ROOT) else a.corpus
    out = {"unseen": a.unseen, "real": {"corpus": corpus_name, "split": "test", "n": len(p_real),
                                        "fpr_at_threshold": round(float((p_real >= thr).mean()), 4)},
           "threshold": round(thr, 4), "detectors": sorted(dets),
           "all": block(all_p),
           "by_architecture": {k: {**block(v), "seen_checkpoint": seen[k]} for k, v in sorted(synth.items())},
           "seconds": round(time.time() - t0, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
