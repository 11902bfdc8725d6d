"""Long fuzz run over the toolkit's readers and commands. Prints one JSON object.

Targets (in-process library calls; only forensics.errors may escape):
  media       mutated PNG/JPEG/WebP/GIF/TIFF/BMP/MP4 through media reading (as `detect` decodes)
  corpus      malformed corpus manifests through the corpus reader
  watermark   mutated media through `watermark detect` (posthoc.detect_file)
  provenance  mutated bytes of C2PA-signed PNG/JPEG/WebP/MP4 through `provenance verify`
  manifest    the same signed files with the mutation inside the manifest store (JUMBF)
  audit       mutated plain and signed media through `audit` (Auditor.audit)
and, after them, the commands themselves (`--cli-batches`): folders of mutated files through
`detect DIR --json`, `watermark detect DIR --json`, `audit DIR --json` and single files through
`provenance verify`, checking exit 0/2 (1 is an internal error), stderr lines that are one-line
`forensics: …` messages (one at most for a single file) and never a traceback, one JSON line per
file on stdout plus the batch summary.

Cases run in a worker process watched by this one: a case that runs past --seconds-per-case is a
hang (the worker is killed and a new one goes on with the next case), a worker that dies is a
crash. Case i draws from numpy's default_rng([seed, i]), so `--only-case i` replays it.

    python bench/fuzz.py [--cases 10000] [--mix media=3,watermark=3,...] [--cli-batches 2]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_MIX = "media=3,corpus=1,watermark=3,provenance=2,manifest=3,audit=1"
IMAGE_EXTS = ("png", "jpg", "webp", "gif", "tif", "bmp")
SIGNED_EXTS = ("png", "jpg", "webp", "mp4")


# ---------------------------------------------------------------------------------------------
# Seeds (made once by the parent, shared by every worker)


def make_seeds(d: Path) -> None:
    from PIL import Image

    from forensics import media, realdata

    photo = realdata._load_source("skimage:chelsea")[:64, :64]
    media.write_png(d / "s.png", photo)
    Image.fromarray(photo).save(d / "s.jpg", quality=85)
    Image.fromarray(photo).save(d / "s.webp", quality=80)
    Image.fromarray(photo).save(d / "s.gif")
    Image.fromarray(photo).save(d / "s.tif")
    Image.fromarray(photo).save(d / "s.bmp")
    media.write_mp4(d / "s.mp4", np.stack([np.roll(photo[:48, :48], i, axis=1) for i in range(6)]), fps=8)
    # A throwaway key set made the way a user makes one, then signed copies (watermarked, so the
    # soft-binding recovery path runs on them too).
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "provenance", "init", "--dir", str(d / "keys")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"provenance init failed: {r.stderr.strip()}")
    from forensics.provenance.sign import sign_file

    for ext in SIGNED_EXTS:
        sign_file(d / f"s.{ext}", d / f"signed.{ext}", keys_dir=d / "keys", architecture="ddpm")


# ---------------------------------------------------------------------------------------------
# The worker: runs cases, one line before and one after each


class Fuzzer:
    def __init__(self, seeds: Path, work: Path):
        from forensics.watermark import posthoc

        self.seeds, self.work = seeds, work
        self.key = posthoc.load_key(seeds / "keys" / "watermark.key")
        self.plain = {ext: (seeds / f"s.{ext}").read_bytes() for ext in (*IMAGE_EXTS, "mp4")}
        self.signed = {ext: (seeds / f"signed.{ext}").read_bytes() for ext in SIGNED_EXTS}
        self._auditor = None

    def auditor(self):
        if self._auditor is None:
            from forensics.audit import Auditor

            self._auditor = Auditor(keys_dir=self.seeds / "keys", max_frames=8)
        return self._auditor

    def case(self, target: str, rng: np.random.Generator) -> tuple[str, str]:
        from forensics import fuzz

        if target == "corpus":
            corpus_case(self.work / "c", rng)
            return "-", fuzz.read_corpus(self.work / "c")
        if target in ("provenance", "manifest") or (target == "audit" and rng.random() < 0.5):
            ext = SIGNED_EXTS[int(rng.integers(len(SIGNED_EXTS)))]
            mut = fuzz.mutate_manifest if target == "manifest" or rng.random() < 0.5 else fuzz.mutate
            data = mut(self.signed[ext], rng)
        else:
            exts = (*IMAGE_EXTS, "mp4")
            ext = exts[int(rng.integers(len(exts)))]
            data = fuzz.mutate(self.plain[ext], rng)
        p = self.work / f"case.{ext}"
        p.write_bytes(data)
        if target == "media":
            return ext, fuzz.read_any(p)
        if target == "watermark":
            return ext, fuzz.watermark_any(p, self.key)
        if target in ("provenance", "manifest"):
            return ext, fuzz.verify_any(p, self.seeds / "keys")
        if target == "audit":
            return ext, fuzz.audit_any(p, self.auditor())
        raise SystemExit(f"unknown target {target}")


def corpus_case(d: Path, rng: np.random.Generator) -> None:
    from forensics import fuzz

    d.mkdir(exist_ok=True)
    good = {"file_name": "images/a.png", "sha256": "0" * 64, "label": "real", "modality": "image",
            "family": "real", "split": "train"}
    line = json.dumps(good).encode()
    lines = [fuzz.mutate(line, rng) if rng.random() < 0.7 else line for _ in range(int(rng.integers(1, 4)))]
    (d / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (d / "corpus.json").write_bytes(fuzz.mutate(b'{"name": "x", "counts": {}}', rng))


def schedule(mix: str) -> list[str]:
    out = []
    for part in mix.split(","):
        name, _, w = part.partition("=")
        out += [name.strip()] * int(w or 1)
    return out


def worker(a) -> int:
    seeds = Path(a.seeds)
    work = Path(tempfile.mkdtemp(prefix="fuzz-worker-", dir=seeds.parent))
    fz = Fuzzer(seeds, work)
    plan = schedule(a.mix)
    if "audit" in plan:  # loading the detectors (torch) is start-up, not the first case's time
        fz.auditor()
    # The protocol gets a private copy of stdout; fd 1 goes to /dev/null so that whatever a
    # library prints cannot be mistaken for (or split) a protocol line.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdout = open(os.devnull, "w")
    try:
        for i in range(a.start, a.cases):
            target = plan[i % len(plan)]
            out.write(f"B {i}\n")
            out.flush()
            t0 = time.perf_counter()
            try:
                ext, res = fz.case(target, np.random.default_rng([a.seed, i]))
                msg = {"i": i, "target": target, "ext": ext, "outcome": res}
            except Exception as exc:  # anything but a typed error is a finding
                tb = traceback.extract_tb(exc.__traceback__)
                own = [f for f in tb if "/forensics/" in f.filename or "/bench/" in f.filename] or tb
                msg = {"i": i, "target": target, "unexpected": f"{type(exc).__name__}: {exc}"[:300],
                       "where": f"{own[-1].filename.rsplit('/', 2)[-2:]}:{own[-1].lineno}" if own else None,
                       "deepest": f"{tb[-1].filename}:{tb[-1].lineno}" if tb else None}
            msg["s"] = round(time.perf_counter() - t0, 4)
            out.write("E " + json.dumps(msg) + "\n")
            out.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The watchdog


def run_cases(a, seeds: Path) -> dict:
    counts: dict = defaultdict(Counter)
    unexpected, hangs, crashes = [], [], []
    slowest = {"s": 0.0}
    worst: dict = defaultdict(float)
    i = 0
    while i < a.cases:
        cmd = [sys.executable, __file__, "--worker", "--seeds", str(seeds), "--start", str(i),
               "--cases", str(a.cases), "--seed", str(a.seed), "--mix", a.mix]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True)
        buf, current, started = b"", None, time.time()
        fd = proc.stdout.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    text = line.decode()
                    if text.startswith("B "):
                        current, started = int(text[2:]), time.time()
                    elif text.startswith("E "):
                        m = json.loads(text[2:])
                        current, i = None, m["i"] + 1
                        if "unexpected" in m:
                            unexpected.append(m)
                            counts[m["target"]]["unexpected"] += 1
                        else:
                            counts[m["target"]][f"{m['ext']}:{m['outcome']}"] += 1
                        worst[m["target"]] = max(worst[m["target"]], m["s"])
                        if m["s"] > slowest["s"]:
                            slowest = {"s": m["s"], "case": m["i"], "target": m["target"],
                                       "ext": m.get("ext"), "outcome": m.get("outcome")}
            if current is not None and time.time() - started > a.seconds_per_case:
                os.killpg(proc.pid, signal.SIGKILL)
                hangs.append({"case": current, "target": schedule(a.mix)[current % len(schedule(a.mix))],
                              "killed_after_s": round(time.time() - started, 1)})
                break
        proc.wait()
        if current is not None and (not hangs or hangs[-1]["case"] != current):
            crashes.append({"case": current, "returncode": proc.returncode})
        if current is not None:
            i = current + 1
        elif proc.returncode and i < a.cases:  # died between cases (import error, …): give up
            raise SystemExit(f"fuzz worker failed to start (exit {proc.returncode})")
        if a.progress:
            print(f"  {i}/{a.cases} cases", file=sys.stderr, flush=True)
    per_target = {t: {"cases": sum(c.values()), "unexpected": c.get("unexpected", 0),
                      "slowest_s": round(worst[t], 3), "outcomes": dict(sorted(c.items()))}
                  for t, c in sorted(counts.items())}
    for h in hangs:
        per_target.setdefault(h["target"], {"cases": 0, "unexpected": 0, "outcomes": {}})
        per_target[h["target"]]["hangs"] = per_target[h["target"]].get("hangs", 0) + 1
    return {"cases": a.cases, "per_target": per_target, "unexpected_exceptions": len(unexpected),
            "examples": unexpected[:10], "hangs": len(hangs), "hang_cases": hangs[:10],
            "crashes": len(crashes), "crash_cases": crashes[:10], "slowest_case": slowest}


# ---------------------------------------------------------------------------------------------
# The commands


def cli_batches(a, seeds: Path) -> dict:
    """Run the real commands on folders of mutated files; check the exit/stderr/stdout contract."""
    from forensics import fuzz

    rng = np.random.default_rng([a.seed, 1 << 30])
    plain = {ext: (seeds / f"s.{ext}").read_bytes() for ext in (*IMAGE_EXTS, "mp4")}
    signed = {ext: (seeds / f"signed.{ext}").read_bytes() for ext in SIGNED_EXTS}
    keys = seeds / "keys"
    runs, files, problems, slowest = Counter(), Counter(), [], {"s": 0.0}

    def folder(n: int) -> Path:
        d = Path(tempfile.mkdtemp(prefix="fuzz-cli-", dir=seeds.parent))
        for j in range(n):
            if rng.random() < 0.5:
                ext = SIGNED_EXTS[int(rng.integers(len(SIGNED_EXTS)))]
                data = (fuzz.mutate_manifest if rng.random() < 0.6 else fuzz.mutate)(signed[ext], rng)
            else:
                ext = (*IMAGE_EXTS, "mp4")[int(rng.integers(len(IMAGE_EXTS) + 1))]
                data = fuzz.mutate(plain[ext], rng) if rng.random() < 0.9 else plain[ext]
            (d / f"m{j:04d}.{ext}").write_bytes(data)
        return d

    def check(name: str, args: list[str], n_files: int, batch: bool) -> None:
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                               timeout=a.cli_timeout, cwd=ROOT, env={**os.environ, "FORENSICS_DEBUG": ""})
        except subprocess.TimeoutExpired:
            problems.append({"command": name, "args": args[-3:], "problem": f"timed out after {a.cli_timeout} s"})
            return
        dt = time.time() - t0
        if dt > slowest["s"]:
            slowest.update(s=round(dt, 1), command=name, files=n_files)
        runs[name] += 1
        files[name] += n_files
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        bad = []
        if r.returncode not in (0, 2):
            bad.append(f"exit {r.returncode}")
        if "Traceback" in r.stderr:
            bad.append("traceback on stderr")
        if any(not ln.startswith("forensics: ") for ln in err):
            bad.append("stderr line that is not a one-line `forensics:` message")
        if not batch and len(err) > 1:
            bad.append(f"{len(err)} stderr lines for one file")
        if batch:
            try:
                rows = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
            except ValueError:
                rows, _ = [], bad.append("stdout line that is not JSON")
            summary = rows.pop()["summary"] if rows and "path" not in rows[-1] else None
            failed = sum("error" in x for x in rows)
            if len(rows) != n_files:
                bad.append(f"{len(rows)} result lines for {n_files} files")
            if summary is None or summary.get("failed") != failed or summary.get("files") != n_files:
                bad.append(f"summary {summary} does not match {failed} error rows of {n_files}")
            if r.returncode != (2 if failed else 0):
                bad.append(f"exit {r.returncode} with {failed} failed files")
        if bad:
            problems.append({"command": name, "args": args, "problem": "; ".join(bad),
                             "stderr_tail": r.stderr.strip()[-300:]})

    for b in range(a.cli_batches):
        d = folder(a.cli_files)
        check("watermark detect", ["watermark", "detect", str(d), "--json", "--key", str(keys / "watermark.key"),
                                   "--max-frames", "8"], a.cli_files, True)
        check("audit", ["audit", str(d), "--json", "--keys", str(keys), "--max-frames", "8"], a.cli_files, True)
        check("detect", ["detect", str(d), "--json", "--max-frames", "8"], a.cli_files, True)
        for f in sorted(d.iterdir())[: a.cli_single]:
            check("provenance verify", ["provenance", "verify", str(f), "--keys", str(keys), "--json"], 1, False)
            check("watermark detect (one file)", ["watermark", "detect", str(f), "--key",
                                                  str(keys / "watermark.key")], 1, False)
        shutil.rmtree(d, ignore_errors=True)
    return {"runs": dict(runs), "files": dict(files), "problems": len(problems), "problem_examples": problems[:10],
            "slowest_run": slowest}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10000, help="in-process cases over all targets")
    ap.add_argument("--mix", default=DEFAULT_MIX, help=f"target=weight list (default {DEFAULT_MIX})")
    ap.add_argument("--seconds-per-case", type=float, default=30.0, help="a case over this is a hang")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli-batches", type=int, default=1, help="folders of mutated files through the commands")
    ap.add_argument("--cli-files", type=int, default=40, help="files per folder")
    ap.add_argument("--cli-single", type=int, default=5, help="single-file command runs per folder")
    ap.add_argument("--cli-timeout", type=float, default=900)
    ap.add_argument("--only-case", type=int, help="replay one case in this process (raises what it raises)")
    ap.add_argument("--seeds-dir", help="make the seed files and keys here (outside the repository: keys are "
                    "refused inside it) and keep them, or reuse them")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="forensics-fuzz-") as tmp:
        # Signing draws fresh ids and signatures: replaying a case needs the run's own seeds.
        seeds = Path(a.seeds_dir) if a.seeds_dir else Path(tmp) / "seeds"
        if not (seeds / "signed.mp4").is_file():
            seeds.mkdir(parents=True, exist_ok=True)
            make_seeds(seeds)
        if a.only_case is not None:
            plan = schedule(a.mix)
            work = Path(tmp) / "w"
            work.mkdir()
            target = plan[a.only_case % len(plan)]
            ext, res = Fuzzer(seeds, work).case(target, np.random.default_rng([a.seed, a.only_case]))
            print(json.dumps({"case": a.only_case, "target": target, "ext": ext, "outcome": res}))
            return 0
        out = {"command": " ".join(["python bench/fuzz.py", *sys.argv[1:]])}
        out.update(run_cases(a, seeds))
        out["cli"] = cli_batches(a, seeds) if a.cli_batches else None
    out["seconds"] = round(time.time() - t_start, 1)
    print(json.dumps(out))
    ok = not (out["unexpected_exceptions"] or out["hangs"] or out["crashes"] or (out["cli"] or {}).get("problems"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
