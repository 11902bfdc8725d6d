"""Detection metrics in plain numpy (checked against scikit-learn in the tests).

Labels y: 1 = synthetic (positive), 0 = real. Scores s: larger = more synthetic (a logit or a
probability; only the order matters except for ECE and threshold metrics).

- AUC: area under the ROC curve = P(s_pos > s_neg) + ½ P(tie) (Mann-Whitney U / n_pos n_neg).
- AP: average precision, Σ_k (R_k - R_{k-1}) P_k over distinct thresholds (scikit-learn's definition).
- EER: the error rate where FPR = FNR on the ROC curve (linear interpolation between points).
- TPR at FPR x: the threshold is the (1 - x) quantile of the real scores (higher scores count as
  synthetic); TPR is the share of synthetic scores strictly above it.
- ECE: expected calibration error of probabilities over `bins` equal-width bins,
  Σ_b (n_b / n) |mean(y in b) - mean(p in b)|.
"""

from __future__ import annotations

import math

import numpy as np


def _check(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    return y, s


def _both(y: np.ndarray) -> bool:
    return bool((y == 1).any() and (y == 0).any())


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, from (0, 0) upward."""
    y, s = _check(y, s)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    P, N = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fp / N], np.r_[0.0, tp / P], np.r_[np.inf, s[distinct]]


def auc(y, s) -> float:
    y, s = _check(y, s)
    if not _both(y):
        return float("nan")
    # rank-based (ties get the average rank)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ss = s[order]
    i = 0
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def average_precision(y, s) -> float:
    y, s = _check(y, s)
    if not (y == 1).any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    P = y.sum()
    N = len(y) - P
    tp, fp = tpr * P, fpr * N
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    return float(np.sum(np.diff(tpr) * precision[1:]))


def eer(y, s) -> float:
    y, s = _check(y, s)
    if not _both(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1 - tpr
    d = fpr - fnr                      # increasing from -1 to +1
    k = int(np.argmax(d >= 0))
    if k == 0:
        return float(fpr[0])
    d0, d1 = d[k - 1], d[k]
    t = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def threshold_at_fpr(real_scores, fpr: float) -> float:
    """The score above which a share `fpr` of real items lies."""
    r = np.asarray(real_scores, dtype=np.float64)
    if not len(r):
        return float("nan")
    return float(np.quantile(r, 1 - fpr))


def tpr_at_fpr(y, s, fpr: float) -> float:
    y, s = _check(y, s)
    if not _both(y):
        return float("nan")
    thr = threshold_at_fpr(s[y == 0], fpr)
    return float((s[y == 1] > thr).mean())


def ece(y, p, bins: int = 10) -> float:
    y, p = _check(y, p)
    if not len(y):
        return float("nan")
    b = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            total += m.sum() / len(y) * abs(y[m].mean() - p[m].mean())
    return float(total)


def reliability(y, p, bins: int = 10) -> list[dict]:
    """Per bin: its range, count, mean predicted p and observed synthetic rate."""
    y, p = _check(y, p)
    b = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        m = b == k
        out.append({"lo": k / bins, "hi": (k + 1) / bins, "n": int(m.sum()),
                    "p_mean": float(p[m].mean()) if m.any() else None,
                    "observed": float(y[m].mean()) if m.any() else None})
    return out


def binary_metrics(y, z, p, threshold: float) -> dict:
    """Everything for one detector on one set: z raw scores (logits), p calibrated probabilities,
    threshold on p."""
    y, z = _check(y, z)
    p = np.asarray(p, dtype=np.float64).ravel()
    pred = p >= threshold
    out = {"n_real": int((y == 0).sum()), "n_synthetic": int((y == 1).sum()),
           "auc": auc(y, z), "ap": average_precision(y, z), "eer": eer(y, z),
           "accuracy_at_threshold": float((pred == (y == 1)).mean()) if len(y) else float("nan"),
           "tpr_at_threshold": float(pred[y == 1].mean()) if (y == 1).any() else float("nan"),
           "fpr_at_threshold": float(pred[y == 0].mean()) if (y == 0).any() else float("nan"),
           "tpr_at_fpr_1pct": tpr_at_fpr(y, z, 0.01), "tpr_at_fpr_5pct": tpr_at_fpr(y, z, 0.05),
           "ece": ece(y, p)}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
