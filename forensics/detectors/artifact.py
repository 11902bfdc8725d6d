"""Artifact detector: a small timm ResNet on 32x32 patches, slid over any frame into a heatmap.

Method (Wang et al. 2020, "CNN-generated images are surprisingly easy to spot... for now",
the CNNDetection recipe): a plain CNN trained real-vs-synthetic with blur and JPEG augmentation
applied to *both* classes learns generator traces that survive everyday processing instead of
compression shortcuts. Adapted to this project's 32x32 world:

1. Backbone: timm `ResNet` (BasicBlock, one block per stage, channels 16-32-64-128, "deep" stem
   of width 8), `pretrained=False`. The stem's first convolution runs at stride 1 (its max-pool
   stays), so three convolutions see full-resolution pixels, where upsampling and decoder traces
   live; average pool + linear → per 32x32 patch one real/synthetic logit and, as an auxiliary
   task, attribution logits over `real` + the training architectures (loss: BCE + ½ CE).
2. Training, per patch, identical for both classes: random resize (scale log-uniform in
   [0.5, 2], random interpolation; a result smaller than 32 is upsampled back the way inference
   upsamples small frames, a larger one is randomly cropped), Gaussian blur σ ~ U[0.2, 1.2]
   (p = 0.25), JPEG q ~ U[50, 100] (p = 0.4), horizontal flip. Batches are half real, half
   synthetic with the architectures drawn uniformly, so no generator dominates.
3. Any frame size: 32x32 patches on a grid (stride 32, or 16 when that gives too few patches;
   at most `max_patches`, evenly subsampled) → heatmap of calibrated patch probabilities with the
   frame's aspect; the frame logit is the mean patch logit, a clip's the mean frame logit.
   Frames under 32 px on a side are upsampled (bicubic) to 32.
   Scoring runs the trained weights in numpy (`NumpyPatchNet`, BatchNorm folded), so `detect`
   never imports torch or timm; training uses the timm module (`artifact_torch.PatchNet`).
4. Platt scaling on the validation split; the threshold is set at a stated false-positive rate
   (default 5 %) on real validation items.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..errors import CheckpointError
from . import calibration as cal
from .base import Detector, Evidence, Media, memo_frames, register
from .calibration import fit_small

P = 32
MAX_PATCHES = 256
MIN_GRID = 4            # below this many patches per side, slide at stride 16

BACKBONE = {"arch": "timm.ResNet", "block": "BasicBlock", "layers": [1, 1, 1, 1],
            "channels": [16, 32, 64, 128], "stem_type": "deep", "stem_width": 8,
            "stem_stride": 1, "stem_pool": True}
AUGMENT = {"p_resize": 0.5, "scale": [0.5, 2.0], "p_blur": 0.25, "blur_sigma": [0.2, 1.2],
           "p_jpeg": 0.4, "jpeg_quality": [50, 100], "hflip": True}


def __getattr__(name):
    # The trainable torch/timm network is imported only by whoever asks for it (training, checks).
    if name == "PatchNet":
        from .artifact_torch import PatchNet

        return PatchNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


BN_EPS = 1e-5     # torch.nn.BatchNorm2d's default, which timm's ResNet uses


_WS = threading.local()


def _workspace(n: int) -> np.ndarray:
    """n float32 of this thread's im2col buffer, grown as needed and kept: a fresh 19 MB buffer
    per convolution was first-touched (page-faulted) every time, which made the first scoring
    in a process (every `forensics detect` run) twice as slow as later ones."""
    buf = getattr(_WS, "buf", None)
    if buf is None or buf.size < n:
        buf = _WS.buf = np.empty(n, np.float32)
    return buf[:n]


class NumpyPatchNet:
    """Inference for `artifact_torch.PatchNet` in numpy, from the same state dict.

    Scoring a clip must not pay for importing torch and timm (~4 s and ~4 s of CPU here, more
    than the scoring itself). Eval-mode BatchNorm is an affine map per channel, so it is folded
    into the convolution before it: W' = W·γ/√(σ²+ε), b' = β - μ·γ/√(σ²+ε). Convolutions run as
    one matrix product over im2col columns. Outputs equal the torch module's to
    float32 rounding (tests/test_video_detect.py checks 1e-5 against timm).
    """

    def __init__(self, spec: dict, state: dict[str, np.ndarray], n_classes: int = 0):
        if spec.get("block", "BasicBlock") != "BasicBlock" or spec.get("stem_type", "deep") not in ("deep", ""):
            raise NotImplementedError(f"no numpy inference for block {spec.get('block')!r} / stem {spec.get('stem_type')!r}")
        self.state = st = {k: np.asarray(v) for k, v in state.items()}
        used: set[str] = set()

        def take(key):
            used.add(key)
            return st[key]

        def conv_bn(conv, bn, stride):
            w = take(f"{conv}.weight").astype(np.float64)                   # (O, C, k, k)
            used.add(f"{bn}.num_batches_tracked")
            scale = take(f"{bn}.weight") / np.sqrt(take(f"{bn}.running_var").astype(np.float64) + BN_EPS)
            shift = take(f"{bn}.bias") - take(f"{bn}.running_mean") * scale
            k = w.shape[2]
            if w.shape[3] != k or w.shape[0] != len(scale):
                raise ValueError(f"{conv}: weight {w.shape} does not fit its norm ({len(scale)})")
            wk = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0)       # (k, k, C, O)
            return (np.ascontiguousarray(wk.reshape(k * k * w.shape[1], w.shape[0]), np.float32),
                    shift.astype(np.float32), k, stride, k // 2)

        # 1. stem: a deep stem is conv-bn-relu, conv-bn-relu, conv, then bn1-relu (timm order)
        s0 = int(spec.get("stem_stride", 2))
        if spec.get("stem_type", "deep") == "deep":
            stem = [conv_bn("body.conv1.0", "body.conv1.1", s0), conv_bn("body.conv1.3", "body.conv1.4", 1),
                    conv_bn("body.conv1.6", "body.bn1", 1)]
        else:
            stem = [conv_bn("body.conv1", "body.bn1", s0)]
        self.stem = stem
        self.pool = bool(spec.get("stem_pool", True))
        # 2. stages of BasicBlocks; the first block of stages 2.. halves the resolution
        self.blocks = []
        for i, n in enumerate(spec["layers"]):
            for j in range(int(n)):
                pre = f"body.layer{i + 1}.{j}"
                stride = 2 if (i > 0 and j == 0) else 1
                down = (conv_bn(f"{pre}.downsample.0", f"{pre}.downsample.1", stride)
                        if f"{pre}.downsample.0.weight" in st else None)
                self.blocks.append((conv_bn(f"{pre}.conv1", f"{pre}.bn1", stride),
                                    conv_bn(f"{pre}.conv2", f"{pre}.bn2", 1), down))
        self.head_w = np.ascontiguousarray(take("head.weight").T, np.float32)   # (C, 1 + K)
        self.head_b = take("head.bias").astype(np.float32)
        self.mean = take("mean").reshape(-1).astype(np.float32)
        self.std = take("std").reshape(-1).astype(np.float32)
        if self.head_w.shape[1] != 1 + n_classes:
            raise ValueError(f"head has {self.head_w.shape[1]} outputs; the config's classes need {1 + n_classes}")
        extra = sorted(set(st) - used)
        if extra:
            raise ValueError(f"unexpected keys in the state dict: {', '.join(extra[:5])}")
        self._check_chain()

    def _check_chain(self) -> None:
        """Layers that do not chain fail at load, not on a user's file: each convolution's input
        channels (its columns are k·k·C rows) are the previous output's; a residual sum needs
        equal channels. A static check: a trial forward pass cost `detect` ~10 ms at start-up."""
        def conv(layer, c_in, name):
            w, _, k, _, _ = layer
            if w.shape[0] != k * k * c_in:
                raise ValueError(f"{name}: expects {w.shape[0] // (k * k)} input channels, gets {c_in}")
            return w.shape[1]

        c = len(self.mean)
        for i, layer in enumerate(self.stem):
            c = conv(layer, c, f"stem conv {i}")
        for i, (c1, c2, down) in enumerate(self.blocks):
            out = conv(c2, conv(c1, c, f"block {i} conv1"), f"block {i} conv2")
            skip = c if down is None else conv(down, c, f"block {i} downsample")
            if out != skip:
                raise ValueError(f"block {i}: residual of {skip} channels added to {out}")
            c = out
        if self.head_w.shape[0] != c:
            raise ValueError(f"head expects {self.head_w.shape[0]} channels, gets {c}")

    @staticmethod
    def _conv(x: np.ndarray, layer, relu: bool) -> np.ndarray:
        """x (C, B, H, W) → (O, B, Ho, Wo). Layout C-first so that im2col copies runs of W
        pixels (with channels last, a 3→8→16-channel stem copies runs of 3 to 8 floats and
        im2col costs more than the matrix product). Zero padding is written into the columns
        instead of padding x first."""
        w, b, k, stride, pad = layer
        C, B, H, W = x.shape
        Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
        cols = _workspace(k * k * C * B * Ho * Wo).reshape(k, k, C, B, Ho, Wo)
        for dy in range(k):
            r0, r1 = _valid(dy - pad, stride, H, Ho)
            for dx in range(k):
                c0, c1 = _valid(dx - pad, stride, W, Wo)
                t = cols[dy, dx]
                t[:, :, :r0] = 0
                t[:, :, r1:] = 0
                t[:, :, r0:r1, :c0] = 0
                t[:, :, r0:r1, c1:] = 0
                y0, x0 = r0 * stride + dy - pad, c0 * stride + dx - pad
                t[:, :, r0:r1, c0:c1] = x[:, :, y0:y0 + (r1 - r0 - 1) * stride + 1:stride,
                                          x0:x0 + (c1 - c0 - 1) * stride + 1:stride]
        y = w.T @ cols.reshape(k * k * C, -1)                                # (O, B·Ho·Wo)
        y += b[:, None]
        if relu:
            np.maximum(y, 0, out=y)
        return y.reshape(-1, B, Ho, Wo)

    @staticmethod
    def _maxpool(x: np.ndarray) -> np.ndarray:
        """3x3, stride 2, padding 1 over (C, B, H, W); padding never wins a max."""
        x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        H, W = x.shape[2:]
        Ho, Wo = (H - 3) // 2 + 1, (W - 3) // 2 + 1
        out = x[:, :, :2 * Ho - 1:2, :2 * Wo - 1:2]
        for dy in range(3):
            for dx in range(3):
                if dy or dx:
                    out = np.maximum(out, x[:, :, dy:dy + 2 * Ho - 1:2, dx:dx + 2 * Wo - 1:2])
        return out

    def outputs(self, patches: np.ndarray) -> np.ndarray:
        """(B, 32, 32, 3) uint8 → (B, 1 + classes) float32 logits."""
        x = (patches.astype(np.float32) / 255 - self.mean) / self.std        # (B, 32, 32, 3)
        x = np.ascontiguousarray(x.transpose(3, 0, 1, 2))                    # (3, B, 32, 32)
        for layer in self.stem:
            x = self._conv(x, layer, relu=True)
        if self.pool:
            x = self._maxpool(x)
        for c1, c2, down in self.blocks:
            y = self._conv(self._conv(x, c1, relu=True), c2, relu=False)
            y += x if down is None else self._conv(x, down, relu=False)
            x = np.maximum(y, 0, out=y)
        return x.mean((2, 3)).T @ self.head_w + self.head_b                  # (B, 1 + K)


WORKERS = 2  # Python threads over patch chunks (numpy releases the GIL in copies and products)


def _map_chunks(fn, chunks: list[np.ndarray]) -> list[np.ndarray]:
    """fn over the chunks with BLAS held to one thread and up to WORKERS chunks at a time.

    OpenBLAS's own threads spin while they wait; on products this small they made the numpy
    net 3-4x slower in wall time and CPU on a busy 2-core machine. Threads over whole chunks
    have no such waits."""
    if os.environ.get("OPENBLAS_NUM_THREADS") == "1":
        limit = contextlib.nullcontext()   # already one (`forensics detect` sets it): skip the ~5 ms check
    else:
        try:
            from threadpoolctl import threadpool_limits  # comes with scikit-learn
        except ImportError:  # pragma: no cover
            limit = contextlib.nullcontext()
        else:
            limit = threadpool_limits(1, "blas")
    with limit:
        workers = min(WORKERS, len(chunks), os.cpu_count() or 1)
        if workers <= 1:
            return [fn(c) for c in chunks]
        # Plain threads, each taking every workers-th chunk: concurrent.futures would add ~20 ms
        # of imports to `detect`'s start-up.
        out: list = [None] * len(chunks)
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for i in range(k, len(chunks), workers):
                    out[i] = fn(chunks[i])
            except BaseException as exc:  # re-raised by the caller
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(1, workers)]
        for t in threads:
            t.start()
        work(0)
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out


def _valid(offset: int, stride: int, size: int, n_out: int) -> tuple[int, int]:
    """Output positions [lo, hi) whose input position offset + i·stride lies inside [0, size)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = min(n_out, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


def _grid(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (rows, columns) of every patch of a (fit_small) frame's grid, before any cap."""
    h, w = frame.shape[:2]
    stride = P if min((h - P) // P + 1, (w - P) // P + 1) >= MIN_GRID else P // 2
    return np.arange(0, h - P + 1, stride), np.arange(0, w - P + 1, stride)


def patch_grid(frame: np.ndarray, max_patches: int = MAX_PATCHES) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, 32, 32, 3) patches on a regular grid over the frame, and the grid's (rows, cols)."""
    frame = fit_small(frame)
    ys, xs = _grid(frame)
    if len(ys) * len(xs) > max_patches:
        k = math.sqrt(len(ys) * len(xs) / max_patches)
        ys = ys[np.linspace(0, len(ys) - 1, max(1, int(len(ys) / k))).round().astype(int)]
        xs = xs[np.linspace(0, len(xs) - 1, max(1, int(len(xs) / k))).round().astype(int)]
    patches = np.stack([frame[y:y + P, x:x + P] for y in ys for x in xs])
    return patches, (len(ys), len(xs))


_INTERP = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)


def augment(img: np.ndarray, rng: np.random.Generator, aug: dict = AUGMENT) -> np.ndarray:
    """One training patch (32, 32, 3) from an image of any size (the CNNDetection recipe)."""
    if rng.random() < aug["p_resize"]:
        lo, hi = aug["scale"]
        s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        h, w = img.shape[:2]
        interp = _INTERP[int(rng.integers(0, 3 if s < 1 else 4))]
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)
    img = fit_small(img)
    h, w = img.shape[:2]
    y, x = int(rng.integers(0, h - P + 1)), int(rng.integers(0, w - P + 1))
    img = np.ascontiguousarray(img[y:y + P, x:x + P])
    if rng.random() < aug["p_blur"]:
        s = rng.uniform(*aug["blur_sigma"])
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT)
    if rng.random() < aug["p_jpeg"]:
        q = int(rng.integers(aug["jpeg_quality"][0], aug["jpeg_quality"][1] + 1))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    if aug.get("hflip") and rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


@register
class ArtifactDetector(Detector):
    name = "artifact"

    def __init__(self, config=None, net=None):
        """`net`: a torch `PatchNet` (training) or a `NumpyPatchNet` (loaded for scoring)."""
        super().__init__(config)
        self.net = net

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, corpus, *, seed: int = 0, steps: int = 4000, minutes: float = 7.0, batch: int = 64,
            lr: float = 2e-3, fpr: float = 0.05, backbone: dict | None = None, augmentation: dict | None = None,
            attribution_weight: float = 0.5, progress: bool = False, log=None) -> "ArtifactDetector":
        """Train on the corpus's train split; calibrate and set the threshold on its val split.

        Stops at `steps` or after `minutes` of wall time, whichever comes first (the learning rate
        follows a cosine over whichever budget is closer to being spent)."""
        import torch
        from torch import nn

        from .artifact_torch import PatchNet

        spec = {**BACKBONE, **(backbone or {})}
        aug = {**AUGMENT, **(augmentation or {})}
        train, val = corpus.select(split="train"), corpus.select(split="val")
        cal.require_both(train, "train")
        cal.require_both(val, "val")
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        # Items in memory: real pool + one pool per architecture (frames of clips count as images).
        pools: dict[str, list[np.ndarray]] = {}
        for r, frames in zip(train, cal.item_frames(corpus, train, max_frames=4)):
            pools.setdefault(cal.arch_of(r), []).extend(list(frames))
        real = pools.pop("real")
        archs = sorted(pools)
        classes = ["real", *archs]
        self.net = net = PatchNet(spec, n_classes=len(classes))
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        loss_fn, ce_fn = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss()
        t0 = time.time()
        budget = minutes * 60 if minutes else float("inf")
        bar = None
        if progress:
            import sys

            from tqdm import tqdm

            bar = tqdm(total=steps, desc="train artifact", file=sys.stderr, mininterval=2.0)
        net.train()
        ema = None
        step = 0
        while step < steps and time.time() - t0 < budget:
            frac = max(step / steps, (time.time() - t0) / budget)
            for g in opt.param_groups:
                g["lr"] = lr * (min(1.0, (step + 1) / 100)) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
            half = batch // 2
            xs = [augment(real[int(rng.integers(0, len(real)))], rng, aug) for _ in range(half)]
            ks = [0] * half
            for _ in range(batch - half):
                k = int(rng.integers(0, len(archs)))
                pool = pools[archs[k]]
                xs.append(augment(pool[int(rng.integers(0, len(pool)))], rng, aug))
                ks.append(k + 1)
            x = torch.from_numpy(np.stack(xs))
            y = torch.cat([torch.zeros(half), torch.ones(batch - half)])
            out = net(x)
            loss = loss_fn(out[:, 0], y)
            if attribution_weight and len(classes) > 2:
                loss = loss + attribution_weight * ce_fn(out[:, 1:], torch.tensor(ks))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
            if log is not None and step % 100 == 0:
                log(f"step {step} loss {ema:.4f} {time.time() - t0:.0f}s")
        if bar is not None:
            bar.close()
        net.eval()
        self.config = {"patch": P, "backbone": spec, "augmentation": aug, "seed": seed,
                       "steps": step, "batch": batch, "lr": lr, "train_seconds": round(time.time() - t0, 1),
                       "final_loss": ema, "parameters": sum(p.numel() for p in net.parameters()),
                       "architectures": archs, "classes": classes, "attribution_weight": attribution_weight,
                       "train_items": {"real": len(real), **{a: len(pools[a]) for a in archs}},
                       "aggregation": "frame logit = mean patch logit; clip = mean frame logit",
                       "calibration": [1.0, 0.0]}
        z = self.item_logits(cal.item_frames(corpus, val))
        self.config.update(cal.calibrate_and_threshold(z, cal.labels(val), fpr))
        return self

    def evaluate(self, corpus, split: str = "test") -> dict:
        return cal.evaluate_detector(self, corpus, split)

    # -- scoring -----------------------------------------------------------------------------
    def patch_outputs(self, patches: np.ndarray, chunk: int = 64) -> np.ndarray:
        """(N, 1 + classes): column 0 the patch logit, then the attribution logits. Chunks of 64
        patches keep the widest im2col buffer (72 x 64 x 32 x 32 floats, 19 MB) near the cache
        sizes where the numpy net runs fastest."""
        if self.net is None:
            raise CheckpointError("the artifact detector is not fitted")
        chunks = [np.ascontiguousarray(patches[i:i + chunk]) for i in range(0, len(patches), chunk)]
        if isinstance(self.net, NumpyPatchNet):
            out = _map_chunks(self.net.outputs, chunks)
        else:
            out = [self.net.outputs(c) for c in chunks]
        return np.concatenate(out).astype(np.float64)

    def patch_logits(self, patches: np.ndarray) -> np.ndarray:
        return self.patch_outputs(patches)[:, 0]

    def frame_outputs(self, frames, max_patches: int = MAX_PATCHES) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame: the (rows, cols) map of patch logits and the mean attribution logits."""
        grids = [patch_grid(f, max_patches) for f in frames]
        o = self.patch_outputs(np.concatenate([g[0] for g in grids]))
        out, i = [], 0
        for patches, shape in grids:
            oo = o[i:i + len(patches)]
            out.append((oo[:, 0].reshape(shape), oo[:, 1:].mean(0)))
            i += len(patches)
        return out

    def frame_maps(self, frames) -> list[np.ndarray]:
        """Per frame, the (rows, cols) map of patch logits (patches of all frames batched)."""
        return [m for m, _ in self.frame_outputs(frames)]

    def _items(self, items):
        """Per item: mean frame logit and mean attribution logits (frames of all items batched)."""
        flat, owner = [], []
        for k, frames in enumerate(items):
            for f in frames:
                flat.append(f)
                owner.append(k)
        K = len(self.config.get("classes", []))
        z, a, n = np.zeros(len(items)), np.zeros((len(items), K)), np.zeros(len(items))
        for start in range(0, len(flat), 256):
            for (m, att), k in zip(self.frame_outputs(flat[start:start + 256]), owner[start:start + 256]):
                z[k] += m.mean()
                if K:
                    a[k] += att
                n[k] += 1
        n = np.maximum(n, 1)
        return z / n, a / n[:, None]

    def item_logits(self, items) -> np.ndarray:
        """One raw logit per item (a (T, H, W, 3) stack of frames): mean over frames of the mean
        patch logit. Items are batched together for speed."""
        return self._items(items)[0]

    def item_attribution(self, items) -> np.ndarray:
        """(N, classes) attribution probabilities: softmax of the mean patch attribution logits."""
        a = self._items(items)[1]
        e = np.exp(a - a.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def calibrate(self, z):
        return cal.apply_platt(self.config.get("calibration", [1.0, 0.0]), z)

    def score(self, media: Media) -> Evidence:
        cap = getattr(media, "max_patches", None) or MAX_PATCHES
        outs = memo_frames((self.name, id(self), cap), media.frames, lambda fr: self.frame_outputs(fr, cap))
        maps = [m for m, _ in outs]
        frame_z = np.array([m.mean() for m in maps])
        z = float(frame_z.mean())
        notes = []
        h, w = media.frames[0].shape[:2]
        if min(h, w) < P:
            notes.append(f"frame {w}x{h} is smaller than the {P}x{P} patch; upsampled, low confidence")
        full = int(np.prod([len(v) for v in _grid(fit_small(media.frames[0]))]))
        if maps[0].size < full:
            notes.append(f"{maps[0].size} of {full} patches per frame (an evenly spread "
                         f"{maps[0].shape[0]}x{maps[0].shape[1]} subgrid)")
        per_frame = [float(p) for p in self.calibrate(frame_z)] if media.modality == "video" else None
        attribution = None
        classes = self.config.get("classes") or []
        if len(classes) > 2:
            a = np.mean([att for _, att in outs], 0)
            e = np.exp(a - a.max())
            attribution = {c: float(v) for c, v in zip(classes, e / e.sum())}
        return Evidence(self.name, float(self.calibrate(z)), z, per_frame=per_frame,
                        heatmap=self.calibrate(maps[0]), attribution=attribution, notes=notes)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, directory) -> Path:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / ".model.safetensors.tmp"
        state = (self.net.state if isinstance(self.net, NumpyPatchNet) else
                 {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()})
        save_file({k: np.array(v, order="C") for k, v in state.items()}, str(tmp))  # 0-d stays 0-d
        os.replace(tmp, d / "model.safetensors")
        self._write_config(d)
        return d

    @classmethod
    def load(cls, directory, *, backend: str = "numpy") -> "ArtifactDetector":
        """`backend="numpy"` scores without importing torch (see NumpyPatchNet); "torch" builds
        the timm module (training code, equality checks). A backbone the numpy net does not
        implement falls back to torch."""
        d = Path(directory)
        cfg, state = cls.read_checkpoint(d, ())
        spec = {**BACKBONE, **cfg.get("backbone", {})}
        n_classes = len(cfg.get("classes") or [])
        try:
            net = None
            if backend == "numpy":
                try:
                    net = NumpyPatchNet(spec, state, n_classes)
                except NotImplementedError:
                    net = None
            if net is None:
                import torch

                from .artifact_torch import PatchNet

                net = PatchNet(spec, n_classes=n_classes)
                net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
                net.eval()
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"detector checkpoint {d} does not match its config: "
                                  f"{' '.join(str(exc).split())[:200]}") from None
        det = cls(cfg, net)
        det.directory = d
        return det
