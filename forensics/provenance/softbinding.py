"""Soft binding through the post-hoc watermark (forensics.watermark.posthoc).

The watermark's 32-bit payload is the binding id that indexes the manifest store. The
watermark key lives in the key folder (`watermark.key`, the watermark module's default
location when the folder is the default config folder). This module is the one place that
knows the watermark's API, so provenance keeps working (without soft binding, saying why)
when the watermark is not installed.
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
