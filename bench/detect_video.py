"""Is `forensics detect clip.mp4` faster than real time, and how far from decoding alone? One JSON.

1. Footage: a 10 s 640x360 30 fps H.264 clip of a virtual camera panning over a bundled real
   photo (scikit-learn's china.jpg) with temporal grain, made by ffmpeg; the 60 s and 10 min
   clips repeat it with `-stream_loop` and a stream copy (no re-encode, so they are cheap).
2. Per clip length, in one run: the floor, ffmpeg decoding every frame and throwing it away
   (`ffmpeg -i clip -f null -`), and `forensics detect clip --json` as a user runs it (a fresh
   process with default options: start-up, imports and checkpoint loading count). Each is
   timed by wall clock and by CPU time (user + system), and its peak RSS is measured, from
   resource.getrusage(RUSAGE_CHILDREN) in a launcher that runs only that command.
   ratio_to_decode = detect wall / decode wall; realtime_factor = clip duration / detect wall.
   On the 10 s clip both run `--repeat` times (default 7), alternating, and medians are reported;
   there `detect --detectors temporal` (no per-frame detectors at all) runs in the same rounds, as
   `temporal_only_cli`: the least work a clip verdict can take, against the same floor.
3. In-process on the 10 s clip: loading the detectors, then `detect_file` (sampling + decoding,
   each detector's scoring), timed after the imports.
   Batch (`--batch N`, default 10): `forensics detect DIR --json` on a folder of N copies of the
   10 s clip, against ffmpeg decoding the N files one after the other; one process pays the
   start-up once, as when a folder is scanned. Alternating, `--repeat` // 2 (at least 2) times.
4. Per-frame budget check (`--budget-check`, on by default): per-frame detectors used to score 16
   frames of a 640x360 clip, then 4 frames with every patch of their grid (220), and now 4
   frames with an evenly spread subgrid of at most 64 patches each (detect.PER_FRAME_PATCHES,
   FRAME_PATCHES); on real 640x360 pans over every bundled photo (and on upscaled video-diffusion
   clips from the video corpus when it exists), the fused p and verdict with the default budget
   and with the full grids of the same 4 frames.

Timings on a shared machine are pessimistic: the load average is recorded before and after.

    .venv/bin/python bench/detect_video.py [--seconds 10] [--size 640x360] [--fps 30]
        [--lengths 10,60,600] [--repeat 7] [--no-budget-check]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_clip(path: Path, seconds: float, w: int, h: int, fps: int, photo: str = "sklearn:china.jpg") -> Path:
    """A camera panning right and down over a real photo at constant speed, with temporal grain."""
    from forensics import media, realdata

    src = path.with_suffix(".src.png")
    media.write_png(src, realdata._load_source(photo))
    vf = (f"scale={int(w * 1.5) // 2 * 2}:{int(h * 1.5) // 2 * 2},"
          f"crop={w}:{h}:x='(iw-{w})*t/{seconds}':y='(ih-{h})*t/{seconds}/2',"
          "noise=alls=4:allf=t,format=yuv420p")
    cmd = [media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-loop", "1", "-framerate", str(fps),
           "-i", str(src), "-t", str(seconds), "-vf", vf, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
           "-r", str(fps), "-movflags", "+faststart", str(path)]
    try:
        subprocess.run(cmd, check=True, timeout=600, capture_output=True)
    finally:
        src.unlink(missing_ok=True)
    return path


def loop_clip(src: Path, dst: Path, times: int) -> Path:
    from forensics import media

    cmd = [media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(times - 1),
           "-i", str(src), "-c", "copy", "-movflags", "+faststart", str(dst)]
    subprocess.run(cmd, check=True, timeout=600, capture_output=True)
    return dst


# Runs one command and writes its wall time and rusage. Children are started through this small
# launcher because Linux keeps a process's peak RSS across exec: a command forked straight from
# this bench (which has imported numpy, OpenCV and the photos) would report the bench's RSS.
_LAUNCHER = """
import json, os, resource, subprocess, sys, time
t0 = time.time()
rc = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1] + ".out", "wb"), stderr=open(sys.argv[1] + ".err", "wb"))
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"wall_s": time.time() - t0, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_kb": ru.ru_maxrss, "exit": rc},
          open(sys.argv[1], "w"))
"""


ENV: dict[str, str] = dict(os.environ)


def bytecode_cache(folder: Path) -> None:
    """Children read and write compiled modules under `folder`, as an installed package has its
    .pyc files; this workspace sets PYTHONDONTWRITEBYTECODE, which would make every run compile
    the project's modules from source (~0.3 s of CPU)."""
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(folder)


def run_child(args: list[str], timeout: float = 3600) -> dict:
    """Run a command; its wall time, CPU time (user + system) and peak RSS, from
    resource.getrusage(RUSAGE_CHILDREN) in a launcher that runs nothing else."""
    with tempfile.TemporaryDirectory() as d:
        rep = Path(d) / "rusage.json"
        subprocess.run([sys.executable, "-c", _LAUNCHER, str(rep), *args], cwd=ROOT, timeout=timeout,
                       check=True, env=ENV)
        r = json.loads(rep.read_text())
        return {"wall_s": round(r["wall_s"], 3), "cpu_s": round(r["cpu_s"], 3),
                "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1), "exit": r["exit"],
                "stdout": Path(str(rep) + ".out").read_text(errors="replace"),
                "stderr": Path(str(rep) + ".err").read_text(errors="replace")}


def measure_length(clip: Path, repeat: int = 1) -> dict:
    """Decode floor and `detect`, alternating, `repeat` times each; medians (and every run's wall
    time) are reported: single runs on a shared 2-core machine vary by ±30 %. With repeat > 1,
    `detect --detectors temporal` runs in the same rounds too."""
    import statistics

    from forensics import media

    info = media.probe_video(clip)
    decs, dets, temps = [], [], []
    for _ in range(max(1, repeat)):
        decs.append(run_child([media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(clip),
                               "-f", "null", "-"]))
        dets.append(run_child([sys.executable, str(ROOT / "cli.py"), "detect", str(clip), "--json"]))
        if repeat > 1:
            temps.append(run_child([sys.executable, str(ROOT / "cli.py"), "detect", str(clip), "--json",
                                    "--detectors", "temporal"]))

    def med(runs, k):
        return round(statistics.median(r[k] for r in runs), 3)

    dec = {k: med(decs, k) for k in ("wall_s", "cpu_s", "peak_rss_mb")}
    det = {k: med(dets, k) for k in ("wall_s", "cpu_s", "peak_rss_mb")}
    det["exit"] = max(r["exit"] for r in dets)
    bad = next((r for r in dets if r["exit"]), None)
    r = json.loads(dets[-1]["stdout"].strip().splitlines()[-1]) if bad is None else {}
    return {
        "duration_s": info.duration, "frames": info.frames, "bytes": clip.stat().st_size, "runs": len(dets),
        "ffmpeg_decode": dec, "detect_cli": det,
        "wall_s_each": {"ffmpeg_decode": [r["wall_s"] for r in decs], "detect_cli": [r["wall_s"] for r in dets]},
        "detect_error": bad["stderr"].strip()[-300:] if bad else None,
        "ratio_to_decode_wall": round(det["wall_s"] / dec["wall_s"], 2) if dec["wall_s"] else None,
        "ratio_to_decode_wall_per_run": round(statistics.median(b["wall_s"] / a["wall_s"] for a, b in zip(decs, dets)), 2),
        "ratio_to_decode_cpu": round(det["cpu_s"] / dec["cpu_s"], 2) if dec["cpu_s"] else None,
        "realtime_factor": round(info.duration / det["wall_s"], 2) if det["wall_s"] else None,
        "realtime_factor_cpu": round(info.duration / det["cpu_s"], 2) if det["cpu_s"] else None,
        "faster_than_real_time": det["wall_s"] < info.duration,
        "verdict": r.get("verdict"), "p_synthetic": r.get("p_synthetic"),
        "frames_scored": r.get("frames_scored"), "frames_per_frame_detectors": r.get("frames_per_frame_detectors"),
        **({"temporal_only_cli": {
            "wall_s": med(temps, "wall_s"), "cpu_s": med(temps, "cpu_s"),
            "ratio_to_decode_wall": round(med(temps, "wall_s") / dec["wall_s"], 2) if dec["wall_s"] else None,
            "ratio_to_decode_wall_per_run": round(statistics.median(t["wall_s"] / a["wall_s"]
                                                                    for a, t in zip(decs, temps)), 2),
            "exit": max(t["exit"] for t in temps)}} if temps else {}),
    }


def batch(clip: Path, folder: Path, n: int, repeat: int) -> dict:
    """`forensics detect DIR` on n copies of the clip against decoding them one after another."""
    import shutil
    import statistics

    from forensics import media

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        files.append(folder / f"copy_{k:03d}.mp4")
        shutil.copyfile(clip, files[-1])
    ff = [media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    decode_all = ["sh", "-c", 'for f in "$@"; do "$0" -hide_banner -loglevel error -nostdin -i "$f" -f null - || exit 1; done',
                  ff[0], *map(str, files)]
    decs, dets = [], []
    for _ in range(max(2, repeat)):
        decs.append(run_child(decode_all))
        dets.append(run_child([sys.executable, str(ROOT / "cli.py"), "detect", str(folder), "--json"]))
    lines = [json.loads(ln) for ln in dets[-1]["stdout"].splitlines() if ln.strip()]
    summary = next((x["summary"] for x in lines if "summary" in x), None)
    dec = statistics.median(r["wall_s"] for r in decs)
    det = statistics.median(r["wall_s"] for r in dets)
    for f in files:
        f.unlink(missing_ok=True)
    return {"files": n, "runs": len(dets), "ffmpeg_decode_all_wall_s": round(dec, 3),
            "detect_dir_wall_s": round(det, 3), "detect_dir_cpu_s": round(statistics.median(r["cpu_s"] for r in dets), 3),
            "detect_dir_peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in dets), 1),
            "per_file_s": round(det / n, 3), "ratio_to_decode_wall": round(det / dec, 2) if dec else None,
            "ratio_to_decode_wall_per_run": round(statistics.median(b["wall_s"] / a["wall_s"] for a, b in zip(decs, dets)), 2),
            "summary": summary, "exit": max(r["exit"] for r in dets)}


def in_process(clip: Path) -> dict:
    """Timings after the imports: what the library costs on top of start-up."""
    t = time.time()
    from forensics import detect  # noqa: F401  (the detector modules come with load_detectors)

    import_s = time.time() - t
    t0, c0 = time.time(), time.process_time()
    dets = detect.load_detectors()
    load_s, load_cpu = time.time() - t0, time.process_time() - c0
    t0, c0 = time.time(), time.process_time()
    r = detect.detect_file(clip, dets)
    total_s, total_cpu = time.time() - t0, time.process_time() - c0
    t0 = time.time()
    m = detect.load_media(clip)
    sample_s = time.time() - t0
    still = detect.per_frame_subset(m)
    per_det = {}
    for n, d in dets.items():
        if m.modality in d.modalities:
            t1 = time.time()
            d.score(m if getattr(d, "uses_frame_runs", False) else still)
            per_det[n] = round(time.time() - t1, 3)
    return {"imports_s": round(import_s, 3), "load_detectors_s": round(load_s, 3),
            "load_detectors_cpu_s": round(load_cpu, 3),
            "detect_file_s": round(total_s, 3), "detect_file_cpu_s": round(total_cpu, 3),
            "sample_and_decode_s": round(sample_s, 3), "score_s": per_det,
            "frames": len(m.frames), "frames_per_frame_detectors": len(still.frames),
            "pair_gap": m.pair_gap, "verdict": r["verdict"], "p_synthetic": r["p_synthetic"]}


def budget_check(tmp: Path, w: int, h: int, fps: int, seconds: float = 3.0, n_synth: int = 10) -> dict:
    """Fused p and verdict with the default per-frame budget vs every patch of the same frames
    (the budget before FRAME_PATCHES), on the same decoded samples."""
    import numpy as np

    from forensics import detect, media, realdata
    from forensics.detectors import base as dbase

    dets = detect.load_detectors()
    clips: list[tuple[str, Path]] = []
    for src in realdata.bundled_sources():
        p = tmp / f"real_{src.name.split(':')[-1].replace('.', '_')}.mp4"
        try:
            make_clip(p, seconds, w, h, fps, photo=src.name)
        except subprocess.CalledProcessError:
            continue
        clips.append(("real", p))
    corpus = ROOT / "datasets" / "corpora" / "video"
    if (corpus / "metadata.jsonl").is_file():
        from forensics.corpus import Corpus

        import cv2

        c = Corpus(corpus)
        rows = [r for r in c.select(split="test", modality="video") if r.get("architecture") == "video_diffusion"]
        for r in rows[:n_synth]:
            frames, f_fps = media.read_video(c.path(r))
            big = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])
            p = tmp / f"vd_{Path(r['file_name']).stem}.mp4"
            media.write_mp4(p, big, fps=f_fps or 8.0, crf=23, preset="veryfast")
            clips.append(("video_diffusion_upscaled", p))
    per_group: dict[str, list[dict]] = {}
    for label, p in clips:
        m = detect.load_media(p)
        rows = {}
        for name in ("default", "full_grid"):
            still = detect.per_frame_subset(m)
            if name == "full_grid":
                still = dataclasses.replace(still, max_patches=None)
            ev = detect.score_media(m, dets, still)
            pf, thr, fi = detect.fuse(ev, dets, m.modality)
            rows[name] = {"p": pf, "verdict": detect.verdict(pf, thr, fi), "frames": len(still.frames),
                          **{n: dbase.logit(e.p_synthetic) for n, e in ev.items() if n != "temporal"},
                          **{f"{n}_flag": e.p_synthetic >= dets[n].threshold for n, e in ev.items()}}
        per_group.setdefault(label, []).append(rows)
        p.unlink(missing_ok=True)
    out = {}
    for label, rows in per_group.items():
        a, b = [r["default"] for r in rows], [r["full_grid"] for r in rows]
        g = {"clips": len(rows), "frames": a[0]["frames"], "patches_per_frame": {"default": detect.FRAME_PATCHES, "full_grid": "all"},
             "verdict_agreement": round(float(np.mean([x["verdict"] == y["verdict"] for x, y in zip(a, b)])), 3),
             "verdicts_default": {v: sum(x["verdict"] == v for x in a) for v in ("real", "uncertain", "synthetic")},
             "verdicts_full_grid": {v: sum(y["verdict"] == v for y in b) for v in ("real", "uncertain", "synthetic")},
             "mean_abs_dp_fused": round(float(np.mean([abs(x["p"] - y["p"]) for x, y in zip(a, b)])), 4),
             "max_abs_dp_fused": round(float(np.max([abs(x["p"] - y["p"]) for x, y in zip(a, b)])), 4)}
        for n in ("artifact", "frequency"):
            if n in a[0]:
                # each detector alone: how far its clip logit moves, and whether it still falls on
                # the same side of its own threshold
                g[n] = {"mean_abs_dlogit": round(float(np.mean([abs(x[n] - y[n]) for x, y in zip(a, b)])), 3),
                        "max_abs_dlogit": round(float(np.max([abs(x[n] - y[n]) for x, y in zip(a, b)])), 3),
                        "flag_agreement": round(float(np.mean([x[f"{n}_flag"] == y[f"{n}_flag"]
                                                               for x, y in zip(a, b)])), 3),
                        "flagged_default": int(sum(x[f"{n}_flag"] for x in a)),
                        "flagged_full_grid": int(sum(y[f"{n}_flag"] for y in b))}
        out[label] = g
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--lengths", default="10,60,600", help="clip lengths in seconds, multiples of --seconds")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each timing on the first (shortest) clip; medians")
    ap.add_argument("--batch", type=int, default=10, help="copies of the 10 s clip for the folder timing (0: skip)")
    ap.add_argument("--no-budget-check", action="store_true")
    ap.add_argument("--keep", help="keep the clips in this folder")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    from forensics import media

    load0 = os.getloadavg()
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="video-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    base = tmp / f"clip_{int(a.seconds)}s.mp4"
    t0 = time.time()
    make_clip(base, a.seconds, w, h, a.fps)
    made_s = time.time() - t0
    info = media.probe_video(base)
    # The imports `detect` needs, with BLAS at one thread as `forensics detect` sets it before numpy
    # loads (OpenBLAS's idle threads otherwise spin: ~0.45 s of CPU and ~0.06 s more wall here).
    startup_cmd = [sys.executable, "-c", "import os; os.environ.setdefault('OPENBLAS_NUM_THREADS', '1'); "
                   "import forensics.detect, forensics.detectors.base as b; b.names()"]
    cold = run_child(startup_cmd)                     # as this workspace runs: no .pyc written
    bytecode_cache(tmp / "pycache")
    run_child(startup_cmd)                            # compiles once into the cache
    lengths = {}
    for L in (int(x) for x in a.lengths.split(",") if x.strip()):
        times = max(1, round(L / a.seconds))
        clip = base if times == 1 else loop_clip(base, tmp / f"clip_{L}s.mp4", times)
        lengths[f"{L}s"] = measure_length(clip, a.repeat if not lengths else 1)
        if clip != base and not a.keep:
            clip.unlink(missing_ok=True)
    starts = [run_child(startup_cmd) for _ in range(5)]
    start = {k: sorted(r[k] for r in starts)[2] for k in ("wall_s", "cpu_s", "peak_rss_mb")}   # medians of 5
    proc = in_process(base)
    folder = batch(base, tmp / "batch", a.batch, a.repeat // 2) if a.batch > 0 else None
    out = {
        "clip": {"width": info.width, "height": info.height, "fps": info.fps, "duration_s": info.duration,
                 "frames": info.frames, "codec": info.codec, "bytes": base.stat().st_size,
                 "made_in_s": round(made_s, 2),
                 "footage": "virtual camera panning over sklearn:china.jpg with temporal grain (ffmpeg)"},
        "lengths": lengths,
        "startup_floor": {k: start[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")},
        "startup_floor_without_bytecode_cache": {k: cold[k] for k in ("wall_s", "cpu_s")},
        "bytecode": "children use a .pyc cache (PYTHONPYCACHEPREFIX), as an installed package does",
        "in_process_10s": proc,
        **({"batch_10s_clips": folder} if folder else {}),
        "in_process_ratio_to_decode_wall": round(proc["detect_file_s"] / lengths[next(iter(lengths))]
                                                 ["ffmpeg_decode"]["wall_s"], 2) if lengths else None,
        "memory_flat_under_1_5_gb": all(v["detect_cli"]["peak_rss_mb"] < 1536 for v in lengths.values()),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "load_average_before": [round(x, 2) for x in load0],
    }
    if not a.no_budget_check:
        t0 = time.time()
        out["per_frame_budget_check"] = budget_check(tmp, w, h, a.fps)
        out["per_frame_budget_check"]["seconds"] = round(time.time() - t0, 1)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    if not a.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
