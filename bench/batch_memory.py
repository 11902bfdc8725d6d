"""Batch mode memory: `forensics detect DIR --json` over a folder of N files (hard links to a
few real files, so the folder is cheap to make), sampling the process's RSS as it streams.
Prints one JSON object: files, seconds, RSS at 10 % and at the end, and their ratio.

    python bench/batch_memory.py [--files 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forensics import media, realdata  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seeds = []
        for i, src in enumerate(realdata.bundled_sources()[:4]):
            seeds.append(media.write_png(tmp / f"seed{i}.png", src.load()[:64, :64]))
        d = tmp / "many"
        for k in range(0, a.files, 1000):
            sub = d / f"{k // 1000:04d}"
            sub.mkdir(parents=True)
            for j in range(k, min(k + 1000, a.files)):
                os.link(seeds[j % len(seeds)], sub / f"{j:07d}.png")
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "detect", str(d), "--json",
                                 "--detectors", "frequency"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, cwd=ROOT)
        lines = 0
        samples: list[tuple[int, float]] = []

        def watch():
            while proc.poll() is None:
                samples.append((lines, rss_mb(proc.pid)))
                time.sleep(0.5)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        last = None
        for line in proc.stdout:
            lines += 1
            last = line
        proc.wait()
        th.join()
        early = [m for n, m in samples if n >= a.files // 10] or [0.0]
        summary = json.loads(last)["summary"] if last else None
        out = {"files": a.files, "lines": lines, "summary": summary, "seconds": round(time.time() - t0, 1),
               "files_per_second": round(a.files / max(1e-9, time.time() - t0), 1),
               "rss_mb_at_10pct": round(early[0], 1), "rss_mb_peak": round(max(m for _, m in samples), 1),
               "rss_mb_end": round(samples[-1][1], 1) if samples else None}
        out["growth_ratio"] = round(out["rss_mb_peak"] / max(1e-9, out["rss_mb_at_10pct"]), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
