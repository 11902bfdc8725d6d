"""Long fuzz run: mutated real media through media reading (as `detect` decodes), and malformed
corpus manifests through the reader. Prints one JSON object: cases, outcomes, unexpected
exceptions (must be 0) and hangs (cases over the per-case bound; must be 0).

    python bench/fuzz.py [--cases 10000] [--seconds-per-case 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forensics import fuzz, media, realdata  # noqa: E402


def seeds(d: Path) -> dict[str, bytes]:
    photo = realdata._load_source("skimage:chelsea")[:64, :64]
    media.write_png(d / "s.png", photo)
    Image.fromarray(photo).save(d / "s.jpg", quality=85)
    Image.fromarray(photo).save(d / "s.webp", quality=80)
    Image.fromarray(photo).save(d / "s.gif")
    Image.fromarray(photo).save(d / "s.tif")
    Image.fromarray(photo).save(d / "s.bmp")
    media.write_mp4(d / "s.mp4", np.stack([photo[:32, :32]] * 6), fps=8)
    return {p.suffix[1:]: p.read_bytes() for p in d.iterdir()}


def corpus_case(d: Path, rng: np.random.Generator) -> None:
    good = {"file_name": "images/a.png", "sha256": "0" * 64, "label": "real", "modality": "image",
            "family": "real", "split": "train"}
    line = json.dumps(good).encode()
    lines = [fuzz.mutate(line, rng) if rng.random() < 0.7 else line for _ in range(int(rng.integers(1, 4)))]
    (d / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (d / "corpus.json").write_bytes(fuzz.mutate(b'{"name": "x", "counts": {}}', rng))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seconds-per-case", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    outcomes: Counter = Counter()
    unexpected, hangs, slowest = [], 0, 0.0
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s = seeds(tmp)
        kinds = sorted(s) + ["corpus"]
        (tmp / "c").mkdir()
        for i in range(a.cases):
            kind = kinds[i % len(kinds)]
            t0 = time.time()
            try:
                if kind == "corpus":
                    corpus_case(tmp / "c", rng)
                    res = fuzz.read_corpus(tmp / "c")
                else:
                    p = tmp / f"case.{kind}"
                    p.write_bytes(fuzz.mutate(s[kind], rng))
                    res = fuzz.read_any(p)
                outcomes[f"{kind}:{res}"] += 1
            except Exception as exc:  # anything but a typed error is a finding
                unexpected.append({"case": i, "kind": kind, "error": f"{type(exc).__name__}: {exc}"[:300],
                                   "where": traceback.format_exc().splitlines()[-3][:200]})
            dt = time.time() - t0
            slowest = max(slowest, dt)
            hangs += dt > a.seconds_per_case
    print(json.dumps({"cases": a.cases, "seconds": round(time.time() - t_start, 1), "outcomes": dict(outcomes),
                      "unexpected_exceptions": len(unexpected), "examples": unexpected[:10],
                      "hangs": hangs, "slowest_case_s": round(slowest, 3)}))
    return 0 if not unexpected and not hangs else 1


if __name__ == "__main__":
    sys.exit(main())
