"""Soft binding through the post-hoc watermark (forensics.watermark.posthoc).

The watermark's 32-bit payload is the binding id that indexes the manifest store. The
watermark key lives in the key folder (`watermark.key`, the watermark module's default
location when the folder is the default config folder). This module is the one place that
knows the watermark's API, so provenance keeps working (without soft binding, saying why)
when the watermark is not installed.

Recovery reads the id in one of two ways (verify.py):
1. the watermark's own decoding (Viterbi + CRC, p ≤ 1e-6): the id, whatever the store holds;
2. when that fails, the known-payload test (posthoc step 7) on the ids of the store rows whose
   perceptual hash is nearest to the file's (at most MAX_CANDIDATES): far less mark energy is
   needed to confirm a known id than to decode an unknown one, which is what survives JPEG 75
   at 128 px. The pHash only picks candidates (it never looks at the key), so the test's
   p-value, with its union bound over candidates, holds: a false recovery needs p ≤ MATCH_THRESHOLD
   on a file that does not carry the id.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from ..errors import MediaError, ProvenanceError
from . import keys as _keys

KEY_FILE = "watermark.key"
MAX_DETECT_FRAMES = 64  # video: frames folded into the detector's accumulator
MAX_CANDIDATES = 16  # store rows (nearest pHash) whose ids the known-payload test tries
MATCH_THRESHOLD = 5e-7  # with the decoder's 1e-6, a false recovery stays below 1.5e-6 per file


def _posthoc():
    return importlib.import_module("forensics.watermark.posthoc")


def unavailable() -> str | None:
    """None when soft binding can be used, else the reason it cannot."""
    try:
        ph = _posthoc()
    except ImportError as exc:
        return f"forensics.watermark.posthoc cannot be imported: {exc}"
    missing = [n for n in ("embed_frames", "detect_frames", "load_key", "PAYLOAD_BITS") if not hasattr(ph, n)]
    if missing:
        return f"forensics.watermark.posthoc lacks {', '.join(missing)}"
    return None


def algorithm() -> str:
    """The soft-binding algorithm name written into `c2pa.soft-binding` (entity-prefixed)."""
    return f"org.forensics.{getattr(_posthoc(), 'ALGORITHM', 'posthoc')}"


def payload_bits() -> int:
    return int(_posthoc().PAYLOAD_BITS)


def min_side() -> int:
    return int(getattr(_posthoc(), "MIN_SIDE", 32))


def key_path(keys_dir: str | os.PathLike | None = None) -> Path:
    return _keys.resolve_dir(keys_dir) / KEY_FILE


def load_key(keys_dir: str | os.PathLike | None = None, *, create: bool = False):
    """The watermark key of the key folder (made on first use when `create`)."""
    from ..errors import UsageError

    try:
        return _posthoc().load_key(key_path(keys_dir), create=create)
    except UsageError as exc:
        raise ProvenanceError(f"soft-binding watermark key: {exc.one_line()}") from None


def embed(pixels: np.ndarray, binding_id: str, key) -> np.ndarray:
    """Watermark an image (H, W, 3) or clip (T, H, W, 3) with the binding id as payload."""
    ph = _posthoc()
    payload = bytes.fromhex(binding_id.rjust(payload_bits() // 4, "0"))
    h, w = pixels.shape[-3:-1]
    if min(h, w) < min_side():
        raise MediaError(f"the soft-binding watermark needs at least {min_side()}x{min_side()} pixels; "
                         f"this is {w}x{h} (sign with --no-watermark)")
    frames = pixels if pixels.ndim == 4 else pixels[None]
    out = ph.embed_frames(frames, key, payload)
    return out if pixels.ndim == 4 else out[0]


def detect(path: str | os.PathLike, keys_dir: str | os.PathLike | None = None) -> dict:
    """The watermark detection result for a file (DESIGN.md's `watermark detect --json` fields)."""
    from .. import media

    p = Path(path)
    if not key_path(keys_dir).is_file():
        return {"method": "posthoc", "detected": False, "payload": None,
                "reason": f"no watermark key at {key_path(keys_dir)}"}
    key = load_key(keys_dir)
    kind = media.sniff(p)
    if kind == "image":
        w, h = media.image_size(p)
    else:
        info = media.probe_video(p)
        w, h = info.width, info.height
    if min(h, w) < min_side():
        return {"method": "posthoc", "detected": False, "payload": None,
                "reason": f"{w}x{h} is below the watermark's {min_side()}-pixel minimum"}
    ph = _posthoc()
    if hasattr(ph, "detect_file"):  # the module's own reader (frame sampling and caps for video)
        r = dict(ph.detect_file(p, key))
        r.pop("path", None)
        return {"method": "posthoc", **r}
    frames = [media.read_image(p)] if kind == "image" else list(media.VideoReader(p, max_frames=MAX_DETECT_FRAMES))
    d = ph.detect_frames(frames, key)
    r = d.to_json() if hasattr(d, "to_json") else dict(d)
    return {"method": "posthoc", **r, "key_fingerprint": getattr(key, "fingerprint", None)}


def phash(pixels: np.ndarray) -> str:
    """64-bit DCT perceptual hash (hex) of an image (H, W, 3), or of a clip's first frame, as in
    pHash: the 8×8 lowest DCT frequencies of the 32×32 luminance against their median (AC
    terms). JPEG, rescaling and the watermark move a few of its bits; a crop moves many."""
    import cv2

    rgb = np.asarray(pixels)
    rgb = rgb[0] if rgb.ndim == 4 else rgb
    y = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    y = cv2.resize(y, (32, 32), interpolation=cv2.INTER_AREA)
    d = cv2.dct(y)[:8, :8].ravel()
    bits = d > np.median(d[1:])
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def _frames(path: str | os.PathLike) -> np.ndarray:
    """An image as (1, H, W, 3), a video as up to MAX_DETECT_FRAMES frames."""
    from .. import media

    if media.sniff(path) == "image":
        return media.read_image(path)[None]
    _, frames, _ = media.frames_of(path, max_frames=MAX_DETECT_FRAMES)
    return np.stack(list(frames))


def file_phash(path: str | os.PathLike) -> str:
    from .. import media

    if media.sniff(path) == "image":
        return phash(media.read_image(path))
    _, frames, _ = media.frames_of(path, max_frames=1)
    return phash(np.stack(list(frames)))


def existing_mark(pixels: np.ndarray, key) -> dict:
    """Our mark, unmoved, in pixels about to be signed (posthoc.detect_aligned): a signer must
    not stack a second id on it. {detected, payload (None when it does not decode), p_value}."""
    ph = _posthoc()
    frames = pixels if pixels.ndim == 4 else pixels[None]
    if min(frames.shape[1:3]) < min_side() or not hasattr(ph, "detect_aligned"):
        return {"detected": False, "payload": None, "p_value": 1.0}
    step = max(1, len(frames) // MAX_DETECT_FRAMES)
    d = ph.detect_aligned([ph.luma(f) for f in frames[::step][:MAX_DETECT_FRAMES]], key)
    return {"detected": bool(d.detected), "payload": d.payload, "p_value": float(d.p_value)}


def match_pixels(frames: np.ndarray, key, binding_ids: list[str]) -> dict:
    """The known-payload test of these ids on frames (T, H, W, 3); the posthoc Match as JSON."""
    ph = _posthoc()
    width = payload_bits() // 4
    payloads = [bytes.fromhex(b.rjust(width, "0")) for b in binding_ids]
    step = max(1, len(frames) // MAX_DETECT_FRAMES)
    m = ph.match_frames(list(frames[::step][:MAX_DETECT_FRAMES]), key, payloads, threshold=MATCH_THRESHOLD)
    return m.to_json()


def can_match() -> bool:
    return hasattr(_posthoc(), "match_frames")
