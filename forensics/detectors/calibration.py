"""Shared by the detectors: Platt calibration, the threshold at a stated false-positive rate, and
item-level scoring of corpus rows (one logit per image or clip).

Platt scaling (Platt 1999): p = σ(a z + b), a and b fitted by logistic regression of the labels on
the raw logit z over the validation split. The default threshold is the (1 - FPR) quantile of
the calibrated p of *real* validation items, so on data like the validation photos about FPR of
real images are called synthetic.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import metrics
from ..errors import UsageError
from .base import platt_fit, sigmoid, threshold_at_fpr

MAX_FRAMES_PER_ITEM = 8
PATCH = 32


def fit_small(frame: np.ndarray, side: int = PATCH) -> np.ndarray:
    """Upsample a frame whose short side is under `side` px so that it is `side` (bicubic)."""
    h, w = frame.shape[:2]
    if min(h, w) >= side:
        return frame
    k = side / min(h, w)
    return cv2.resize(frame, (max(side, round(w * k)), max(side, round(h * k))), interpolation=cv2.INTER_CUBIC)


def arch_of(row: dict) -> str:
    return "real" if row["label"] == "real" else (row.get("architecture") or row["family"])


def labels(rows: list[dict]) -> np.ndarray:
    return np.array([int(r["label"] == "synthetic") for r in rows], np.int64)


def require_both(rows: list[dict], what: str) -> None:
    have = {r["label"] for r in rows}
    if have != {"real", "synthetic"}:
        raise UsageError(f"the corpus's {what} split needs real and synthetic items; has {sorted(have) or 'none'}")


def platt(z: np.ndarray, y: np.ndarray) -> list[float]:
    """Platt parameters [a, b] (base.platt_fit: Platt's smoothed targets, no infinite slopes)."""
    z = np.asarray(z, np.float64)
    if len(set(np.asarray(y).tolist())) < 2 or np.ptp(z) == 0:
        return [1.0, 0.0]
    return list(platt_fit(z, y))


def apply_platt(ab, z) -> np.ndarray:
    a, b = ab
    return sigmoid(a * np.asarray(z, np.float64) + b)


def calibrate_and_threshold(z: np.ndarray, y: np.ndarray, fpr: float) -> dict:
    """Platt parameters, the threshold at `fpr` on real items, and validation numbers."""
    ab = platt(z, y)
    p = apply_platt(ab, z)
    thr = threshold_at_fpr(p[y == 0], fpr)
    return {"calibration": ab, "threshold": thr, "threshold_fpr": fpr,
            "threshold_rule": f"max(0.5, the calibrated p exceeded by {fpr:.0%} of real validation items)",
            "val": {"auc": metrics.auc(y, z), "n_real": int((y == 0).sum()), "n_synthetic": int(y.sum()),
                    "fpr_at_threshold": float((p[y == 0] >= thr).mean()) if (y == 0).any() else None,
                    "tpr_at_threshold": float((p[y == 1] >= thr).mean()) if y.any() else None}}


def item_frames(corpus, rows: list[dict], max_frames: int = MAX_FRAMES_PER_ITEM):
    """Frames (T, H, W, 3) of each row, at most `max_frames` spread over a clip."""
    out = []
    for _, frames in corpus.iter_frames(rows):
        if len(frames) > max_frames:
            frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
        out.append(frames)
    return out


def evaluate_detector(det, corpus, split: str = "test") -> dict:
    """Test-split numbers of a fitted detector: overall and per architecture (real test items vs
    each architecture's test items), at the detector's own threshold."""
    rows = corpus.select(split=split)
    if not rows:
        return {"split": split, "n": 0}
    z = det.item_logits(item_frames(corpus, rows))
    p = det.calibrate(z)
    y = labels(rows)
    out = {"split": split, **metrics.binary_metrics(y, z, p, det.threshold)}
    arch = np.array([arch_of(r) for r in rows])
    per = {}
    for a in sorted(set(arch.tolist()) - {"real"}):
        m = (arch == a) | (y == 0)
        per[a] = metrics.auc(y[m], z[m])
    out["auc_by_architecture"] = per
    classes = det.config.get("classes") or []
    if hasattr(det, "item_attribution") and len(classes) > 2:
        out.update(attribution_accuracy(det.item_attribution(item_frames(corpus, rows)), classes, arch))
    return out


def attribution_accuracy(probs: np.ndarray, classes: list[str], true: np.ndarray) -> dict:
    """Accuracy of argmax attribution on synthetic items of known architectures, and on all items."""
    pred = np.array(classes)[np.asarray(probs).argmax(1)]
    known = (true != "real") & np.isin(true, classes)
    return {"attribution_accuracy": float((pred[known] == true[known]).mean()) if known.any() else None,
            "attribution_accuracy_with_real": float((pred == true).mean()) if len(true) else None}
