"""JPEG quality estimation and double-compression detection on the bundled real photos.

Prints one JSON object:
- `quality`: |estimated − true| quality for JPEGs saved by OpenCV and by Pillow at every quality
  50…100 from every bundled photo (forensics.realdata.bundled_sources()), from the DQT tables alone;
- `double_jpeg`: the aligned double-compression test (forensics.metadata.double_jpeg_test) on
  photos downscaled by 0.8 (which erases any JPEG history of the bundled files): false positives
  on single saves, detection rate when the first save was coarser (q1 < q2) and when it was
  finer (q1 > q2), and the error of the primary-quality estimate.

Usage: python bench/jpeg_quality.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from forensics import metadata as md, realdata  # noqa: E402


def encode(rgb: np.ndarray, q: int, encoder: str) -> bytes:
    if encoder == "opencv":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok
        return buf.tobytes()
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=q)
    return b.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def luma_chroma(data: bytes):
    t = md.jpeg_quant_tables(data)
    return t[0], t.get(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="every 5th quality, 4 photos")
    a = ap.parse_args()
    t0 = time.time()
    sources = realdata.bundled_sources()
    if a.quick:
        sources = sources[:4]
    qualities = list(range(50, 101, 5 if a.quick else 1))
    quality = {}
    for enc in ("opencv", "pillow"):
        errs, exact = [], 0
        for s in sources:
            img = s.load()
            for q in qualities:
                est = md.estimate_quality(*luma_chroma(encode(img, q, enc)))
                errs.append(abs(est["estimate"] - q))
                exact += est["luma"]["ijg_exact"]
        e = np.array(errs)
        quality[enc] = {"n": int(e.size), "mean_abs_error": round(float(e.mean()), 4), "max_abs_error": int(e.max()),
                        "within_5": round(float((e <= 5).mean()), 4), "ijg_exact_match": round(exact / e.size, 4)}

    # Pillow's named preset tables (not IJG-scaled): the closest IJG equivalent is reported.
    img = sources[0].load()
    presets = {}
    for name in ("web_low", "web_medium", "web_high", "web_very_high", "low", "medium", "high", "maximum"):
        b = io.BytesIO()
        Image.fromarray(img).save(b, "JPEG", qtables=name)
        est = md.estimate_quality(*luma_chroma(b.getvalue()))
        presets[name] = {"closest_ijg_quality": est["estimate"], "ijg_exact": est["luma"]["ijg_exact"],
                         "deviation": est["luma"]["deviation"]}
    quality["pillow_named_presets_non_ijg"] = presets

    rng = np.random.default_rng(0)
    single, coarse_first, fine_first, q1_err = [], [], [], []
    single_scores, coarse_scores = [], []
    for s in sources:
        img = cv2.resize(s.load(), None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
        for q2 in (70, 80, 90):
            d = encode(img, q2, "pillow")
            r = md.double_jpeg_test(decode(d), luma_chroma(d)[0])
            if r["detected"] is not None:
                single.append(r["detected"])
                single_scores.append(r["score"])
            for q1 in (int(rng.integers(50, q2 - 9)), int(rng.integers(q2 + 5, 96))):
                d = encode(decode(encode(img, q1, "opencv")), q2, "pillow")
                r = md.double_jpeg_test(decode(d), luma_chroma(d)[0])
                if r["detected"] is None:
                    continue
                (coarse_first if q1 < q2 else fine_first).append(r["detected"])
                if q1 < q2:
                    coarse_scores.append(r["score"])
                if r["detected"] and q1 < q2:
                    q1_err.append(abs(r["primary_quality_estimate"] - q1))
    dj = {"threshold": md.DOUBLE_JPEG_THRESHOLD,
          "single_false_positive_rate": round(float(np.mean(single)), 4), "n_single": len(single),
          "detection_rate_first_coarser_q1_lt_q2": round(float(np.mean(coarse_first)), 4),
          "n_first_coarser": len(coarse_first),
          "detection_rate_first_finer_q1_gt_q2": round(float(np.mean(fine_first)), 4),
          "n_first_finer": len(fine_first),
          "single_score_max": max(single_scores), "first_coarser_score_min": min(coarse_scores),
          "primary_quality_mean_abs_error": round(float(np.mean(q1_err)), 3) if q1_err else None}
    print(json.dumps({"bench": "jpeg_quality", "photos": len(sources), "qualities": [qualities[0], qualities[-1]],
                      "quality": quality, "double_jpeg": dj, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
