"""C2PA provenance: signing/verification cost, tamper detection, soft-binding recovery.

Prints one JSON object:
- `timing`: median seconds to sign and to verify per format (PNG, JPEG, WebP, MP4), with the
  soft-binding watermark and without it (`--no-watermark`);
- `tamper`: randomized tampers of signed PNG, JPEG and MP4 files, each classified by what
  verify says (`invalid` or a malformed-manifest error counts as detected):
    * `pixel_edit`: a random rectangle of pixels changed, the file rebuilt around the original
      manifest (PNG: IDAT swapped with valid CRCs; JPEG: scan data swapped; MP4: a byte of a
      frame's coded data flipped);
    * `asset_byte_flip`: one random bit flipped anywhere outside the manifest's own box;
    * `manifest_byte_flip`: one random bit flipped inside the manifest's box. A flip that leaves
      what verify reports unchanged (JUMBF padding, box labels no claim covers) is counted as
      `harmless`, not as a miss;
    * `foreign_certificate`: the same content signed by another CA's key: must not be `trusted`.
  Goal: 100 % detected (harmless flips aside).
- `soft_binding`, per image size (`--sizes`, default 64,128,256,512 px square): PNGs signed
  with the watermark, then
    * `strip`: re-saved by OpenCV as PNG (metadata gone, pixels kept);
    * `jpeg75`: re-encoded by OpenCV as JPEG 75 (metadata gone, pixels changed);
  the fraction whose manifest is recovered through the watermark (goal ≥ 95 %), how the id was
  read (`decoded`: Viterbi + CRC; `known-payload test`: the store's candidates nearest in
  perceptual hash), with a verified signature; and false recoveries (goal 0) on
    * `unmarked_originals`: the unsigned source of every signed image, JPEG 75 — same content,
      so its perceptual hash finds the signed image's row and the known-payload test runs;
    * `unmarked_other`: other crops, JPEG 75.
  One key folder serves every size, so the store holds all signed images (the candidates
  compete). `match_null`: the known-payload test alone on unmarked crops against random ids
  (max Z, count at p ≤ threshold).

Images are random multi-scale crops of all the photos bundled with scikit-image and scikit-learn
(forensics.realdata.default_crops: every split; each crop resized to the size; the test-split
photos are also reported on their own), --size pixels square for timing and tamper.
Usage: python bench/provenance.py [--quick] [--n-tamper 240] [--n-soft 200] [--sizes 64,128,256,512]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from forensics import media, realdata  # noqa: E402
from forensics.errors import ForensicsError  # noqa: E402
from forensics.provenance import keys as pkeys  # noqa: E402
from forensics.provenance import softbinding  # noqa: E402
from forensics.provenance.sign import sign_file  # noqa: E402
from forensics.provenance.verify import verify_file  # noqa: E402


def crops(n: int, size: int, seed: int, with_split: bool = False) -> list:
    rs = realdata.default_crops(per_source=max(1, -(-n // len(realdata.bundled_sources()))), size=size, seed=seed)
    idx = np.random.default_rng(seed).permutation(len(rs))[:n]
    return [(rs.images[i], rs.splits[i]) if with_split else rs.images[i] for i in idx]


# --------------------------------------------------------------------------------------------- manifest boxes


C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")  # the C2PA box's uuid in BMFF


def manifest_span(data: bytes, fmt: str) -> tuple[int, int]:
    """[start, end) of the bytes that hold the C2PA manifest store in a signed file."""
    if fmt == "png":
        i = 8
        while i < len(data):
            n = struct.unpack(">I", data[i:i + 4])[0]
            if data[i + 4:i + 8] == b"caBX":
                return i, i + 12 + n
            i += 12 + n
    elif fmt == "jpeg":
        i, lo, hi = 2, None, None
        while i + 4 <= len(data) and data[i] == 0xFF:
            marker, n = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker == 0xEB:  # APP11: JUMBF
                lo = i if lo is None else lo
                hi = i + 2 + n
            if marker == 0xDA:
                break
            i += 2 + n
        if lo is not None:
            return lo, hi
    elif fmt == "mp4":
        i = 0
        while i + 8 <= len(data):
            n = struct.unpack(">I", data[i:i + 4])[0]
            if data[i + 4:i + 8] == b"uuid" and data[i + 8:i + 24] == C2PA_UUID:
                return i, i + n
            if n < 8:
                break
            i += n
    raise RuntimeError(f"no manifest box found in the {fmt} file")


def _png_swap_idat(signed: bytes, other: bytes) -> bytes:
    def chunks(b):
        i, out = 8, []
        while i < len(b):
            n = struct.unpack(">I", b[i:i + 4])[0]
            out.append((b[i + 4:i + 8], b[i:i + 12 + n]))
            i += 12 + n
        return out
    idat = b"".join(c for t, c in chunks(other) if t == b"IDAT")
    out, done = [signed[:8]], False
    for t, c in chunks(signed):
        if t == b"IDAT":
            if not done:
                out.append(idat)
                done = True
            continue
        out.append(c)
    return b"".join(out)


def _jpeg_swap_scan(signed: bytes, other: bytes) -> bytes:
    """Keep `signed`'s headers (manifest included) and take `other`'s entropy-coded scan."""
    def sos(b):
        i = 2
        while i + 4 <= len(b) and b[i] == 0xFF:
            if b[i + 1] == 0xDA:
                return i
            i += 2 + struct.unpack(">H", b[i + 2:i + 4])[0]
        raise RuntimeError("no SOS")
    return signed[:sos(signed)] + other[sos(other):]


def _classify(path: Path, kd: Path) -> tuple[str, dict | None]:
    try:
        r = verify_file(path, keys_dir=kd, soft_binding=False)
    except ForensicsError as exc:
        return ("malformed" if "malformed C2PA" in str(exc) else "error"), None
    return r["state"], r


def _report_key(r: dict | None) -> str:
    if r is None:
        return ""
    keep = {k: r.get(k) for k in ("state", "manifest_id", "signer", "claim_generator", "title", "actions",
                                  "digital_source_type", "ingredients", "soft_binding", "generator")}
    keep["codes"] = sorted(s["code"] for s in r["status"])
    return json.dumps(keep, sort_keys=True, default=str)


def bench_tamper(work: Path, kd: Path, foreign: Path, n: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    imgs = crops(12, size, seed + 1)
    fmts = {"png": ".png", "jpeg": ".jpg", "mp4": ".mp4"}
    signed: dict[str, list[tuple[Path, np.ndarray]]] = {f: [] for f in fmts}
    for i, im in enumerate(imgs):
        for fmt, ext in fmts.items():
            src = work / f"t{i}_src{ext}"
            if fmt == "png":
                media.write_png(src, im)
            elif fmt == "jpeg":
                media.write_jpeg(src, im, quality=92)
            else:
                media.write_mp4(src, np.stack([np.roll(im, k, axis=1) for k in range(8)]), fps=8)
            out = work / f"t{i}_signed{ext}"
            sign_file(src, out, keys_dir=kd, architecture="ddpm", watermark=False)
            signed[fmt].append((out, im))
    baseline = {str(p): _report_key(_classify(p, kd)[1]) for fl in signed.values() for p, _ in fl}
    assert all(json.loads(v)["state"] == "trusted" for v in baseline.values())
    kinds = ["pixel_edit", "asset_byte_flip", "manifest_byte_flip"]
    res: dict = {k: {"n": 0, "detected": 0, "harmless": 0, "missed": 0, "states": {}} for k in kinds}
    misses = []
    for t in range(n):
        kind = kinds[t % len(kinds)]
        fmt = list(fmts)[(t // len(kinds)) % len(fmts)]
        path, im = signed[fmt][int(rng.integers(len(signed[fmt])))]
        data = path.read_bytes()
        lo, hi = manifest_span(data, fmt)
        if kind == "pixel_edit":
            if fmt == "mp4":  # a byte of coded frame data after the mdat header
                m = data.find(b"mdat") + 4
                d = bytearray(data)
                d[int(rng.integers(m + 16, len(d) if m > hi else lo))] ^= 1 << int(rng.integers(8))
                tampered = bytes(d)
            else:
                edit = im.copy()
                y, x = rng.integers(0, size - 8, 2)
                edit[y:y + 8, x:x + 8] = rng.integers(0, 256, 3, dtype=np.uint8)
                if fmt == "png":
                    tampered = _png_swap_idat(data, media.write_png(work / "e.png", edit).read_bytes())
                else:
                    tampered = _jpeg_swap_scan(data, media.write_jpeg(work / "e.jpg", edit, quality=95).read_bytes())
        else:
            d = bytearray(data)
            if kind == "asset_byte_flip":
                pos = int(rng.integers(len(d) - (hi - lo)))
                pos = pos if pos < lo else pos + (hi - lo)
            else:
                pos = int(rng.integers(lo, hi))
            d[pos] ^= 1 << int(rng.integers(8))
            tampered = bytes(d)
        tp = work / f"tampered{fmts[fmt]}"
        tp.write_bytes(tampered)
        state, r = _classify(tp, kd)
        rr = res[kind]
        rr["n"] += 1
        rr["states"][state] = rr["states"].get(state, 0) + 1
        if state in ("invalid", "malformed"):
            rr["detected"] += 1
        elif kind == "manifest_byte_flip" and state == "trusted" and _report_key(r) == baseline[str(path)]:
            rr["harmless"] += 1
        elif state == "error":  # the file no longer parses as media at all: refused (exit 2)
            rr["detected"] += 1
        else:
            rr["missed"] += 1
            misses.append({"kind": kind, "format": fmt, "state": state})
    # a foreign certificate: must not verify as trusted against our anchors
    fc = {"n": 0, "not_trusted": 0}
    for fmt, ext in fmts.items():
        for i in range(min(4, len(imgs))):
            out = work / f"foreign{i}{ext}"
            sign_file(work / f"t{i}_src{ext}", out, keys_dir=foreign, architecture="ddpm", watermark=False)
            state, _ = _classify(out, kd)
            fc["n"] += 1
            fc["not_trusted"] += state != "trusted"
    total = sum(v["n"] for v in res.values())
    meaningful = total - sum(v["harmless"] for v in res.values())
    detected = sum(v["detected"] for v in res.values())
    return {"n": total, "by_kind": res, "foreign_certificate": fc,
            "detection_rate": round(detected / max(1, meaningful), 4), "misses": misses[:20]}


def bench_timing(work: Path, kd: Path, size: int, seed: int, reps: int) -> dict:
    imgs = crops(reps, size, seed + 2)
    out: dict = {}
    soft = softbinding.unavailable() is None
    for fmt, ext in (("png", ".png"), ("jpeg", ".jpg"), ("webp", ".webp"), ("mp4", ".mp4")):
        for wm in ([False, True] if soft else [False]):
            ts, tv = [], []
            for i, im in enumerate(imgs):
                src = work / f"time{i}{ext}"
                if fmt == "mp4":
                    media.write_mp4(src, np.stack([np.roll(im, k, axis=1) for k in range(16)]), fps=8)
                elif fmt == "webp":
                    cv2.imwrite(str(src), im[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101])
                else:
                    (media.write_png if fmt == "png" else media.write_jpeg)(src, im)
                dst = work / f"time{i}_s{ext}"
                t0 = time.perf_counter()
                sign_file(src, dst, keys_dir=kd, architecture="ddpm", watermark=wm)
                t1 = time.perf_counter()
                r = verify_file(dst, keys_dir=kd)
                t2 = time.perf_counter()
                assert r["state"] == "trusted", r["summary"]
                ts.append(t1 - t0)
                tv.append(t2 - t1)
            out[f"{fmt}{'+watermark' if wm else ''}"] = {"sign_s": round(float(np.median(ts)), 4),
                                                         "verify_s": round(float(np.median(tv)), 4), "n": len(ts)}
    out["note"] = (f"{size}x{size} images; MP4 = 16 frames; verify of a signed file skips watermark "
                   "detection (it only runs when the manifest is missing or invalid)")
    return out


def _recovered(r: dict, manifest_id: str | None = None) -> dict | None:
    rec = r.get("recovered")
    if rec and (manifest_id is None or rec["manifest_id"] == manifest_id):
        return rec
    return None


def bench_soft_size(work: Path, kd: Path, n: int, n_other: int, size: int, seed: int, quality: int) -> dict:
    from forensics.watermark import posthoc

    items = crops(n + n_other, size, seed + 3 + size, with_split=True)
    marked, other = items[:n], [im for im, _ in items[n:]]
    res = {k: {"n": 0, "recovered": 0, "verified_signature": 0, "by_read": {}, "test_split": [0, 0]}
           for k in ("strip", "jpeg75")}
    fails, psnrs, t_verify = [], [], []
    false = {"unmarked_originals": [0, 0], "unmarked_other": [0, 0]}
    for i, (im, split) in enumerate(marked):
        src, signed = work / "soft_src.png", work / "soft_signed.png"
        media.write_png(src, im)
        s = sign_file(src, signed, keys_dir=kd, architecture="ddpm")
        x = cv2.imread(str(signed))
        psnrs.append(posthoc.psnr(im, x[..., ::-1]))
        cv2.imwrite(str(work / "soft_strip.png"), x)
        cv2.imwrite(str(work / "soft_copy.jpg"), x, [cv2.IMWRITE_JPEG_QUALITY, quality])
        for kind, path in (("strip", work / "soft_strip.png"), ("jpeg75", work / "soft_copy.jpg")):
            t0 = time.perf_counter()
            r = verify_file(path, keys_dir=kd)
            t_verify.append(time.perf_counter() - t0)
            rec = _recovered(r, s["manifest_id"])
            st = res[kind]
            st["n"] += 1
            st["test_split"][1] += split == "test"
            if rec:
                st["recovered"] += 1
                st["test_split"][0] += split == "test"
                st["verified_signature"] += rec["signature"] in ("trusted", "valid")
                st["by_read"][rec["binding_read"]] = st["by_read"].get(rec["binding_read"], 0) + 1
            elif len(fails) < 6:
                m = (r.get("soft_binding_check") or {}).get("match") or {}
                fails.append({"attack": kind, "i": i, "reason": (r.get("soft_binding_check") or {}).get("reason"),
                              "match_z": m.get("statistic")})
        # the same content, never marked: the known-payload test runs against its own row's id
        cv2.imwrite(str(work / "plain.jpg"), np.ascontiguousarray(im[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        r = verify_file(work / "plain.jpg", keys_dir=kd)
        false["unmarked_originals"][0] += r.get("recovered") is not None
        false["unmarked_originals"][1] += 1
    for im in other:
        cv2.imwrite(str(work / "plain.jpg"), np.ascontiguousarray(im[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        r = verify_file(work / "plain.jpg", keys_dir=kd)
        false["unmarked_other"][0] += r.get("recovered") is not None
        false["unmarked_other"][1] += 1
    out: dict = {}
    for kind, st in res.items():
        t_ok, t_n = st.pop("test_split")
        out[kind] = {**st, "recovery_rate": round(st["recovered"] / max(1, st["n"]), 4),
                     "test_split_photos": {"n": t_n, "recovered": t_ok}}
    out["false_recoveries"] = {k: {"n": v[1], "false_recoveries": v[0]} for k, v in false.items()}
    out["psnr_db"] = {"mean": round(float(np.mean(psnrs)), 2), "min": round(float(np.min(psnrs)), 2)}
    out["median_verify_s"] = round(float(np.median(t_verify)), 3)
    out["failures"] = fails
    return out


def bench_match_null(n: int, seed: int) -> dict:
    """The known-payload test alone on unmarked crops (64–512 px, JPEG 75) against 16 random ids."""
    from forensics import attacks
    from forensics.provenance.softbinding import MATCH_THRESHOLD, MAX_CANDIDATES
    from forensics.watermark import posthoc

    key = posthoc.WatermarkKey(bytes.fromhex("5eed" * 16))
    rng = np.random.default_rng(seed)
    zs, hits, per = [], 0, max(1, n // 4)
    for size in (64, 128, 256, 512):
        for im in crops(per, size, seed + 7 + size):
            x = attacks.jpeg(im, 75)
            ids = [rng.bytes(4) for _ in range(MAX_CANDIDATES)]
            m = posthoc.match(x, key, ids, threshold=MATCH_THRESHOLD)
            zs.append(m.statistic)
            hits += m.detected
    z = np.array(zs)
    return {"n": len(zs), "candidates_each": MAX_CANDIDATES, "threshold": MATCH_THRESHOLD, "detections": hits,
            "max_z": round(float(z.max()), 3), "z_above_4": int((z > 4).sum()),
            "note": "Z is sub-Gaussian (proxy 1) under the null; detection needs "
                    "p = readings·16·exp(-Z²/2) ≤ threshold"}


def bench_soft(work: Path, kd: Path, n: int, n_other: int, sizes: list[int], seed: int, quality: int,
               null_n: int) -> dict:
    why = softbinding.unavailable()
    if why:
        return {"skipped": why}
    out: dict = {"attacks": {"strip": "metadata stripped: OpenCV re-save as PNG",
                             "jpeg75": f"metadata stripped + OpenCV JPEG {quality} re-encode"},
                 "algorithm": softbinding.algorithm(), "sizes": sizes,
                 "images": f"random multi-scale crops of all {len(realdata.bundled_sources())} bundled photos "
                           "(scikit-image, scikit-learn), resized to size x size; test_split_photos counts those of "
                           + ", ".join(x.name for x in realdata.bundled_sources() if x.split == "test")}
    for size in sizes:
        t0 = time.time()
        out[str(size)] = bench_soft_size(work, kd, n, n_other, size, seed, quality)
        out[str(size)]["seconds"] = round(time.time() - t0, 1)
    from forensics.provenance.store import ManifestStore

    with ManifestStore(pkeys.load_keys(kd).store_path, create=False) as st:
        out["store_rows"] = len(st)  # these sizes' signed images, plus the timing section's
    out["note"] = ("below 128 px the watermark writes its payload by phase QIM, which survives lossless "
                   "re-saves but not JPEG; there even the known-payload test finds too little mark energy at "
                   "PSNR >= 40 dB, so JPEG recovery at 64 px is a stated limit")
    out["match_null"] = bench_match_null(null_n, seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    ap.add_argument("--n-tamper", type=int, default=240)
    ap.add_argument("--n-soft", type=int, default=200)
    ap.add_argument("--n-other", type=int, default=None, help="unmarked other crops per size (default: n-soft)")
    ap.add_argument("--size", type=int, default=128, help="image size for timing and tamper")
    ap.add_argument("--sizes", default="64,128,256,512", help="image sizes for soft binding")
    ap.add_argument("--null-n", type=int, default=2000, help="unmarked crops for the known-payload null test")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: timing,tamper,soft")
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.quick:
        a.n_tamper, a.n_soft, a.null_n = 30, 10, 100
    a.n_other = a.n_soft if a.n_other is None else a.n_other
    sizes = [int(x) for x in a.sizes.split(",") if x]
    skip = set(a.skip.split(","))
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-provenance-"))
    try:
        kd, foreign = work / "keys", work / "foreign"
        pkeys.init_keys(kd)
        pkeys.init_keys(foreign, common_name="foreign signer")
        out = {"bench": "provenance", "size": a.size, "seed": a.seed}
        if "timing" not in skip:
            out["timing"] = bench_timing(work, kd, a.size, a.seed, reps=3 if a.quick else 8)
        if "tamper" not in skip:
            out["tamper"] = bench_tamper(work, kd, foreign, a.n_tamper, a.size, a.seed)
        if "soft" not in skip:
            out["soft_binding"] = bench_soft(work, kd, a.n_soft, a.n_other, sizes, a.seed, a.quality, a.null_n)
        out["seconds"] = round(time.time() - t0, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
