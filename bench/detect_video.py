"""Is `forensics detect clip.mp4` faster than real time? One JSON object on stdout.

Makes a 10 s 1280x720 30 fps H.264 clip (ffmpeg pans a camera over a bundled photo, with
temporal grain), then, in one run:
- the floor: ffmpeg decoding the clip alone (`ffmpeg -i clip -f null -`);
- `forensics detect clip --json` as a user runs it (default options, a fresh process, so
  imports and checkpoint loading count): wall time, CPU time (user + system; on a shared machine
  the wall time also counts waiting for the cores), peak RSS; and the start-up floor alone (Python +
  importing the detector modules);
- in-process: frame sampling + decoding, and each installed detector's scoring time.
Real-time factor = clip duration / detect wall time (> 1: faster than real time).

    .venv/bin/python bench/detect_video.py [--seconds 10] [--size 1280x720] [--fps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_clip(path: Path, seconds: float, w: int, h: int, fps: int) -> Path:
    from forensics import media, realdata

    photo = realdata._load_source("sklearn:china.jpg")
    src = path.with_suffix(".png")
    media.write_png(src, photo)
    # Scale the photo so the window can pan across it; pan right and down at constant speed.
    vf = (f"scale={int(w * 1.5)}:{int(h * 1.5)},"
          f"crop={w}:{h}:x='(iw-{w})*t/{seconds}':y='(ih-{h})*t/{seconds}/2',"
          "noise=alls=4:allf=t,format=yuv420p")
    cmd = [media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-loop", "1", "-framerate", str(fps),
           "-i", str(src), "-t", str(seconds), "-vf", vf, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
           "-r", str(fps), "-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True, timeout=600)
    src.unlink()
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--keep", help="keep the clip at this path")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    from forensics import detect, media

    tmp = Path(tempfile.mkdtemp(prefix="video-bench-"))
    clip = Path(a.keep) if a.keep else tmp / "clip.mp4"
    t0 = time.time()
    make_clip(clip, a.seconds, w, h, a.fps)
    make_s = time.time() - t0
    info = media.probe_video(clip)

    # 1. the floor: ffmpeg decodes every frame and throws it away
    t0 = time.time()
    subprocess.run([media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(clip), "-f", "null", "-"],
                   check=True, timeout=600)
    decode_s = time.time() - t0

    # 2. the CLI, as a user runs it (wall time, and CPU time: what the process itself used,
    #    which does not grow when other jobs share the cores)
    def cli(*args):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=1200,
                              env=dict(os.environ), cwd=ROOT)
        wall = time.time() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        return proc, wall, cpu

    proc, cli_s, cli_cpu = cli(str(ROOT / "cli.py"), "detect", str(clip), "--json")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    # start-up alone: Python + importing every detector module (their libraries: numpy, OpenCV,
    # scikit-learn, torch, timm...), nothing decoded or scored
    _, imports_s, imports_cpu = cli("-c", "from forensics.detectors import base; base.names()")

    # 3. in-process breakdown, on the frames detect gives each detector
    t0 = time.time()
    dets = detect.load_detectors()
    load_det_s = time.time() - t0
    t0 = time.time()
    m = detect.load_media(clip)
    load_s = time.time() - t0
    still = detect.per_frame_subset(m)
    per_det = {}
    for n, d in dets.items():
        if m.modality in d.modalities:
            t1 = time.time()
            d.score(m if getattr(d, "uses_frame_runs", False) else still)
            per_det[n] = round(time.time() - t1, 3)

    out = {
        "clip": {"width": info.width, "height": info.height, "fps": info.fps, "duration_s": info.duration,
                 "frames": info.frames, "codec": info.codec, "bytes": clip.stat().st_size,
                 "made_in_s": round(make_s, 2)},
        "ffmpeg_decode_s": round(decode_s, 3),
        "detect_cli_s": round(cli_s, 3),
        "detect_cli_cpu_s": round(cli_cpu, 3),
        "detector_imports_s": round(imports_s, 3),
        "detector_imports_cpu_s": round(imports_cpu, 3),
        "faster_than_real_time_by_cpu_time": cli_cpu < info.duration,
        "detect_cli_exit": proc.returncode,
        "detect_cli_error": proc.stderr.strip()[-300:] if proc.returncode else None,
        "realtime_factor": round(info.duration / cli_s, 2) if cli_s else None,
        "faster_than_real_time": cli_s < info.duration,
        "ratio_to_decode_floor": round(cli_s / decode_s, 2) if decode_s else None,
        "peak_rss_mb_children": round(peak_kb / 1024, 1),
        "frames_scored": (result or {}).get("frames_scored"),
        "frames_per_frame_detectors": (result or {}).get("frames_per_frame_detectors"),
        "detectors": sorted((result or {}).get("detectors", {})),
        "verdict": (result or {}).get("verdict"),
        "p_synthetic": (result or {}).get("p_synthetic"),
        "temporal": {k: v for k, v in ((result or {}).get("detectors", {}).get("temporal") or {}).items()
                     if k in ("p_synthetic", "measures")},
        "in_process": {"load_detectors_s": round(load_det_s, 3), "sample_and_decode_s": round(load_s, 3),
                       "frames": len(m.frames), "frames_per_frame_detectors": len(still.frames),
                       "pair_gap": getattr(m, "pair_gap", None), "score_s": per_det},
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    if not a.keep:
        clip.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    main()
