"""Batch mode memory: `forensics detect DIR --json` over a folder of N distinct small files,
sampling the detect process's resident memory (RSS) as it streams its results.

- The folder: N distinct images, random crops (24–64 px, any aspect) of the bundled photos with
  random flips, half PNG and half JPEG (quality 70–95), 1,000 per subfolder. Distinct bytes and
  sizes, so no cache or deduplication can flatter the numbers; encoding in memory makes 100,000
  files in about a minute.
- Memory: RSS sampled every --interval seconds alongside the number of result lines read so far.
  Reported at 10 %, 50 % and 100 % of the files and the peak; flat memory means RSS at 100 %
  about that at 10 % (the `growth_10_to_100` ratio near 1).
- The folder lives under --dir (default: a temp folder) and is deleted afterwards.

    python bench/batch_memory.py [--files 100000] [--detectors frequency] [--dir runs/]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forensics import realdata  # noqa: E402

PER_FOLDER = 1000


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def make_files(d: Path, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    photos = [np.ascontiguousarray(realdata._load_source(s.name)[..., ::-1]) for s in realdata.bundled_sources()]
    photos = [p for p in photos if min(p.shape[:2]) >= 64]
    t0, nbytes = time.time(), 0
    for k in range(0, n, PER_FOLDER):
        sub = d / f"{k // PER_FOLDER:04d}"
        sub.mkdir(parents=True)
        for j in range(k, min(k + PER_FOLDER, n)):
            im = photos[int(rng.integers(len(photos)))]
            h, w = (int(x) for x in rng.integers(24, 65, size=2))
            y, x = int(rng.integers(im.shape[0] - h + 1)), int(rng.integers(im.shape[1] - w + 1))
            crop = im[y:y + h, x:x + w]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if j % 2:
                ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
                name = f"{j:07d}.jpg"
            else:
                ok, buf = cv2.imencode(".png", crop)
                name = f"{j:07d}.png"
            (sub / name).write_bytes(buf.tobytes())
            nbytes += buf.size
    return {"seconds": round(time.time() - t0, 1), "mb": round(nbytes / 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--detectors", default="frequency",
                    help="detectors for `detect` (default frequency, the light one; 'all' = every installed)")
    ap.add_argument("--dir", help="make the folder under this one (default: the system temp folder)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.dir:
        Path(a.dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="batch-memory-", dir=a.dir))
    try:
        d = tmp / "many"
        made = make_files(d, a.files, a.seed)
        cmd = [sys.executable, str(ROOT / "cli.py"), "detect", str(d), "--json"]
        if a.detectors != "all":
            cmd += ["--detectors", a.detectors]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        lines = 0
        samples: list[tuple[float, int, float]] = []  # (seconds, result lines so far, RSS MB)
        stderr_lines: list[str] = []

        def watch():
            while proc.poll() is None:
                m = rss_mb(proc.pid)
                if m is not None:
                    samples.append((time.time() - t0, lines, m))
                time.sleep(a.interval)

        def drain():  # a bad file writes one stderr line; never let the pipe fill up
            for line in proc.stderr:
                if len(stderr_lines) < 20:
                    stderr_lines.append(line.rstrip())

        threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=drain, daemon=True)]
        for th in threads:
            th.start()
        last, first_line_s = None, None
        for line in proc.stdout:
            lines += 1
            if first_line_s is None:
                first_line_s = time.time() - t0
            last = line
        proc.wait()
        seconds = time.time() - t0
        for th in threads:
            th.join()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def at(frac: float) -> float | None:
        hit = [m for _, n, m in samples if n >= frac * a.files]
        return round(hit[0], 1) if hit else (round(samples[-1][2], 1) if samples and frac >= 1 else None)

    try:
        summary = json.loads(last)["summary"] if last else None
    except (ValueError, KeyError):
        summary = None
    steady = seconds - (first_line_s or 0.0)  # files/s after start-up (imports, detector loading)
    out = {"files": a.files, "detectors": a.detectors, "made": made, "returncode": proc.returncode,
           "result_lines": lines, "summary": summary, "seconds": round(seconds, 1),
           "startup_s": round(first_line_s or 0.0, 1),
           "files_per_second": round(a.files / max(1e-9, seconds), 1),
           "files_per_second_after_startup": round(a.files / max(1e-9, steady), 1),
           "rss_mb_at_10pct": at(0.1), "rss_mb_at_50pct": at(0.5), "rss_mb_at_100pct": at(1.0),
           "rss_mb_peak": round(max(m for _, _, m in samples), 1) if samples else None,
           "rss_samples": len(samples), "stderr_head": stderr_lines[:5]}
    if out["rss_mb_at_10pct"] and out["rss_mb_at_100pct"]:
        out["growth_10_to_100"] = round(out["rss_mb_at_100pct"] / out["rss_mb_at_10pct"], 3)
        out["growth_10_to_peak"] = round(out["rss_mb_peak"] / out["rss_mb_at_10pct"], 3)
    print(json.dumps(out))
    return 0 if proc.returncode == 0 and summary and summary.get("files") == a.files else 1


if __name__ == "__main__":
    sys.exit(main())
