"""Frequency fingerprint detector: spectra of the noise residual, a linear classifier.

Generators leave traces in the frequency domain (Durall et al. 2020, "Watch your up-convolution";
Frank et al. 2020, "Leveraging frequency analysis for deep fake image recognition"): upsampling
layers print periodic peaks, decoders under-produce high frequencies. Per 32x32 patch:

1. Residual r = gray - box3(gray): the content is mostly removed, the generator's noise stays.
2. FFT log power of r, folded over the four quadrants (17x17) and azimuthally averaged (16 bins).
3. Block DCT (8x8) log magnitudes of the gray patch, averaged over blocks (64), where JPEG and
   upsampling grids show up.
4. Per-channel residual energy and cross-channel residual correlation (6): demosaicing couples
   a camera's channels, decoders couple them differently.

A standardized logistic regression gives real/synthetic; a multinomial one attributes the
architecture. Platt scaling on the validation split calibrates the patch logit, and the default
threshold is set at a stated false-positive rate on real validation images. Training applies
the artifact detector's augmentation (random resize, blur and JPEG re-compression, `AUGMENT`) to
*both* classes, so processing is not a shortcut feature. The attribution model's classes are
`real` and every architecture of the training corpus. Fitting also records the mean residual
spectrum of each architecture (`spectra.safetensors`, drawn in `spectra.png`).
Any frame size: non-overlapping 32x32 patches (a capped grid) give a heatmap; the frame logit is
the mean patch logit, the clip logit the mean frame logit. A side under 32 px is upsampled.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file

from ..errors import CheckpointError, UsageError
from . import calibration as cal
from .base import Detector, Evidence, Media, memo_frames, platt_fit, register, sigmoid, threshold_at_fpr
from .calibration import fit_small

P = 32
MAX_PATCHES = 256


def _box3(x: np.ndarray) -> np.ndarray:
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    acc = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            acc += pad[:, dy:dy + x.shape[1], dx:dx + x.shape[2]]
    return acc / 9.0


_rr = np.sqrt(np.add.outer(np.minimum(np.arange(P), P - np.arange(P)) ** 2,
                           np.minimum(np.arange(P), P - np.arange(P)) ** 2))
_RADIAL_BINS = np.minimum((_rr / (P / 2 * np.sqrt(2)) * 16).astype(int), 15)
_DCT_ZIGZAG = np.argsort(np.add.outer(np.arange(8), np.arange(8)).ravel(), kind="stable")


def features(patches: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) uint8 → (N, 375) float32 features."""
    x = patches.astype(np.float32) / 255.0
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)             # (N, 32, 32)
    r = gray - _box3(gray)
    power = np.abs(np.fft.fft2(r)) ** 2                                 # (N, 32, 32)
    logp = np.log(power + 1e-8)
    neg = (P - np.arange(17)) % P
    q = (logp[:, :17, :17] + logp[:, neg][:, :, :17] + logp[:, :17][:, :, neg] + logp[:, neg][:, :, neg]) / 4
    radial = np.stack([logp[:, _RADIAL_BINS == b].mean(1) for b in range(16)], 1)
    blocks = gray.reshape(-1, 4, 8, 4, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 8, 8)
    dct = np.stack([cv2.dct(b) for b in blocks]).reshape(len(x), 16, 64)
    dct = np.log(np.abs(dct) + 1e-4).mean(1)[:, _DCT_ZIGZAG]            # (N, 64)
    rc = x - np.stack([_box3(x[..., c]) for c in range(3)], -1)          # (N, 32, 32, 3)
    rc = rc.reshape(len(x), -1, 3)
    std = rc.std(1) + 1e-6
    zc = (rc - rc.mean(1, keepdims=True)) / std[:, None, :]
    corr = np.stack([(zc[..., 0] * zc[..., 1]).mean(1), (zc[..., 0] * zc[..., 2]).mean(1),
                     (zc[..., 1] * zc[..., 2]).mean(1)], 1)
    return np.concatenate([q.reshape(len(x), -1), radial, dct, np.log(std), corr], 1).astype(np.float32)


def patch_grid(frame: np.ndarray, max_patches: int = MAX_PATCHES) -> tuple[np.ndarray, tuple[int, int]]:
    """Non-overlapping 32x32 patches on a grid (subsampled evenly past `max_patches`)."""
    frame = fit_small(frame)  # a side under 32 px: upsampled (bicubic), as the training resizes do
    h, w = frame.shape[:2]
    ys = np.arange(0, h - P + 1, P)
    xs = np.arange(0, w - P + 1, P)
    keep = int(np.ceil(np.sqrt(len(ys) * len(xs) / max_patches)))
    ys, xs = ys[::keep], xs[::keep]
    patches = np.stack([frame[y:y + P, x:x + P] for y in ys for x in xs])
    return patches, (len(ys), len(xs))


def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


# Augmentation of the upgraded detector (the artifact detector's recipe, milder): both classes.
AUGMENT = {"p_resize": 0.25, "scale": [0.5, 2.0], "p_blur": 0.1, "blur_sigma": [0.3, 1.0],
           "p_jpeg": 0.3, "jpeg_quality": [60, 100], "hflip": False}


def _augmented_patches(corpus, rows: list[dict], rng: np.random.Generator, aug: dict,
                       copies: int = 1) -> np.ndarray:
    """`copies` independently augmented 32x32 patches per row, row-major: (len(rows) * copies, 32, 32, 3)."""
    from .artifact import augment

    out = []
    for r, frames in corpus.iter_frames(rows):
        for _ in range(copies):
            out.append(augment(frames[int(rng.integers(0, len(frames)))], rng, aug))
    return np.stack(out)


def residual_spectrum(patches: np.ndarray) -> np.ndarray:
    """Mean log power spectrum of the noise residual (gray - box3(gray)) of 32x32 patches,
    centred (DC in the middle): the generator's average fingerprint."""
    x = patches.astype(np.float32) / 255.0
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    r = gray - _box3(gray)
    return np.fft.fftshift(np.log(np.abs(np.fft.fft2(r)) ** 2 + 1e-8).mean(0)).astype(np.float32)


def spectra_by_architecture(corpus, rows: list[dict], per_class: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Average residual spectrum per architecture ('real' for real items), up to `per_class` items each."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(cal.arch_of(r), []).append(r)
    out = {}
    for a in sorted(by, key=lambda k: (k != "real", k)):
        rs = [by[a][i] for i in rng.permutation(len(by[a]))[:per_class]]
        patches = [patch_grid(frames[0])[0][0] for _, frames in corpus.iter_frames(rs)]
        out[a] = residual_spectrum(np.stack(patches))
    return out


def spectra_figure(spectra: dict[str, np.ndarray]) -> np.ndarray:
    from .. import plots

    return plots.image_grid(spectra, title="mean log power spectrum of the noise residual (DC at centre)")


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else float("nan")


@register
class FrequencyDetector(Detector):
    name = "frequency"

    def __init__(self, config=None, arrays: dict[str, np.ndarray] | None = None):
        super().__init__(config)
        self.a = arrays or {}
        self.spectra: dict[str, np.ndarray] = {}

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, corpus, *, seed: int = 0, C: float = 0.05, fpr: float = 0.05,
            max_per_class: int = 20000, augmentation: dict | None = None, copies: int = 2,
            progress=None) -> "FrequencyDetector":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(seed)
        train = corpus.select(split="train")
        val = corpus.select(split="val")
        for what, rows in (("train", train), ("val", val)):
            labels = {r["label"] for r in rows}
            if labels != {"real", "synthetic"}:
                raise UsageError(f"the corpus's {what} split needs real and synthetic items; has {sorted(labels)}")
        # Balance classes; cap per class.
        by = {lab: [r for r in train if r["label"] == lab] for lab in ("real", "synthetic")}
        rows = []
        for lab, rs in by.items():
            idx = rng.permutation(len(rs))[:max_per_class]
            rows += [rs[i] for i in idx]
        aug = {**AUGMENT, **(augmentation or {})}
        X = features(_augmented_patches(corpus, rows, rng, aug, copies))
        y = np.repeat(np.array([r["label"] == "synthetic" for r in rows], np.int64), copies)
        arch = np.repeat(np.array([cal.arch_of(r) for r in rows]), copies)
        scaler = StandardScaler().fit(X)
        Xs = scaler.transform(X)
        clf = LogisticRegression(C=C, max_iter=3000).fit(Xs, y)
        classes = sorted(set(arch.tolist()))
        arrays = {"mean": scaler.mean_.astype(np.float32), "scale": scaler.scale_.astype(np.float32),
                  "coef": clf.coef_[0].astype(np.float32), "intercept": clf.intercept_.astype(np.float32)}
        if len(classes) > 2:
            att = LogisticRegression(C=C, max_iter=3000).fit(Xs, arch)
            arrays["att_coef"] = att.coef_.astype(np.float32)
            arrays["att_intercept"] = att.intercept_.astype(np.float32)
            classes = [str(c) for c in att.classes_]
        self.a = arrays
        self.config = {"patch": P, "classes": classes, "C": C, "seed": seed, "augmentation": aug, "copies": copies,
                       "calibration": [1.0, 0.0]}
        self.spectra = spectra_by_architecture(corpus, train, seed=seed)
        # Calibrate (Platt) and set the threshold on the validation split, one item = one frame.
        vs, vy = self.item_logits(cal.item_frames(corpus, val)), cal.labels(val)
        self.config["calibration"] = list(platt_fit(vs, vy))
        pv = self._calibrate(vs)
        thr = threshold_at_fpr(pv[vy == 0], fpr)
        self.config.update({
            "threshold": thr, "threshold_fpr": fpr,
            "threshold_rule": f"max(0.5, the calibrated p exceeded by {fpr:.0%} of real validation images)",
            "val": {"fpr_at_threshold": float((pv[vy == 0] >= thr).mean()) if (vy == 0).any() else None,
                    "auc": _auc(vy, vs), "n_real": int((vy == 0).sum()), "n_synthetic": int(vy.sum()),
                    "tpr_at_threshold": float((pv[vy == 1] >= thr).mean()) if vy.sum() else None},
            "train": {"n": int(len(y)), "n_features": int(X.shape[1])},
        })
        return self

    def evaluate(self, corpus, split: str = "test") -> dict:
        """Test-split numbers, attribution accuracy included (calibration.evaluate_detector)."""
        return cal.evaluate_detector(self, corpus, split)

    # -- item-level interface (evaluation, fusion) ------------------------------------------------
    def item_logits(self, items) -> np.ndarray:
        """One raw logit per item ((T, H, W, 3) frames): the mean frame logit."""
        return np.array([np.mean([self._frame_logit(f)[0] for f in frames]) for frames in items])

    def calibrate(self, z):
        return self._calibrate(z)

    def item_attribution(self, items) -> np.ndarray:
        """(N, classes) attribution probabilities (softmax of the multinomial model)."""
        out = []
        for frames in items:
            feats = np.mean([self._frame_logit(f)[2].mean(0) for f in frames], 0)
            lz = feats @ self.a["att_coef"].T + self.a["att_intercept"]
            e = np.exp(lz - lz.max())
            out.append(e / e.sum())
        return np.array(out)

    # -- scoring -----------------------------------------------------------------------------
    def _patch_logits(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Xs = (features(patches) - self.a["mean"]) / self.a["scale"]
        return Xs @ self.a["coef"] + self.a["intercept"][0], Xs

    def _frame_logit(self, frame: np.ndarray, max_patches: int = MAX_PATCHES):
        patches, shape = patch_grid(frame, max_patches)
        z, Xs = self._patch_logits(patches)
        return float(z.mean()), z.reshape(shape), Xs

    def _calibrate(self, z):
        a, b = self.config.get("calibration", [1.0, 0.0])
        return sigmoid(a * np.asarray(z) + b)

    def score(self, media: Media) -> Evidence:
        if not self.a:
            raise CheckpointError("the frequency detector is not fitted")
        frame_z, heat, feats = [], None, []
        cap = getattr(media, "max_patches", None) or MAX_PATCHES
        outs = memo_frames((self.name, id(self), cap), media.frames, lambda fr: [self._frame_logit(f, cap) for f in fr])
        for z, zmap, Xs in outs:
            frame_z.append(z)
            feats.append(Xs.mean(0))
            if heat is None:
                heat = self._calibrate(zmap)
        z = float(np.mean(frame_z))
        notes = []
        h, w = media.frames[0].shape[:2]
        if min(h, w) < P:
            notes.append(f"frame {w}x{h} is smaller than the {P}x{P} patch; upsampled, low confidence")
        full = (max(h, P) // P) * (max(w, P) // P)
        if heat.size < full:
            notes.append(f"{heat.size} of {full} patches per frame (an evenly spread "
                         f"{heat.shape[0]}x{heat.shape[1]} subgrid)")
        attribution = None
        if "att_coef" in self.a:
            lz = np.mean(feats, 0) @ self.a["att_coef"].T + self.a["att_intercept"]
            e = np.exp(lz - lz.max())
            attribution = {c: float(v) for c, v in zip(self.config["classes"], e / e.sum())}
        per_frame = [float(p) for p in self._calibrate(frame_z)] if media.modality == "video" else None
        return Evidence(self.name, float(self._calibrate(z)), z, per_frame=per_frame, heatmap=heat,
                        attribution=attribution, notes=notes)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._write_arrays(d, self.a)
        if getattr(self, "spectra", None):
            self._write_arrays(d, self.spectra, "spectra.safetensors")
            from .. import plots

            plots.save(spectra_figure(self.spectra), d / "spectra.png")
        self._write_config(d)
        return d

    @classmethod
    def load(cls, directory) -> "FrequencyDetector":
        d = Path(directory)
        cfg, arrays = cls.read_checkpoint(d, ("mean", "scale", "coef", "intercept"))
        det = cls(cfg, arrays)
        det.directory = d
        if (d / "spectra.safetensors").is_file():
            try:
                det.spectra = dict(load_file(str(d / "spectra.safetensors")))
            except (OSError, ValueError):
                det.spectra = {}
        return det

