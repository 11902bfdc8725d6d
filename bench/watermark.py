"""Post-hoc watermark robustness bench: prints one JSON object.

For real photos (scikit-image / scikit-learn bundled photos: 256×256 crops of the test-split
photos, 512×512 crops of every bundled photo at least that large) it reports, per attack:
- `payload_rate`: the payload decoded exactly (detected and CRC-valid);
- `detection_rate`: detected at the default threshold (p ≤ 1e-6);
- `bit_accuracy`: the 32 payload bits of the Viterbi decision against the truth, averaged over
  all images (a non-detection still counts its decoded bits, so chance is 0.5);
plus PSNR / SSIM, embed and detect times (256², 512², 1080p), the empirical false-positive
rate on unmarked real patches and on marked images tested with a wrong key, small images
(32–96 px, clean and noise), and video (H.264 CRF 28, 20 % frame drop, downscale 0.5; static
and panning cameras). When `invisible-watermark` imports, its dwtDct method runs on the same
images as a baseline (a bench-only extra: `pip install --no-deps invisible-watermark PyWavelets`;
`bit_accuracy` and exact-payload rate; it has no detection test, so no false-positive rate).

    python bench/watermark.py [--quick] [--fpr-n 10000] [--only video|images|timing|fpr] [--repeat 3]

Threads: OMP_NUM_THREADS (default 2) also sets OpenCV's pool, for both methods alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
THREADS = int(os.environ["OMP_NUM_THREADS"])
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# OpenCV keeps its own pool (one thread per core by default); both methods run on cv2 and numpy,
# so one setting for both libraries is what makes the timings comparable
cv2.setNumThreads(THREADS)

from forensics import attacks, realdata  # noqa: E402
from forensics.watermark import posthoc as ph  # noqa: E402

KEY = ph.WatermarkKey(bytes.fromhex("5eed" * 16))
WRONG = ph.WatermarkKey(bytes.fromhex("beef" * 16))
PAYLOAD = bytes.fromhex("c0ffee42")
IMAGE_ATTACKS = ["none", "jpeg:90", "jpeg:75", "jpeg:50", "webp:80", "resize:0.5", "resize:0.75",
                 "crop:0.9", "crop:0.5", "blur:1", "noise:5", "brightness:1.2", "contrast:0.8",
                 "rotate:2", "resize:0.5+jpeg:75"]


def crops(size: int, per: int, rng: np.random.Generator, split: str | None) -> list[tuple[str, np.ndarray]]:
    out = []
    for src in realdata.bundled_sources():
        if split and src.split != split:
            continue
        photo = src.load()
        h, w = photo.shape[:2]
        if min(h, w) < size:
            continue
        for _ in range(per):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            out.append((src.name, np.ascontiguousarray(photo[y:y + size, x:x + size])))
    return out


def payload_bits_of(d: ph.Detection) -> np.ndarray:
    msg = ph.viterbi_decode(d.soft) if d.soft is not None else np.zeros(ph.N_MSG, np.int8)
    return msg[:ph.PAYLOAD_BITS]


TRUE_BITS = np.unpackbits(np.frombuffer(PAYLOAD, np.uint8))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(ph.luma(a), ph.luma(b), data_range=255.0))


def ours_on(images, attack_list) -> dict:
    marked, psnrs, ssims, t_embed = [], [], [], []
    for _, im in images:
        t = time.perf_counter()
        wm = ph.embed(im, KEY, PAYLOAD)
        t_embed.append(time.perf_counter() - t)
        marked.append(wm)
        psnrs.append(ph.psnr(im, wm))
        ssims.append(ssim(im, wm))
    per_attack, t_detect = {}, []
    for spec in attack_list:
        fn = attacks.parse(spec)
        det = ok = 0
        accs = []
        for i, wm in enumerate(marked):
            x = wm if spec == "none" else fn(wm, np.random.default_rng(i))
            t = time.perf_counter()
            d = ph.detect(x, KEY)
            t_detect.append(time.perf_counter() - t)
            det += d.detected
            ok += d.payload == PAYLOAD.hex()
            accs.append(float(np.mean(payload_bits_of(d) == TRUE_BITS)))
        n = len(marked)
        per_attack[spec] = {"payload_rate": round(ok / n, 3), "detection_rate": round(det / n, 3),
                            "bit_accuracy": round(float(np.mean(accs)), 4)}
    return {"n_images": len(images), "sources": sorted({s for s, _ in images}),
            "psnr_db": {"mean": round(float(np.mean(psnrs)), 2), "min": round(float(np.min(psnrs)), 2)},
            "ssim": {"mean": round(float(np.mean(ssims)), 4), "min": round(float(np.min(ssims)), 4)},
            "embed_ms": round(1e3 * float(np.median(t_embed)), 1),
            "detect_ms": round(1e3 * float(np.median(t_detect)), 1), "attacks": per_attack}


def baseline_on(images, attack_list) -> dict:
    try:
        from imwatermark import WatermarkDecoder, WatermarkEncoder
    except Exception as exc:  # not installed: the bench still runs
        return {"available": False, "reason": f"invisible-watermark not importable: {type(exc).__name__}: {exc}"}
    enc = WatermarkEncoder()
    enc.set_watermark("bytes", PAYLOAD)
    dec = WatermarkDecoder("bytes", 32)
    marked, psnrs, ssims, t_embed, errors = [], [], [], [], 0
    for _, im in images:
        bgr = cv2.cvtColor(im, cv2.COLOR_RGB2BGR)
        t = time.perf_counter()
        try:
            out = enc.encode(bgr, "dwtDct")
        except Exception:
            errors += 1
            marked.append(None)
            continue
        t_embed.append(time.perf_counter() - t)
        rgb = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
        marked.append(rgb)
        psnrs.append(ph.psnr(im, rgb))
        ssims.append(ssim(im, rgb))
    per_attack, t_detect = {}, []
    for spec in attack_list:
        fn = attacks.parse(spec)
        ok, accs = 0, []
        for i, wm in enumerate(marked):
            if wm is None:
                accs.append(0.5)
                continue
            x = wm if spec == "none" else fn(wm, np.random.default_rng(i))
            t = time.perf_counter()
            try:
                got = dec.decode(cv2.cvtColor(x, cv2.COLOR_RGB2BGR), "dwtDct")
                bits = np.unpackbits(np.frombuffer(bytes(got)[:4].ljust(4, b"\0"), np.uint8))
            except Exception:
                bits = 1 - TRUE_BITS  # refused (e.g. too small after the attack): counts as failure
            t_detect.append(time.perf_counter() - t)
            accs.append(float(np.mean(bits == TRUE_BITS)))
            ok += bool(np.all(bits == TRUE_BITS))
        per_attack[spec] = {"payload_rate": round(ok / len(marked), 3), "bit_accuracy": round(float(np.mean(accs)), 4)}
    return {"available": True, "method": "dwtDct", "embed_errors": errors,
            "psnr_db": {"mean": round(float(np.mean(psnrs)), 2), "min": round(float(np.min(psnrs)), 2)} if psnrs else None,
            "ssim": {"mean": round(float(np.mean(ssims)), 4)} if ssims else None,
            "embed_ms": round(1e3 * float(np.median(t_embed)), 1) if t_embed else None,
            "detect_ms": round(1e3 * float(np.median(t_detect)), 1) if t_detect else None,
            "attacks": per_attack}


def timing_1080p(repeat: int = 3) -> dict:
    """Median of `repeat` timed calls per operation, after one untimed call of each method (the
    first call in a process pays imports, caches and fresh memory; no user waits on that twice)."""
    photo = next(s for s in realdata.bundled_sources() if s.name == "skimage:hubble_deep_field").load()
    im = cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    out = {"threads": THREADS, "repeat": repeat}

    def median_ms(fn) -> tuple[float, object]:
        times, res = [], None
        for _ in range(repeat):
            t = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t)
        return round(1e3 * float(np.median(times)), 1), res

    ph.detect(ph.embed(im, KEY, PAYLOAD), KEY)  # warm-up
    out["ours_embed_ms"], wm = median_ms(lambda: ph.embed(im, KEY, PAYLOAD))
    out["ours_detect_ms"], d = median_ms(lambda: ph.detect(wm, KEY))
    out["ours_payload_ok"] = d.payload == PAYLOAD.hex()
    # unmarked: the full search runs (no early stop)
    out["ours_detect_unmarked_ms"], d0 = median_ms(lambda: ph.detect(im, KEY))
    out["ours_unmarked_detected"] = d0.detected
    out["ours_psnr_db"] = round(ph.psnr(im, wm), 2)
    try:
        from imwatermark import WatermarkDecoder, WatermarkEncoder

        enc = WatermarkEncoder()
        enc.set_watermark("bytes", PAYLOAD)
        bgr = cv2.cvtColor(im, cv2.COLOR_RGB2BGR)
        WatermarkDecoder("bytes", 32).decode(enc.encode(bgr, "dwtDct"), "dwtDct")  # warm-up
        out["dwtdct_embed_ms"], b = median_ms(lambda: enc.encode(bgr, "dwtDct"))
        out["dwtdct_detect_ms"], _ = median_ms(lambda: WatermarkDecoder("bytes", 32).decode(b, "dwtDct"))
        out["time_ratio_embed_ours_over_dwtdct"] = round(out["ours_embed_ms"] / out["dwtdct_embed_ms"], 2)
        out["time_ratio_detect_ours_over_dwtdct"] = round(out["ours_detect_ms"] / out["dwtdct_detect_ms"], 2)
        out["time_ratio_detect_unmarked_ours_over_dwtdct"] = round(out["ours_detect_unmarked_ms"] / out["dwtdct_detect_ms"], 2)
    except Exception as exc:
        out["dwtdct"] = f"unavailable: {type(exc).__name__}"
    return out


def false_positives(n: int, rng: np.random.Generator, marked_pool) -> dict:
    """Unmarked real patches (sides 32–256 px) with our key, and marked images with a wrong key."""
    sources = [s.load() for s in realdata.bundled_sources()]
    sides = [32, 48, 64, 96, 128, 192, 256]
    detections, pvals, t0 = 0, [], time.perf_counter()
    for i in range(n):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        side = min(int(rng.choice(sides)), h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        d = ph.detect(photo[y:y + side, x:x + side], KEY)
        detections += d.detected
        pvals.append(d.p_value)
    wrong = sum(ph.detect(wm, WRONG).detected for wm in marked_pool)
    p = np.array(pvals)
    return {"unmarked_patches": n, "unmarked_detections": int(detections),
            "empirical_fpr": detections / max(n, 1),
            "fpr_95pct_upper_bound": round(1 - 0.05 ** (1 / max(n, 1)), 6) if detections == 0 else None,
            "p_below_0.01_fraction": round(float(np.mean(p < 0.01)), 4),
            "p_below_0.05_fraction": round(float(np.mean(p < 0.05)), 4),
            "wrong_key_marked": len(marked_pool), "wrong_key_detections": int(wrong),
            "seconds": round(time.perf_counter() - t0, 1)}


def small_images(rng: np.random.Generator) -> dict:
    out = {}
    srcs = [s for s in realdata.bundled_sources()]
    for size in (32, 64, 96):
        ok = {"none": 0, "noise:2": 0, "jpeg:90": 0}
        ps = []
        for s in srcs:
            im = cv2.resize(s.load(), (size, size), interpolation=cv2.INTER_AREA)
            wm = ph.embed(im, KEY, PAYLOAD)
            ps.append(ph.psnr(im, wm))
            for spec in ok:
                x = wm if spec == "none" else attacks.parse(spec)(wm, rng)
                ok[spec] += ph.detect(x, KEY).payload == PAYLOAD.hex()
        out[f"{size}x{size}"] = {"n": len(srcs), "psnr_min": round(min(ps), 2),
                                 **{f"payload_rate_{k}": round(v / len(srcs), 3) for k, v in ok.items()}}
    return out


def video(quick: bool) -> dict:
    specs = ["none", "h264:28", "h264:28+framedrop:0.2", "resize:0.5+h264:28", "h264:28+framedrop:0.2+resize:0.5"]
    names = ["skimage:chelsea", "skimage:coffee", "skimage:gravel", "sklearn:flower.jpg"]
    # two windows per photo: 8 clips per camera, so one clip moves a rate by 0.125, not 0.25
    origins = [(10, 10)] if quick else [(10, 10), (130, 20)]
    n_frames = 12 if quick else 24
    out = {}
    for camera in ("static", "pan"):
        res = {s: 0 for s in specs}
        psnrs, psnr_low, n, fp, fp_n = [], [], 0, 0, 0
        for name in names[: 2 if quick else 4]:
            photo = next(s for s in realdata.bundled_sources() if s.name == name).load()
            for x0, y0 in origins:
                rng = np.random.default_rng(n)
                frames = []
                for t in range(n_frames):
                    dx = 0.0 if camera == "static" else 2.0 * t
                    m = np.array([[1, 0, x0 + dx], [0, 1, y0 + 0.5 * dx]], np.float64)
                    fr = cv2.warpAffine(photo, m, (256, 256), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                        borderMode=cv2.BORDER_REFLECT).astype(np.float32)
                    frames.append(np.clip(np.round(fr + rng.normal(0, 1.5, fr.shape)), 0, 255).astype(np.uint8))
                clip = np.stack(frames)
                wm = ph.embed_frames(clip, KEY, PAYLOAD)
                per_frame = [ph.psnr(a, b) for a, b in zip(clip, wm)]
                psnrs.append(float(np.mean(per_frame)))
                psnr_low.append(float(np.min(per_frame)))
                stored = attacks.h264(wm, crf=18)  # what `watermark embed` writes
                for s in specs:
                    x = stored if s == "none" else attacks.parse(s)(stored, np.random.default_rng(1))
                    res[s] += ph.detect_frames(x, KEY).payload == PAYLOAD.hex()
                if not quick:  # the same clip unmarked, as stored and re-encoded: must stay silent
                    plain = attacks.h264(clip, crf=18)
                    for x in (plain, attacks.h264(plain, crf=28)):
                        fp += ph.detect_frames(x, KEY).detected
                        fp_n += 1
                n += 1
        out[camera] = {"clips": n, "frames": n_frames, "size": "256x256",
                       "psnr_db_mean": round(float(np.mean(psnrs)), 2),
                       "psnr_db_min_frame": round(float(np.min(psnr_low)), 2),
                       "payload_rate": {s: round(v / n, 3) for s, v in res.items()},
                       "unmarked_clips_tested": fp_n, "unmarked_detections": fp}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer images and attacks (a smoke run)")
    ap.add_argument("--fpr-n", type=int, default=None, help="unmarked patches for the false-positive rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["video", "images", "timing", "fpr"], default=None,
                    help="run one section: video (clips), images (256/512 attacks and dwtDct), "
                         "timing (1080p embed/detect against dwtDct), fpr (the false-positive "
                         "section on the same patches as a full run)")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per 1080p operation (median)")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    if a.only in ("video", "timing"):
        result = {"bench": "watermark", "only": a.only,
                  a.only: video(a.quick) if a.only == "video" else timing_1080p(a.repeat)}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result))
        return 0
    attack_list = ["none", "jpeg:50", "resize:0.5", "crop:0.5", "blur:1"] if a.quick else IMAGE_ATTACKS
    im256 = crops(256, 1 if a.quick else 4, rng, "test")
    im512 = crops(512, 1, rng, None)[: 3 if a.quick else 8]
    fpr_n = a.fpr_n if a.fpr_n is not None else (200 if a.quick else 1000)
    if a.only == "fpr":  # the crops above drew from rng as a full run does: the same patches follow
        marked_pool = [ph.embed(im, KEY, PAYLOAD) for _, im in im256[:8]]
        result = {"bench": "watermark", "only": a.only, "false_positives": false_positives(fpr_n, rng, marked_pool)}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result))
        return 0
    result = {
        "bench": "watermark",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "method": {"ours": f"forensics {ph.ALGORITHM}: periodic keyed spread spectrum, 32-bit payload, "
                           f"CRC-32 + K=7 r=1/2 code, threshold p <= {ph.DEFAULT_THRESHOLD}",
                   "baseline": "invisible-watermark dwtDct (32-bit payload, no detection test)"},
        "ours": {"256": ours_on(im256, attack_list), "512": ours_on(im512, attack_list)},
        "baseline_dwtdct": {"256": baseline_on(im256, attack_list), "512": baseline_on(im512, attack_list)},
    }
    if a.only == "images":
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result))
        return 0
    result["timing_1080p"] = timing_1080p(a.repeat)
    marked_pool = [ph.embed(im, KEY, PAYLOAD) for _, im in im256[:8]]
    result["false_positives"] = false_positives(fpr_n, rng, marked_pool)
    result["small_images"] = small_images(rng)
    result["video"] = video(a.quick)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
