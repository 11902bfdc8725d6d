"""Watermarks.

- `posthoc`: a keyed periodic spread-spectrum mark for images and video, 32-bit payload with
  CRC-32 and a convolutional code, key-free re-synchronisation, p-value with a stated
  false-positive rate (see its module docstring).
- `treering`: Tree-Ring, a key in the Fourier transform of the initial noise of our DDIM and
  rectified-flow samplers, detected by inverting the sampler; the same key file, its own label
  (imported on demand: it needs torch and the generator bank).
"""

from .posthoc import (DEFAULT_THRESHOLD, Detection, Match, WatermarkKey, default_key_path, detect,
                      detect_aligned, detect_file, detect_frames, embed, embed_file, embed_frames,
                      load_key, match, match_frames, parse_payload, psnr)

__all__ = ["DEFAULT_THRESHOLD", "Detection", "Match", "WatermarkKey", "default_key_path", "detect",
           "detect_aligned", "detect_file", "detect_frames", "embed", "embed_file", "embed_frames",
           "load_key", "match", "match_frames", "parse_payload", "psnr"]
