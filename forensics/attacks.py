"""Perturbations shared by evaluation (robustness sweeps) and watermarking (robustness bench).

- Image attacks take and return RGB uint8 arrays (H, W, 3): JPEG and WebP re-compression
  (OpenCV codecs, the ones a pipeline meets in practice), resize, crop, Gaussian blur, Gaussian
  noise, brightness / contrast, small rotation. Each is deterministic given its arguments and,
  where randomness enters (noise, crop position), an explicit `numpy.random.Generator`.
- Clip attacks take and return frames (T, H, W, 3): H.264 re-encoding at a CRF through the real
  encoder (forensics.media.write_mp4 then decoding), frame drop, and any image attack per frame.
- `parse(spec)` turns a short text spec into a callable: "jpeg:50", "webp:80", "resize:0.5",
  "crop:0.5" (keep half the area), "blur:1", "noise:5", "brightness:1.2", "contrast:0.8",
  "rotate:2", "h264:28", "framedrop:0.2", "none" (identity), and combinations joined by "+"
  ("resize:0.5+jpeg:75"), applied left to right.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .errors import MediaError, UsageError

Image = np.ndarray  # (H, W, 3) uint8 RGB
Clip = np.ndarray  # (T, H, W, 3) uint8 RGB


def _check(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3); got {a.shape} {a.dtype}")
    return a


def _to8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Images


def _recompress(rgb: Image, ext: str, flag: int, quality: int) -> Image:
    rgb = _check(rgb)
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [flag, int(quality)])
    if not ok:
        raise MediaError(f"{ext[1:].upper()} encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def jpeg(rgb: Image, quality: int = 75) -> Image:
    """Re-compress as baseline JPEG (4:2:0) at `quality` (1..100) and decode."""
    return _recompress(rgb, ".jpg", cv2.IMWRITE_JPEG_QUALITY, quality)


def webp(rgb: Image, quality: int = 80) -> Image:
    """Re-compress as lossy WebP at `quality` (1..100) and decode."""
    return _recompress(rgb, ".webp", cv2.IMWRITE_WEBP_QUALITY, quality)


def resize(rgb: Image, scale: float = 0.5) -> Image:
    """Rescale both sides by `scale` (area averaging down, bicubic up); at least 1x1."""
    rgb = _check(rgb)
    h, w = rgb.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (nw, nh), interpolation=interp)


def crop(rgb: Image, area: float = 0.5, *, rng: np.random.Generator | None = None) -> Image:
    """Keep a window of `area` (0..1] of the image, same aspect ratio; at a random position when
    `rng` is given, else centred. No resize back."""
    rgb = _check(rgb)
    if not 0 < area <= 1:
        raise UsageError(f"crop area must be in (0, 1]; got {area}")
    h, w = rgb.shape[:2]
    f = math.sqrt(area)
    ch, cw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    if rng is None:
        y, x = (h - ch) // 2, (w - cw) // 2
    else:
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(rgb[y:y + ch, x:x + cw])


def blur(rgb: Image, sigma: float = 1.0) -> Image:
    """Gaussian blur with standard deviation `sigma` pixels (kernel ±3 sigma)."""
    rgb = _check(rgb)
    if sigma <= 0:
        return rgb.copy()
    k = 2 * int(math.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(rgb, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def noise(rgb: Image, sigma: float = 5.0, *, rng: np.random.Generator | None = None) -> Image:
    """Additive white Gaussian noise of `sigma` grey levels, independent per channel."""
    rgb = _check(rgb)
    rng = rng or np.random.default_rng(0)
    return _to8(rgb.astype(np.float32) + rng.normal(0, sigma, rgb.shape).astype(np.float32))


def brightness(rgb: Image, factor: float = 1.2) -> Image:
    """Multiply every value by `factor` (clipped)."""
    return _to8(_check(rgb).astype(np.float32) * factor)


def contrast(rgb: Image, factor: float = 0.8) -> Image:
    """Scale deviations from the image mean by `factor` (clipped)."""
    a = _check(rgb).astype(np.float32)
    m = a.mean()
    return _to8(m + (a - m) * factor)


def rotate(rgb: Image, degrees: float = 2.0) -> Image:
    """Rotate about the centre by `degrees` (counter-clockwise), same size, bilinear, borders
    reflected (so no black corners hand a detector an easy cue)."""
    rgb = _check(rgb)
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), float(degrees), 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# ---------------------------------------------------------------------------------------------
# Clips


def h264(frames: Clip, crf: int = 28, fps: float = 8.0, preset: str = "medium") -> Clip:
    """Encode with libx264 at `crf` (yuv420p) and decode again. Odd sides come back padded by
    one pixel by the encoder and are cropped back here."""
    from . import media

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3); got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="forensics-h264-") as tmp:
        path = Path(tmp) / "clip.mp4"
        media.write_mp4(path, frames, fps=fps, crf=crf, preset=preset)
        out, _ = media.read_video(path)
    return np.ascontiguousarray(out[:, :h, :w])


def reencode_file(src, dst, crf: int = 28) -> Path:
    """Re-encode a video file as H.264 MP4 at `crf` (audio dropped)."""
    from . import media

    return media.transcode(src, dst, args=["-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                                           "-crf", str(int(crf)), "-preset", "medium"])


def frame_drop(frames: Clip, fraction: float = 0.2, *, rng: np.random.Generator | None = None) -> Clip:
    """Drop `fraction` of the frames at random positions (at least one frame is kept)."""
    frames = np.asarray(frames)
    if not 0 <= fraction < 1:
        raise UsageError(f"frame-drop fraction must be in [0, 1); got {fraction}")
    rng = rng or np.random.default_rng(0)
    t = len(frames)
    keep_n = max(1, t - int(round(t * fraction)))
    keep = np.sort(rng.choice(t, size=keep_n, replace=False))
    return frames[keep]


def per_frame(fn: Callable[[Image], Image]) -> Callable[[Clip], Clip]:
    """Lift an image attack to a clip (applied to every frame)."""
    return lambda frames: np.stack([fn(f) for f in frames])


# ---------------------------------------------------------------------------------------------
# Specs


IMAGE_ATTACKS: dict[str, Callable] = {
    "jpeg": lambda a, q, rng: jpeg(a, int(q)),
    "webp": lambda a, q, rng: webp(a, int(q)),
    "resize": lambda a, s, rng: resize(a, s),
    "crop": lambda a, f, rng: crop(a, f, rng=rng),
    "blur": lambda a, s, rng: blur(a, s),
    "noise": lambda a, s, rng: noise(a, s, rng=rng),
    "brightness": lambda a, f, rng: brightness(a, f),
    "contrast": lambda a, f, rng: contrast(a, f),
    "rotate": lambda a, d, rng: rotate(a, d),
}
CLIP_ATTACKS: dict[str, Callable] = {
    "h264": lambda c, crf, rng: h264(c, int(crf)),
    "framedrop": lambda c, f, rng: frame_drop(c, f, rng=rng),
}
DEFAULTS = {"jpeg": 75, "webp": 80, "resize": 0.5, "crop": 0.5, "blur": 1.0, "noise": 5.0,
            "brightness": 1.2, "contrast": 0.8, "rotate": 2.0, "h264": 28, "framedrop": 0.2}


def parse(spec: str) -> Callable[..., np.ndarray]:
    """A callable `f(media, rng=None)` for a spec such as "resize:0.5+jpeg:75".

    Image attacks applied to a clip act on every frame; clip attacks refuse a single image."""
    steps = []
    for part in spec.split("+"):
        name, _, arg = part.strip().partition(":")
        name = name.lower()
        if name in ("none", "identity"):
            continue
        if name not in IMAGE_ATTACKS and name not in CLIP_ATTACKS:
            known = ", ".join(sorted([*IMAGE_ATTACKS, *CLIP_ATTACKS]))
            raise UsageError(f"unknown attack {name!r} in {spec!r}; known: {known}")
        try:
            value = float(arg) if arg else float(DEFAULTS[name])
        except ValueError:
            raise UsageError(f"attack {name!r} needs a number after ':'; got {arg!r}") from None
        steps.append((name, value))

    def run(x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng(0)
        for name, value in steps:
            if name in CLIP_ATTACKS:
                if x.ndim != 4:
                    raise UsageError(f"attack {name!r} applies to clips, not single images")
                x = CLIP_ATTACKS[name](x, value, rng)
            elif x.ndim == 4:
                x = np.stack([IMAGE_ATTACKS[name](f, value, rng) for f in x])
            else:
                x = IMAGE_ATTACKS[name](x, value, rng)
        return x

    run.spec = spec  # type: ignore[attr-defined]
    return run


def names() -> list[str]:
    return sorted([*IMAGE_ATTACKS, *CLIP_ATTACKS])
