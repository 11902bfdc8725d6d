"""Watermarks.

- `posthoc`: a keyed periodic spread-spectrum mark for images and video, 32-bit payload with
  CRC-32 and a convolutional code, key-free re-synchronisation, p-value with a stated
  false-positive rate (see its module docstring).
- Tree-Ring (a key in the Fourier transform of our samplers' initial noise) will live in
  `treering.py`.
"""

from .posthoc import (DEFAULT_THRESHOLD, Detection, WatermarkKey, default_key_path, detect,
                      detect_file, detect_frames, embed, embed_file, embed_frames, load_key,
                      parse_payload, psnr)

__all__ = ["DEFAULT_THRESHOLD", "Detection", "WatermarkKey", "default_key_path", "detect",
           "detect_file", "detect_frames", "embed", "embed_file", "embed_frames", "load_key",
           "parse_payload", "psnr"]
