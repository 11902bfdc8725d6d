"""Temporal-inconsistency detector: does the clip move like a camera filming a scene?

Synthetic video betrays itself over time: flicker, motion that no optical flow explains, texture
that re-forms in place instead of moving with the scene. Per pair of frames about 1/8 s apart
(frames are first area-downscaled so the short side is 32 px, the scale of the training clips;
this also makes optical flow nearly free on 720p video):

1. Dense optical flow both ways (Farnebäck 2003, OpenCV), frame b warped onto frame a:
   warping residual r = a - b∘(x + F_ab(x)) on the pixels whose flow stays inside the frame.
2. Hand-crafted evidence per pair: log mean |r| (absolute, relative to the raw difference |a-b|,
   relative to a's texture |∇a|), flow magnitude and roughness |∇F|, forward-backward flow
   inconsistency |F_ab + F_ba∘(x + F_ab)| (Sundaram et al. 2010's occlusion test), global
   brightness and chroma flicker (|Δ mean| and the second difference of the mean over time), the
   low-frequency share of r (local flicker vs sensor noise), the correlation of |r| with edges.
3. Over each run of consecutive pairs: the temporal spectrum of the residual maps (rFFT over t at
   every pixel, averaged): the DC share and the share of the upper half of the frequencies
   (alternating flicker) — and the lag-1 correlation of consecutive residual maps (≈ -0.5 for
   sensor noise on a steady camera, > 0 for slow morphs, ≈ -1 for frame-to-frame flicker).
4. A small learned temporal model over each run's sequence of standardized pair features: a 1-D
   convolution (kernel 3, replicate padding) → GELU → a per-pair logit; the clip logit is the
   mean pair logit over all runs (trained with torch, run in numpy).
5. Platt scaling of the clip logit on the validation split; the default threshold is set at a
   stated false-positive rate on real validation clips. Per-pair probabilities use the same map.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ..errors import CheckpointError, UsageError
from .base import Detector, Evidence, Media, memo_run, register, sigmoid

WORK = 32          # short side of the working frames (the corpus clips are 32x32)
RUN = 8            # frames per run (7 pairs), at training and at detection
TARGET_FPS = 8.0   # pairs are ~1/8 s apart (the corpus clips are 8 fps)
EPS = 1e-3
FEATURES = (
    "log_warp_residual", "log_abs_difference", "log_residual_over_difference", "log_residual_over_texture",
    "log_texture", "log_flow_magnitude", "log_flow_roughness", "log_fb_inconsistency",
    "log_brightness_flicker", "log_chroma_flicker", "log_brightness_second_difference",
    "residual_lowpass_share", "residual_edge_correlation", "residual_lag1_correlation",
    "log_residual_spectrum_dc_share", "log_residual_spectrum_high_share",
)
D = len(FEATURES)
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


# ---------------------------------------------------------------------------------------------
# Hand-crafted evidence


def working(frame: np.ndarray, size: int = WORK) -> np.ndarray:
    """RGB uint8 (H, W, 3) → float32 in [0, 1], area-downscaled so the short side is `size`."""
    h, w = frame.shape[:2]
    s = min(h, w)
    if s >= 2 * size:
        # Crop to a multiple of an integer factor k (a few border pixels) so the area filter
        # takes OpenCV's fast integer-scale path: ~10x faster on 720p than a fractional scale.
        k = s // size
        hh, ww = (h // k) * k, (w // k) * k
        y0, x0 = (h - hh) // 2, (w - ww) // 2
        frame = cv2.resize(frame[y0:y0 + hh, x0:x0 + ww], (ww // k, hh // k), interpolation=cv2.INTER_AREA)
        h, w = frame.shape[:2]
        s = min(h, w)
    if s > size:
        k = size / s
        frame = cv2.resize(frame, (max(size, round(w * k)), max(size, round(h * k))), interpolation=cv2.INTER_AREA)
    return frame.astype(np.float32) / 255.0


def _flow(a8: np.ndarray, b8: np.ndarray) -> np.ndarray:
    """Farnebäck flow a → b (H, W, 2), in pixels; parameters for small frames."""
    return cv2.calcOpticalFlowFarneback(a8, b8, None, pyr_scale=0.5, levels=2, winsize=7, iterations=3,
                                        poly_n=5, poly_sigma=1.1, flags=0)


def _warp(img: np.ndarray, flow: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    h, w = img.shape[:2]
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    valid[:1], valid[-1:], valid[:, :1], valid[:, -1:] = False, False, False, False
    return out, valid


def _median(values) -> float:
    """np.median of a few numbers without np.median, whose first call imports numpy.ma (~20 ms
    of `detect`'s start-up)."""
    a = np.sort(np.asarray(values, np.float64))
    return float((a[(len(a) - 1) // 2] + a[len(a) // 2]) / 2)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 1e-12 else 0.0


def run_features(frames: list[np.ndarray]) -> tuple[np.ndarray, dict]:
    """Features (P, D) of the P = n-1 consecutive pairs of a run of working frames, and raw
    summaries for the evidence JSON."""
    n = len(frames)
    if n < 2:
        return np.zeros((0, D), np.float32), {}
    h, w = frames[0].shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    gray = [f @ _GRAY for f in frames]                                        # (H, W) in [0, 1]
    g8 = [np.clip(g * 255 + 0.5, 0, 255).astype(np.uint8) for g in gray]
    mean = np.array([g.mean() for g in gray])                                 # (n,)
    chroma = np.array([[(f[..., 0] - f[..., 1]).mean(), (f[..., 2] - f[..., 1]).mean()] for f in frames])
    P = n - 1
    X = np.zeros((P, D), np.float32)
    R = np.zeros((P, h, w), np.float32)
    summary = {"warp_residual": [], "flow": [], "fb": [], "flicker": []}
    for i in range(P):
        a, b = gray[i], gray[i + 1]
        fab, fba = _flow(g8[i], g8[i + 1]), _flow(g8[i + 1], g8[i])
        bw, valid = _warp(b, fab, gx, gy)                                     # 1. b warped onto a
        if valid.sum() < 0.25 * h * w:                                        # flow left the frame: use it all
            valid = np.ones_like(valid)
        r = np.where(valid, a - bw, 0.0).astype(np.float32)
        R[i] = r
        m = valid.sum()
        res = np.abs(r).sum() / m
        dif = np.abs(a - b)[valid].mean()
        ga = np.abs(np.diff(a, axis=1)).mean() + np.abs(np.diff(a, axis=0)).mean()
        mag = np.sqrt((fab ** 2).sum(-1))
        rough = (np.abs(np.diff(fab, axis=0)).mean() + np.abs(np.diff(fab, axis=1)).mean())
        fba_w, _ = _warp(fba, fab, gx, gy)                                    # F_ba at x + F_ab(x)
        fb = np.sqrt(((fab + fba_w) ** 2).sum(-1))[valid].mean()
        low = cv2.blur(r, (5, 5))
        edges = np.zeros_like(a)
        edges[:, 1:] += np.abs(np.diff(a, axis=1))
        edges[1:, :] += np.abs(np.diff(a, axis=0))
        X[i, 0] = np.log(res + EPS)
        X[i, 1] = np.log(dif + EPS)
        X[i, 2] = np.log((res + EPS) / (dif + EPS))
        X[i, 3] = np.log((res + EPS) / (ga + EPS))
        X[i, 4] = np.log(ga + EPS)
        X[i, 5] = np.log(mag.mean() + 0.01)
        X[i, 6] = np.log(rough + EPS)
        X[i, 7] = np.log(fb + 0.01)
        X[i, 8] = np.log(abs(mean[i + 1] - mean[i]) + 1e-4)
        X[i, 9] = np.log(np.abs(chroma[i + 1] - chroma[i]).sum() + 1e-4)
        X[i, 11] = float((low ** 2).sum() / max((r ** 2).sum(), 1e-12))
        X[i, 12] = _corr(np.abs(r)[valid], edges[valid])
        summary["warp_residual"].append(res * 255)
        summary["flow"].append(float(mag.mean()))
        summary["fb"].append(float(fb))
        summary["flicker"].append(abs(mean[i + 1] - mean[i]) * 255)
    # Second difference of the mean brightness at each frame (defined inside the run).
    d2 = np.zeros(n)
    if n >= 3:
        d2[1:-1] = np.abs(mean[2:] - 2 * mean[1:-1] + mean[:-2])
        d2[0], d2[-1] = d2[1], d2[-2]
    X[:, 10] = np.log((d2[:-1] + d2[1:]) / 2 + 1e-4)
    # Lag-1 correlation of consecutive residual maps, per pair the mean of its neighbours'.
    c = np.array([_corr(R[i], R[i + 1]) for i in range(P - 1)]) if P >= 2 else np.zeros(0)
    for i in range(P):
        nb = [c[j] for j in (i - 1, i) if 0 <= j < len(c)]
        X[i, 13] = float(np.mean(nb)) if nb else 0.0
    # Temporal spectrum of the residual maps (run-level, broadcast to its pairs).
    spec = (np.abs(np.fft.rfft(R, axis=0)) ** 2).mean(axis=(1, 2))           # (P//2 + 1,)
    tot = spec.sum() + 1e-12
    hi = spec[max(1, (len(spec) + 1) // 2):].sum() if len(spec) > 1 else 0.0
    X[:, 14] = np.log(spec[0] / tot + 1e-4)
    X[:, 15] = np.log(hi / tot + 1e-4)
    summary = {"warp_residual_gray_levels": _median(summary["warp_residual"]),
               "flow_px": _median(summary["flow"]),
               "fb_inconsistency_px": _median(summary["fb"]),
               "flicker_gray_levels": _median(summary["flicker"]),
               "residual_lag1_correlation": float(np.mean(c)) if len(c) else None,
               "residual_spectrum_high_share": float(hi / tot)}
    return X, summary


def split_runs(index: list[int] | None, gap: int, n: int, run: int = RUN) -> list[list[int]]:
    """Positions (into the frame list) of runs: maximal chains of frames `gap` apart, cut into
    pieces of at most `run` frames (a last piece of under 3 frames joins the one before)."""
    if n < 2:
        return []
    index = list(range(n)) if index is None else list(index)
    # Follow frame numbers, not list order: on a short clip the planned runs can interleave
    # (0, 2, 4, … and 1, 3, 5, … at gap 2), and neighbours in the list are then not `gap` apart.
    at = {f: k for k, f in enumerate(index)}
    chains = []
    for k in range(n):
        if index[k] - gap in at:
            continue                                                   # not the start of a chain
        cur = [k]
        while index[cur[-1]] + gap in at:
            cur.append(at[index[cur[-1]] + gap])
        chains.append(cur)
    runs = []
    for ch in chains:
        pieces = [ch[i:i + run] for i in range(0, len(ch), run)]
        if len(pieces) > 1 and len(pieces[-1]) < 3:
            pieces[-2] = pieces[-2] + pieces[-1]
            pieces.pop()
        runs += [p for p in pieces if len(p) >= 2]
    return runs


def clip_features(frames: list[np.ndarray], index: list[int] | None = None, gap: int = 1
                  ) -> tuple[list[np.ndarray], list[tuple[int, int]], dict]:
    """Per run: its (P, D) features; the frame pairs (as frame numbers); a summary."""
    idx = list(range(len(frames))) if index is None else list(index)
    feats, pairs, sums = [], [], []
    for r in split_runs(idx, gap, len(frames)):
        X, s = memo_run("temporal", [frames[k] for k in r], lambda fr: run_features([working(f) for f in fr]))
        feats.append(X)
        pairs += [(idx[r[j]], idx[r[j + 1]]) for j in range(len(r) - 1)]
        sums.append(s)
    summary = {}
    if sums:
        for k in sums[0]:
            vals = [s[k] for s in sums if s.get(k) is not None]
            summary[k] = round(_median(vals), 4) if vals else None
    return feats, pairs, summary


# ---------------------------------------------------------------------------------------------
# The learned temporal model (numpy inference)


def _shift_stack(Z: np.ndarray) -> np.ndarray:
    """(P, D) → (P, 3D): [z_{i-1}, z_i, z_{i+1}] with replicate padding (a kernel-3 conv as a matmul)."""
    prev = np.concatenate([Z[:1], Z[:-1]], 0)
    nxt = np.concatenate([Z[1:], Z[-1:]], 0)
    return np.concatenate([prev, Z, nxt], 1)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


class _Augment:
    """Train-time changes that a clip survives with its label.

    Both classes: sensor noise, blur, gamma, contrast (the same for every frame of a clip),
    fades (a gain ramp over the clip), and a lower frame rate (every other frame: the same
    footage with twice the motion per pair; the corpus's virtual camera moves at most ~1.3 px
    per 32-px frame, a pan or a passing car in real footage several times that).
    Real clips only: objects moving on their own in front of the scene, as real footage has
    more than camera motion: one or two patches of other real frames, of any size from a fifth
    of the frame to larger than it (a car or a person close to the camera), on straight paths
    at up to ~4 px per frame, occluding what is behind them; some out of focus against a sharp
    scene, or sharp against a defocused one (a shallow depth of field); some changing in
    brightness as they move (light and reflections on a moving surface)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.pool: list[np.ndarray] = []        # real frames to cut objects from

    def _moving_objects(self, frames: np.ndarray) -> np.ndarray:
        rng = self.rng
        T, h, w = frames.shape[:3]
        out = frames.astype(np.float32)
        if rng.random() < 0.25:  # shallow depth of field: the scene behind the objects is soft
            sigma = rng.uniform(0.6, 1.6)
            out = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in out])
        for _ in range(1 if rng.random() < 0.7 else 2):
            donor = self.pool[int(rng.integers(len(self.pool)))].astype(np.float32)
            size = math.exp(rng.uniform(math.log(max(4, h / 5)), math.log(1.25 * h)))
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            oh, ow = max(3, int(round(size / math.sqrt(aspect)))), max(3, int(round(size * math.sqrt(aspect))))
            # cut from the donor (resized when the object is larger than it)
            dh, dw = donor.shape[:2]
            k = max(oh / dh, ow / dw, 1.0)
            if k > 1:
                donor = cv2.resize(donor, (int(math.ceil(dw * k)), int(math.ceil(dh * k))), interpolation=cv2.INTER_LINEAR)
                dh, dw = donor.shape[:2]
            y0, x0 = int(rng.integers(0, dh - oh + 1)), int(rng.integers(0, dw - ow + 1))
            patch = donor[y0:y0 + oh, x0:x0 + ow]
            if rng.random() < 0.25:  # out of focus in front of a sharp scene
                patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.6, 1.6))
            speed = math.exp(rng.uniform(math.log(0.3), math.log(4.0)))
            ang = rng.uniform(0, 2 * math.pi)
            vy, vx = speed * math.sin(ang), speed * math.cos(ang)
            # start so that the object crosses the frame during the clip
            py = rng.uniform(-oh / 2, h - oh / 2) - vy * T / 2
            px = rng.uniform(-ow / 2, w - ow / 2) - vx * T / 2
            gain = np.linspace(1.0, rng.uniform(0.85, 1.15), T) if rng.random() < 0.3 else np.ones(T)
            for t in range(T):
                yy, xx = int(round(py + vy * t)), int(round(px + vx * t))
                ys, xs = max(0, yy), max(0, xx)
                ye, xe = min(h, yy + oh), min(w, xx + ow)
                if ye > ys and xe > xs:
                    out[t, ys:ye, xs:xe] = patch[ys - yy:ye - yy, xs - xx:xe - xx] * gain[t]
        return np.clip(np.round(out), 0, 255).astype(np.uint8)

    def __call__(self, frames: np.ndarray, real: bool = False) -> np.ndarray:
        rng = self.rng
        if len(frames) >= 6 and rng.random() < 0.3:
            frames = frames[::2]
        if real:
            if self.pool and rng.random() < 0.5:
                frames = self._moving_objects(frames)
            self.pool.append(frames[0])
            self.pool = self.pool[-64:]
        x = frames.astype(np.float32)
        if rng.random() < 0.5:
            x = x * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20)
        if rng.random() < 0.25:  # a fade or an exposure ramp: a smooth gain change over the clip
            g0, g1 = rng.uniform(0.3, 1.0), rng.uniform(0.8, 1.1)
            ramp = np.linspace(g0, g1, len(x)) if rng.random() < 0.5 else np.linspace(g1, g0, len(x))
            x = x * ramp[:, None, None, None].astype(np.float32)
        if rng.random() < 0.3:
            s = rng.uniform(0.4, 0.9)
            x = np.stack([cv2.GaussianBlur(f, (0, 0), s) for f in x])
        if rng.random() < 0.5:
            x = x + rng.normal(0, rng.uniform(0.5, 4.0), x.shape).astype(np.float32)
        if rng.random() < 0.3:
            g = rng.uniform(0.7, 1.4)
            x = 255 * (np.clip(x, 0, 255) / 255) ** g
        return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _gap_of(fps) -> int:
    return max(1, int(round(float(fps) / TARGET_FPS))) if fps else 1


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(set(np.asarray(y).tolist())) == 2 else float("nan")


class TemporalEvidence(Evidence):
    """Evidence plus the frame pairs behind `per_frame` (one entry per pair) and a summary of
    the hand-crafted measurements."""

    def __init__(self, *args, pairs=None, measures=None, **kw):
        super().__init__(*args, **kw)
        self.pairs, self.measures = pairs or [], measures or {}

    def to_json(self) -> dict:
        d = super().to_json()
        if self.per_frame is not None:
            d["per_pair"] = d.pop("per_frame")
            d["per_frame"] = d["per_pair"]      # the shared key; here one value per frame pair
        d["pairs"] = [list(p) for p in self.pairs]
        d["measures"] = self.measures
        return d


@register
class TemporalDetector(Detector):
    name = "temporal"
    modalities = ("video",)
    uses_frame_runs = True      # detect passes it every sampled frame (per-frame detectors get a subset)

    def __init__(self, config=None, arrays: dict[str, np.ndarray] | None = None):
        super().__init__(config)
        self.a = arrays or {}

    # -- scoring -----------------------------------------------------------------------------
    def _pair_logits(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.a["mean"]) / self.a["scale"]                             # (P, D)
        H = _gelu(_shift_stack(Z) @ self.a["w1"] + self.a["b1"])               # (P, hidden)
        return H @ self.a["w2"] + self.a["b2"][0]                              # (P,)

    def _calibrate(self, z):
        a, b = self.config.get("calibration", [1.0, 0.0])
        return sigmoid(a * np.asarray(z, np.float64) + b)

    def clip_logit(self, frames, index=None, gap=1) -> tuple[float | None, np.ndarray, list, dict]:
        feats, pairs, summary = clip_features(frames, index, gap)
        if not feats:
            return None, np.zeros(0), [], summary
        z = np.concatenate([self._pair_logits(X) for X in feats])
        return float(z.mean()), z, pairs, summary

    def score(self, media: Media) -> Evidence | None:
        """Clip and per-pair evidence; None when the media has no pair of frames to compare."""
        if not self.a:
            raise CheckpointError("the temporal detector is not fitted")
        index = getattr(media, "frame_index", None)
        gap = getattr(media, "pair_gap", None) or (1 if index is not None else _gap_of(media.fps))
        frames, apart = media.frames, gap       # apart: frames of the video between a pair's two
        if index is None and gap > 1:  # frames given as a plain consecutive list: take every gap-th
            frames, gap = frames[::gap], 1
        z, zp, pairs, summary = self.clip_logit(frames, index, gap)
        if z is None:
            return None
        notes = []
        h, w = frames[0].shape[:2]
        if min(h, w) > WORK:
            notes.append(f"frames downscaled from {w}x{h} to a {WORK}-px short side for optical flow")
        notes.append(f"{len(zp)} frame pairs {apart} frame(s) apart; per_frame holds one probability per pair")
        seconds = apart / media.fps if media.fps else None
        calibrated = seconds is None or 0.5 / TARGET_FPS <= seconds <= 2 / TARGET_FPS
        if not calibrated:
            # e.g. `detect --stride 1` on 30 fps video, or a 2 fps clip: motion per pair differs
            # from training by more than 2x, and so may the calibration
            notes.append(f"pairs are {seconds:.3f} s apart; the detector was trained on pairs ~{1 / TARGET_FPS:.3f} s "
                         "apart, so its calibration may not hold")
        # The clip score is a mean over pairs, calibrated on clips of at least one whole run: a
        # mean of fewer pairs (a clip under a second) varies more than the calibration assumes.
        min_pairs = int(self.config.get("run_frames", 8)) - 1
        if len(zp) < min_pairs:
            calibrated = False
            notes.append(f"only {len(zp)} frame pairs; the calibration was fitted on clips of at least {min_pairs} "
                         f"(a run of {min_pairs + 1} frames), so it may not hold")
        return TemporalEvidence(self.name, float(self._calibrate(z)), z,
                                per_frame=[float(p) for p in self._calibrate(zp)], notes=notes,
                                calibrated=calibrated, pairs=pairs, measures=summary)

    # -- fitting -----------------------------------------------------------------------------
    def _corpus_runs(self, corpus, rows, rng=None, augment: bool = False):
        """Features per run of every video row: (list of (P, D), clip id per run, labels per clip)."""
        aug = _Augment(rng) if augment else None
        runs, owner, labels, archs = [], [], [], []
        for k, (r, frames) in enumerate(corpus.iter_frames(rows)):
            gap = _gap_of(r.get("fps"))
            frames = np.asarray(frames)[::gap]
            versions = [frames] + ([aug(frames, real=r["label"] == "real")] if aug is not None else [])
            for v in versions:
                feats, _, _ = clip_features(list(v))
                for X in feats:
                    runs.append(X)
                    owner.append(len(labels))
                labels.append(int(r["label"] == "synthetic"))
                archs.append(r.get("architecture") or r["family"] if r["label"] == "synthetic" else "real")
        return runs, np.array(owner), np.array(labels), archs

    def fit(self, corpus, *, seed: int = 0, fpr: float = 0.05, hidden: int = 16, epochs: int = 400,
            weight_decay: float = 1e-3, progress=None) -> "TemporalDetector":
        import torch

        rng = np.random.default_rng(seed)
        rows = {sp: corpus.select(split=sp, modality="video") for sp in ("train", "val")}
        for sp, rs in rows.items():
            labels = {r["label"] for r in rs}
            if labels != {"real", "synthetic"}:
                raise UsageError(f"the corpus's {sp} split needs real and synthetic video clips; has {sorted(labels) or 'none'}")
        runs, owner, y_clip, archs = self._corpus_runs(corpus, rows["train"], rng, augment=True)
        if not runs:
            raise UsageError("no clip in the train split has two frames to compare")
        allX = np.concatenate(runs)
        mean, scale = allX.mean(0), allX.std(0) + 1e-6
        # 1-D conv temporal model, trained on the runs (one label per run = its clip's label);
        # classes weighted to balance.
        torch.manual_seed(seed)
        Lmax = max(len(X) for X in runs)
        Zs = np.zeros((len(runs), Lmax, D), np.float32)
        M = np.zeros((len(runs), Lmax), np.float32)
        for i, X in enumerate(runs):
            Z = (X - mean) / scale
            Zs[i, :len(X)] = Z
            Zs[i, len(X):] = Z[-1]                                               # replicate pad
            M[i, :len(X)] = 1
        yr = y_clip[owner].astype(np.float32)
        wpos = 0.5 / max(yr.mean(), 1e-6)
        wneg = 0.5 / max(1 - yr.mean(), 1e-6)
        net = torch.nn.Sequential(torch.nn.Conv1d(D, hidden, 3, padding=1, padding_mode="replicate"),
                                  torch.nn.GELU(approximate="tanh"), torch.nn.Conv1d(hidden, 1, 1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=weight_decay)
        Zt = torch.from_numpy(Zs).transpose(1, 2)                                 # (R, D, L)
        Mt, yt = torch.from_numpy(M), torch.from_numpy(yr)
        wt = torch.where(yt > 0, torch.tensor(wpos), torch.tensor(wneg))
        for _ in range(epochs):
            z = net(Zt)[:, 0]                                                    # (R, L) pair logits
            zr = (z * Mt).sum(1) / Mt.sum(1)                                     # run logit
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(zr, yt, reduction="none") * wt).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        w1 = net[0].weight.detach().numpy()                                      # (hidden, D, 3)
        self.a = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
                  # (3D, hidden): rows [prev | current | next] to match _shift_stack
                  "w1": np.concatenate([w1[:, :, 0].T, w1[:, :, 1].T, w1[:, :, 2].T], 0).astype(np.float32),
                  "b1": net[0].bias.detach().numpy().astype(np.float32),
                  "w2": net[2].weight.detach().numpy()[0, :, 0].astype(np.float32),
                  "b2": net[2].bias.detach().numpy().astype(np.float32)}
        self.config = {"work_short_side": WORK, "run_frames": RUN, "target_fps": TARGET_FPS,
                       "features": list(FEATURES), "hidden": hidden, "epochs": epochs,
                       "weight_decay": weight_decay, "seed": seed, "calibration": [1.0, 0.0]}
        train_logits = np.array([self._pair_logits(X).mean() for X in runs])
        # Calibrate (Platt) on validation clips and set the threshold at `fpr` on real ones.
        vs, vy, _ = self._clip_logits(corpus, rows["val"])
        from .base import platt_fit, threshold_at_fpr

        self.config["calibration"] = list(platt_fit(vs, vy))
        pv = self._calibrate(vs)
        thr = threshold_at_fpr(pv[vy == 0], fpr)
        self.config.update({
            "threshold": thr, "threshold_fpr": fpr,
            "val": {"auc": _auc(vy, vs), "n_real": int((vy == 0).sum()), "n_synthetic": int(vy.sum()),
                    "fpr_at_threshold": float((pv[vy == 0] >= thr).mean()),
                    "tpr_at_threshold": float((pv[vy == 1] >= thr).mean()) if vy.sum() else None},
            "train": {"clips": len(rows["train"]), "clip_versions": int(len(y_clip)), "runs": int(len(runs)),
                      "pairs": int(len(allX)), "augmented_copies_per_clip": 1, "run_auc": _auc(yr, train_logits)},
        })
        return self

    def _clip_logits(self, corpus, rows):
        s, y, archs = [], [], []
        for r, frames in corpus.iter_frames(rows):
            gap = _gap_of(r.get("fps"))
            z, _, _, _ = self.clip_logit(list(np.asarray(frames)[::gap]))
            if z is None:
                continue
            s.append(z)
            y.append(int(r["label"] == "synthetic"))
            archs.append(r.get("architecture") or r["family"] if r["label"] == "synthetic" else "real")
        return np.array(s), np.array(y), archs

    def evaluate(self, corpus, split: str = "test") -> dict:
        rows = corpus.select(split=split, modality="video")
        s, y, archs = self._clip_logits(corpus, rows)
        archs = np.array(archs)
        p = self._calibrate(s)
        per_arch = {}
        for a in sorted(set(archs.tolist()) - {"real"}):
            m = (archs == a) | (archs == "real")
            per_arch[a] = {"auc": _auc(y[m], s[m]), "n": int((archs == a).sum()),
                           "tpr_at_threshold": float((p[archs == a] >= self.threshold).mean())}
        return {"split": split, "auc": _auc(y, s), "n_real": int((y == 0).sum()), "n_synthetic": int(y.sum()),
                "fpr_at_threshold": float((p[y == 0] >= self.threshold).mean()) if (y == 0).any() else None,
                "tpr_at_threshold": float((p[y == 1] >= self.threshold).mean()) if y.any() else None,
                "by_architecture": per_arch}

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._write_arrays(d, self.a)
        self._write_config(d)
        return d

    @classmethod
    def load(cls, directory) -> "TemporalDetector":
        d = Path(directory)
        cfg, arrays = cls.read_checkpoint(d, ("mean", "scale", "w1", "b1", "w2", "b2"))
        if arrays["mean"].shape != (D,):
            raise CheckpointError(f"detector checkpoint {d} has {arrays['mean'].shape[0]} features; this code uses {D}")
        det = cls(cfg, arrays)
        det.directory = d
        return det
