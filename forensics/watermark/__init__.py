"""Watermarks: post-hoc (keyed periodic spread spectrum, images and video; see posthoc.py).

Tree-Ring (a key in the initial noise of our samplers) will live in treering.py.
"""

from .posthoc import (DEFAULT_THRESHOLD, Detection, WatermarkKey, default_key_path, detect,
                      detect_frames, embed, embed_frames, load_key, parse_payload, psnr)

__all__ = ["DEFAULT_THRESHOLD", "Detection", "WatermarkKey", "default_key_path", "detect",
           "detect_frames", "embed", "embed_frames", "load_key", "parse_payload", "psnr"]
