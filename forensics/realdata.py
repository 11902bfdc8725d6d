"""Real media: the photos that scikit-image and scikit-learn ship, user folders, and real clips.

- Photos are cut into random crops at many scales (side log-uniform between 32 px and the
  photo's short side), resized to 32x32 with area averaging.
- Splits are by *source scene*, never by crop: no photo (nor the other half of a stereo pair) is
  in two splits, so a detector is tested on photos it has never seen.
- Real clips: a virtual camera moves over a real photo (pan, zoom, small rotation, sub-pixel),
  with sensor noise and slight exposure drift, encoded as H.264 like a phone would.
- User folders: every image is a source; every video is cut into clips; sources are split by a
  hash of their relative path, so reruns give the same split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from . import media
from .errors import MediaError

SPLITS = ("train", "val", "test")

# name -> (loader, scene, split). Scenes keep a stereo pair together. Synthetic drawings that
# ship with scikit-image (logo, colorwheel, checkerboard, phantom, horse, blobs) are left out:
# they are not photographs.
_SKIMAGE = {
    "astronaut": ("astronaut", "train"),
    "camera": ("camera", "train"),
    "coins": ("coins", "train"),
    "grass": ("grass", "train"),
    "brick": ("brick", "train"),
    "moon": ("moon", "train"),
    "page": ("page", "train"),
    "hubble_deep_field": ("hubble_deep_field", "train"),
    "immunohistochemistry": ("immunohistochemistry", "train"),
    "retina": ("retina", "train"),
    "microaneurysms": ("microaneurysms", "train"),
    "cell": ("cell", "train"),
    "clock": ("clock", "train"),
    "rocket": ("rocket", "val"),
    "text": ("text", "val"),
    "motorcycle_left": ("motorcycle", "val"),
    "motorcycle_right": ("motorcycle", "val"),
    "chelsea": ("chelsea", "test"),
    "coffee": ("coffee", "test"),
    "gravel": ("gravel", "test"),
}
_SKLEARN = {"china.jpg": ("china", "train"), "flower.jpg": ("flower", "test")}


@dataclasses.dataclass(frozen=True)
class Source:
    name: str     # e.g. "skimage:chelsea"
    scene: str
    split: str

    def load(self) -> np.ndarray:
        return _load_source(self.name)


def bundled_sources() -> list[Source]:
    """Every bundled photo that loads on this install (no network is used)."""
    out = []
    for name, (scene, split) in _SKIMAGE.items():
        out.append(Source(f"skimage:{name}", scene, split))
    for name, (scene, split) in _SKLEARN.items():
        out.append(Source(f"sklearn:{name}", scene, split))
    return [s for s in out if _available(s.name)]


_CACHE: dict[str, np.ndarray] = {}


def _load_source(name: str) -> np.ndarray:
    if name in _CACHE:
        return _CACHE[name]
    kind, _, item = name.partition(":")
    if kind == "skimage":
        from skimage import data as skdata

        if item.startswith("motorcycle_"):
            left, right, _ = skdata.stereo_motorcycle()
            img = left if item.endswith("left") else right
        else:
            img = getattr(skdata, item)()
    elif kind == "sklearn":
        from sklearn.datasets import load_sample_image

        img = load_sample_image(item)
    elif kind == "file":
        img = media.read_image(item)
    else:
        raise MediaError(f"unknown real source {name!r}")
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) / max(1.0, float(img.max())) * 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    _CACHE[name] = np.ascontiguousarray(img)
    return _CACHE[name]


def _available(name: str) -> bool:
    try:
        _load_source(name)
        return True
    except Exception:  # a build of scikit-image without that file; skip it
        return False


def random_crop(img: np.ndarray, rng: np.random.Generator, size: int = 32,
                min_side: int | None = None) -> np.ndarray:
    """A square crop whose side is log-uniform in [size, short side], resized to size x size."""
    h, w = img.shape[:2]
    lo = min(min_side or size, min(h, w))
    side = int(round(math.exp(rng.uniform(math.log(lo), math.log(min(h, w))))))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = img[y:y + side, x:x + side]
    if side != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop


@dataclasses.dataclass
class RealSet:
    images: np.ndarray          # (N, size, size, 3) uint8
    sources: list[str]          # per item
    splits: list[str]           # per item

    def split(self, name: str) -> "RealSet":
        keep = [i for i, s in enumerate(self.splits) if s == name]
        return RealSet(self.images[keep], [self.sources[i] for i in keep], [name] * len(keep))

    def __len__(self) -> int:
        return len(self.images)


def default_crops(per_source: int = 300, size: int = 32, seed: int = 0,
                  sources: list[Source] | None = None, splits=SPLITS) -> RealSet:
    """Multi-scale crops of the bundled photos, labeled with their source and split."""
    sources = bundled_sources() if sources is None else sources
    imgs, names, sp = [], [], []
    for k, src in enumerate(sources):
        if src.split not in splits:
            continue
        rng = np.random.default_rng([seed, _stable_int(src.name)])
        photo = src.load()
        for _ in range(per_source):
            imgs.append(random_crop(photo, rng, size))
            names.append(src.name)
            sp.append(src.split)
    if not imgs:
        return RealSet(np.zeros((0, size, size, 3), np.uint8), [], [])
    return RealSet(np.stack(imgs), names, sp)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def split_of(key: str, val: float = 0.15, test: float = 0.15) -> str:
    """Deterministic split of a user source by the hash of its key (e.g. relative path)."""
    u = _stable_int(key) / 2**32
    return "test" if u < test else "val" if u < test + val else "train"


# ---------------------------------------------------------------------------------------------
# User folders


def folder_sources(root: str | os.PathLike) -> list[Source]:
    """Every readable image under a folder as a source (split by path hash)."""
    root = Path(root)
    if not root.is_dir():
        raise MediaError("not a folder", root)
    out = []
    for f in media.iter_media_files(root):
        if f.suffix.lower() in media.IMAGE_EXTS:
            rel = f.relative_to(root).as_posix()
            out.append(Source(f"file:{f}", rel, split_of(rel)))
    return out


CLIP_FPS = 8.0  # the corpus's clip rate (generators sample 8 fps clips)


def clip_stride(fps: float | None, target_fps: float = CLIP_FPS) -> int:
    """Keep every k-th frame, k = round(fps / target): the rule `detect` uses to space its frame
    pairs (media.read_frame_runs), so real training clips move between frames as much as the
    pairs detect compares. Uniform spacing is kept over an exact rate: a 30 fps video gives
    7.5 fps, 24 and 48 fps give 8, and a video at or under the target keeps every frame."""
    return max(1, int(round(float(fps) / target_fps))) if fps and fps > 0 else 1


def folder_clips(root: str | os.PathLike, frames: int = 16, size: int = 32,
                 max_clips_per_video: int = 8, target_fps: float = CLIP_FPS
                 ) -> Iterator[tuple[np.ndarray, float, str, str]]:
    """Cut every video under a folder into (clip (T, size, size, 3), fps, source, split).

    1. Frames are resampled to about `target_fps` (every `clip_stride`-th frame; the returned
       fps is the clip's real rate, fps / stride).
    2. Consecutive non-overlapping runs of `frames` resampled frames make the clips, at most
       `max_clips_per_video` per video, from the start; a shorter remainder is dropped.
    3. Frames are center-cropped to a square and area-resized to `size`.
    4. The split is a hash of the video's path relative to the folder, so every clip of a video
       is in the same split (no video in two splits) and reruns give the same split.

    Unreadable, truncated or over-limit videos are skipped, and so is the rest of a video from
    a clip whose frames span over 1.5x the time its stated rate gives (an AVI's dropped frames,
    a variable frame rate that stalls): its fps would be wrong, and temporal training needs it.
    """
    root = Path(root)
    for f in media.iter_media_files(root):
        if f.suffix.lower() not in media.VIDEO_EXTS:
            continue
        rel = f.relative_to(root).as_posix()
        try:
            reader = media.VideoReader(f)
            reader.stride = k = clip_stride(reader.fps, target_fps)
            fps = reader.fps / k if reader.fps else target_fps
            buf, made, t0 = [], 0, None
            if max_clips_per_video < 1:
                continue
            for fr in reader:
                if not buf:
                    t0 = reader.last_ms
                buf.append(_square(fr, size))
                if len(buf) == frames:
                    if t0 is not None and reader.last_ms is not None \
                            and reader.last_ms - t0 > 1.5 * 1000.0 * (frames - 1) / fps:
                        break
                    yield np.stack(buf), fps, f"file:{rel}", split_of(rel)
                    buf, made = [], made + 1
                    if made >= max_clips_per_video:
                        break
        except MediaError:
            continue


def _square(frame: np.ndarray, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return cv2.resize(frame[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------
# Real clips from a virtual camera


def virtual_camera_clip(photo: np.ndarray, rng: np.random.Generator, frames: int = 16,
                        size: int = 32) -> np.ndarray:
    """A clip (T, size, size, 3) of a camera moving over a real photo.

    1. Choose a window side S, a start centre, a velocity (px/frame), a zoom rate and a small
       rotation rate; each frame's window is an affine map of the output grid (sub-pixel).
    2. Warp from a pre-downscaled photo (window about 2x the output) so no frame aliases.
    3. Add sensor noise (Gaussian, a few levels) and a slow exposure drift.
    """
    h, w = photo.shape[:2]
    short = min(h, w)
    side = math.exp(rng.uniform(math.log(size * 1.2), math.log(short * 0.6)))
    scale = min(1.0, 2.0 * size / side)
    small = cv2.resize(photo, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else photo
    sh, sw = small.shape[:2]
    side_s = side * scale
    margin = side_s * 0.75
    cx, cy = rng.uniform(margin, max(margin + 1, sw - margin)), rng.uniform(margin, max(margin + 1, sh - margin))
    speed = rng.uniform(0.0, 0.04) * side_s
    ang = rng.uniform(0, 2 * math.pi)
    vx, vy = speed * math.cos(ang), speed * math.sin(ang)
    zoom = rng.uniform(-0.015, 0.015)
    rot = rng.uniform(-0.6, 0.6) * math.pi / 180
    noise = rng.uniform(0.5, 2.5)
    drift = rng.uniform(-0.004, 0.004)
    out = []
    for t in range(frames):
        s = side_s * (1 + zoom) ** t
        th = rot * t
        c, si = math.cos(th), math.sin(th)
        k = s / size
        # Output pixel (u, v) -> source (cx + k*(c*(u-size/2) - si*(v-size/2)), ...).
        m = np.array([[k * c, -k * si, cx + vx * t - k * (c - si) * size / 2],
                      [k * si, k * c, cy + vy * t - k * (si + c) * size / 2]], np.float64)
        fr = cv2.warpAffine(small, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
        fr = fr.astype(np.float32) * (1 + drift * t) + rng.normal(0, noise, fr.shape).astype(np.float32)
        out.append(np.clip(np.round(fr), 0, 255).astype(np.uint8))
    return np.stack(out)


def default_clips(per_source: int = 4, frames: int = 16, size: int = 32, seed: int = 0,
                  splits=SPLITS) -> Iterator[tuple[np.ndarray, str, str]]:
    """(clip, source, split) from the virtual camera over every bundled photo."""
    for src in bundled_sources():
        if src.split not in splits:
            continue
        rng = np.random.default_rng([seed, _stable_int(src.name), 7])
        photo = src.load()
        for _ in range(per_source):
            yield virtual_camera_clip(photo, rng, frames, size), src.name, src.split
