"""Fusion: the detectors' scores → one calibrated p_synthetic, with a threshold at a stated FPR.

1. Inputs: each component detector's calibrated logit ℓ_d = logit(p_d) (clipped to ±13.8, as
   `forensics detect` computes it), for d in `inputs` (default: every detector with a shipped
   checkpoint that scores images).
2. Model: logistic regression p = σ(w·ℓ + c) (stacked generalization, Wolpert 1992), fitted on
   the *validation* split, which no component saw in training. The fit uses each validation item
   clean and once more under a random everyday perturbation (JPEG, resize, blur, noise), so the
   weights favour detectors whose evidence survives processing. The fitted model is itself a
   Platt calibration of the combined score.
3. Threshold: the (1 - FPR) quantile of the fused p on *clean real* validation items (default
   FPR 5 %). `forensics detect` says `uncertain` when the fused logit is within 1 of the
   threshold's logit.
4. The checkpoint records every input detector's card hash; `forensics detect` applies the fusion
   only when the loaded detectors are those (else it falls back to the mean calibrated logit and
   says so).

Videos have their own fusion (`fusion_video`, `forensics train fusion_video --corpus
datasets/corpora/video`): the same model over the *clip-level* logits of every detector that
scores videos (temporal included), each computed exactly as `forensics detect` computes it on the
clip file, fitted on the video corpus's validation split. The image fusion alone cannot serve
videos: its weights were set on photos, and averaging the temporal logit into it gives the
per-frame detectors, fitted on images, as much say as the temporal evidence they dilute. Its
fit uses clean clips only: perturbing a clip the way `detect` would see it means re-encoding it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import metrics
from ..errors import CheckpointError, UsageError
from . import base as dbase
from . import calibration as cal
from .base import Detector, register

LOGIT_CLIP = 13.8
PERTURBATIONS = ("jpeg:90", "jpeg:75", "jpeg:50", "resize:0.5", "resize:0.75", "resize:1.5", "blur:0.7",
                 "noise:3", "resize:0.5+jpeg:75")


def clipped_logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def component_logits(detectors: dict, items) -> dict[str, np.ndarray]:
    """Calibrated, clipped logits of each component detector for each item."""
    return {n: clipped_logit(d.calibrate(d.item_logits(items))) for n, d in detectors.items()}


def perturb_items(items, rng: np.random.Generator, specs=PERTURBATIONS):
    from .. import attacks

    fns = [attacks.parse(s) for s in specs]
    return [fns[int(rng.integers(0, len(fns)))](frames, rng) for frames in items]


def load_components(detectors=None, modality: str = "image") -> dict:
    """{name: Detector} from a dict of name → folder/Detector, a list of names, or None (every
    shipped detector of `modality` except the combiners)."""
    if detectors is None:
        names = [n for n in dbase.names()
                 if n != "fusion" and not getattr(dbase.get_class(n), "combiner", False)
                 and modality in dbase.get_class(n).modalities
                 and (dbase.CHECKPOINT_ROOT / n / "config.json").is_file()]
        detectors = {n: n for n in names}
    elif isinstance(detectors, (list, tuple)):
        detectors = {n: n for n in detectors}
    out = {}
    for n, d in detectors.items():
        out[n] = d if isinstance(d, Detector) else dbase.load(d)
    if not out:
        raise UsageError("fusion needs fitted detectors; train them first "
                         "(`forensics train artifact --corpus DIR`, `forensics train frequency --corpus DIR`)")
    return out


@register
class FusionDetector(Detector):
    name = "fusion"
    combiner = True             # combines other detectors' evidence; never scores media itself
    modalities = ()
    fallback = "used the mean calibrated logit"   # what `detect` does when this fusion does not apply

    def __init__(self, config=None, components: dict | None = None):
        super().__init__(config)
        self.components = components or {}

    @property
    def inputs(self) -> list[str]:
        return list(self.config.get("inputs", []))

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, corpus, *, seed: int = 0, detectors=None, fpr: float = 0.05, C: float = 1.0,
            perturbed_copies: int = 1, progress: bool = False) -> "FusionDetector":
        from sklearn.linear_model import LogisticRegression

        self.components = comps = load_components(detectors)
        val = corpus.select(split="val")
        cal.require_both(val, "val")
        items = cal.item_frames(corpus, val)
        y = cal.labels(val)
        names = sorted(comps)
        L = component_logits(comps, items)
        X = np.stack([L[n] for n in names], 1)                      # (N, D) clean
        Xs, ys = [X], [y]
        rng = np.random.default_rng(seed)
        for _ in range(perturbed_copies):
            Lp = component_logits(comps, perturb_items(items, rng))
            Xs.append(np.stack([Lp[n] for n in names], 1))
            ys.append(y)
        model = LogisticRegression(C=C, max_iter=2000).fit(np.concatenate(Xs), np.concatenate(ys))
        self.config = {"inputs": names, "weights": [float(w) for w in model.coef_[0]],
                       "bias": float(model.intercept_[0]), "C": C, "seed": seed,
                       "perturbations": list(PERTURBATIONS) if perturbed_copies else [],
                       "perturbed_copies": perturbed_copies,
                       "input_sha256": {n: dbase.card_sha256(d.directory) if d.directory else None
                                        for n, d in comps.items()},
                       "method": "logistic regression on calibrated detector logits (validation split)"}
        p = self.combine_logits(X)
        thr = dbase.threshold_at_fpr(p[y == 0], fpr)
        self.config.update({
            "threshold": thr, "threshold_fpr": fpr,
            "val": {"auc": metrics.auc(y, X @ np.array(self.config["weights"])), "n_real": int((y == 0).sum()),
                    "n_synthetic": int(y.sum()), "threshold_rule": f"max(0.5, the fused p exceeded by {fpr:.0%} of clean real validation items)",
                    "fpr_at_threshold": float((p[y == 0] >= thr).mean()),
                    "tpr_at_threshold": float((p[y == 1] >= thr).mean()),
                    "auc_by_input": {n: metrics.auc(y, L[n]) for n in names}},
        })
        return self

    # -- combining ---------------------------------------------------------------------------
    def combine_logits(self, X: np.ndarray) -> np.ndarray:
        """(N, D) component logits in `inputs` order → fused p (N,)."""
        w = np.array(self.config["weights"], np.float64)
        return dbase.sigmoid(np.asarray(X, np.float64) @ w + self.config["bias"])

    def fused_logit(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float64) @ np.array(self.config["weights"]) + self.config["bias"]

    def combine(self, p_by_detector: dict[str, float]) -> float:
        X = np.array([[clipped_logit(p_by_detector[n]) for n in self.inputs]])
        return float(self.combine_logits(X)[0])

    def applies_to(self, detectors: dict) -> tuple[bool, str | None]:
        """Whether the fusion was fitted on exactly these detector checkpoints (by name and hash)."""
        missing = [n for n in self.inputs if n not in detectors]
        if missing:
            return False, f"{self.name} needs {', '.join(missing)}; {self.fallback} instead"
        for n in self.inputs:
            want = (self.config.get("input_sha256") or {}).get(n)
            d = detectors[n]
            if want and d.directory is not None and dbase.card_sha256(d.directory) != want:
                return False, (f"the {n} checkpoint differs from the one the {self.name} was fitted on "
                               f"(retrain: `forensics train {self.name} --corpus DIR`); {self.fallback}")
        return True, None

    # The evaluation interface shared with the other detectors, over the components.
    def item_logits(self, items) -> np.ndarray:
        L = component_logits(self.components, items)
        return self.fused_logit(np.stack([L[n] for n in self.inputs], 1))

    def calibrate(self, z):
        return dbase.sigmoid(np.asarray(z, np.float64))

    def evaluate(self, corpus, split: str = "test") -> dict:
        out = cal.evaluate_detector(self, corpus, split)
        out["weights"] = dict(zip(self.inputs, self.config["weights"]))
        return out

    def score(self, media):
        raise UsageError("fusion combines other detectors' evidence; it does not score media itself")

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, directory) -> Path:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / ".model.safetensors.tmp"
        save_file({"weights": np.array(self.config["weights"], np.float32),
                   "bias": np.array([self.config["bias"]], np.float32)}, str(tmp))
        os.replace(tmp, d / "model.safetensors")
        self._write_config(d)
        return d

    @classmethod
    def load(cls, directory) -> "FusionDetector":
        d = Path(directory)
        try:
            cfg = json.loads((d / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read fusion checkpoint {d}: {exc}") from None
        for k in ("inputs", "weights", "bias", "threshold"):
            if k not in cfg:
                raise CheckpointError(f"fusion checkpoint {d} lacks {k}")
        if len(cfg["inputs"]) != len(cfg["weights"]):
            raise CheckpointError(f"fusion checkpoint {d}: {len(cfg['inputs'])} inputs but {len(cfg['weights'])} weights")
        det = cls(cfg)
        det.directory = d
        return det

    def load_components(self, detectors=None) -> "FusionDetector":
        """Attach the component detectors (needed by item_logits / evaluate)."""
        self.components = load_components(detectors or {n: n for n in self.inputs})
        return self


def clip_logits(detectors: dict, corpus, rows) -> dict[str, np.ndarray]:
    """Each detector's calibrated, clipped logit per clip, by the path `forensics detect` takes on
    the clip file (frame runs, per-frame subset, `score`), so the fusion sees the numbers it will
    combine at detection time; NaN where a detector has nothing to say."""
    from .. import detect

    out: dict[str, list[float]] = {n: [] for n in detectors}
    for r in rows:
        ev = detect.score_media(detect.load_media(corpus.path(r)), detectors)
        for n in detectors:
            out[n].append(float(clipped_logit(ev[n].p_synthetic)) if n in ev else np.nan)
    return {n: np.array(v, np.float64) for n, v in out.items()}


@register
class VideoFusionDetector(FusionDetector):
    """The fusion `forensics detect` applies to videos (see the module docstring)."""

    name = "fusion_video"
    fallback = "fell back to the image fusion averaged with the other detectors"

    def fit(self, corpus, *, seed: int = 0, detectors=None, fpr: float = 0.05, C: float = 1.0,
            progress: bool = False) -> "VideoFusionDetector":
        from sklearn.linear_model import LogisticRegression

        self.components = comps = load_components(detectors, modality="video")
        if not any("image" not in d.modalities for d in comps.values()):
            raise UsageError("the video fusion needs a video-only detector (temporal); "
                             "train it first: `forensics train temporal --corpus DIR`")
        val = corpus.select(split="val", modality="video")
        cal.require_both(val, "val (video)")
        names = sorted(comps)
        L = clip_logits(comps, corpus, val)
        X = np.stack([L[n] for n in names], 1)
        keep = ~np.isnan(X).any(1)          # clips some detector could not score cannot be fused
        X, y = X[keep], cal.labels(val)[keep]
        cal.require_both([r for r, k in zip(val, keep) if k], "val (video, scored by every detector)")
        model = LogisticRegression(C=C, max_iter=2000).fit(X, y)
        self.config = {"inputs": names, "modality": "video", "weights": [float(w) for w in model.coef_[0]],
                       "bias": float(model.intercept_[0]), "C": C, "seed": seed,
                       "perturbations": [], "perturbed_copies": 0,
                       "input_sha256": {n: dbase.card_sha256(d.directory) if d.directory else None
                                        for n, d in comps.items()},
                       "method": ("logistic regression on the calibrated clip-level logits of the video detectors, "
                                  "as `forensics detect` computes them (video validation split)")}
        p = self.combine_logits(X)
        thr = dbase.threshold_at_fpr(p[y == 0], fpr)
        self.config.update({
            "threshold": thr, "threshold_fpr": fpr,
            "val": {"auc": metrics.auc(y, self.fused_logit(X)), "n_real": int((y == 0).sum()),
                    "n_synthetic": int(y.sum()), "n_unscored": int((~keep).sum()),
                    "threshold_rule": f"max(0.5, the fused p exceeded by {fpr:.0%} of real validation clips)",
                    "fpr_at_threshold": float((p[y == 0] >= thr).mean()),
                    "tpr_at_threshold": float((p[y == 1] >= thr).mean()),
                    "auc_by_input": {n: metrics.auc(y, X[:, i]) for i, n in enumerate(names)}},
        })
        return self

    def item_logits(self, items) -> np.ndarray:
        raise UsageError("the video fusion scores clip files (`evaluate` on a corpus, or `forensics detect`), "
                         "not decoded frames")

    def evaluate(self, corpus, split: str = "test") -> dict:
        """Clip-level numbers on `split`, by the `forensics detect` path, at the fusion's threshold."""
        rows = corpus.select(split=split, modality="video")
        if not rows:
            return {"split": split, "n": 0}
        L = clip_logits(self.components, corpus, rows)
        X = np.stack([L[n] for n in self.inputs], 1)
        keep = ~np.isnan(X).any(1)
        rows = [r for r, k in zip(rows, keep) if k]
        X, y = X[keep], cal.labels(rows)
        z = self.fused_logit(X)
        out = {"split": split, "unit": "clip", "n_unscored": int((~keep).sum()),
               **metrics.binary_metrics(y, z, self.calibrate(z), self.threshold)}
        arch = np.array([cal.arch_of(r) for r in rows])
        out["auc_by_architecture"] = {a: metrics.auc(y[(arch == a) | (y == 0)], z[(arch == a) | (y == 0)])
                                      for a in sorted(set(arch.tolist()) - {"real"})}
        out["auc_by_input"] = {n: metrics.auc(y, X[:, i]) for i, n in enumerate(self.inputs)}
        # what `detect` would say: `uncertain` within UNCERTAIN_LOGIT of the threshold's logit
        from ..detect import verdict

        v = np.array([verdict(float(p), self.threshold) for p in self.calibrate(z)])
        out["verdicts"] = {lab: {k: int(((v == k) & (y == i)).sum()) for k in ("real", "uncertain", "synthetic")}
                           for i, lab in enumerate(("real", "synthetic"))}
        out["weights"] = dict(zip(self.inputs, self.config["weights"]))
        return out

    def load_components(self, detectors=None) -> "VideoFusionDetector":
        self.components = load_components(detectors or {n: n for n in self.inputs}, modality="video")
        return self
