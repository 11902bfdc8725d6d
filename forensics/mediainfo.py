"""What a media file is, without decoding it: sniffing, limits, the ffmpeg probe, frame plans.

Standard library only, so that `forensics detect` can probe a video and start decoding it
(forensics/framepipe.py) before numpy and OpenCV are imported. forensics/media.py re-exports
every name here; use it from there.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import MediaError

MAX_PIXELS = 100_000_000  # per image or frame; 100 MP covers every camera short of gigapixel
MAX_DURATION_S = 3600.0  # per video
MAX_FRAMES = 200_000
MAX_FILE_BYTES = 4 * 1024**3
PROBE_TIMEOUT_S = 20.0

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"}
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS

SEEK_MIN_GAP = 300  # frames; past the longest common keyframe interval (x264's default is 250)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    frames: int  # declared by the container; may be an estimate
    duration: float
    codec: str


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: $IMAGEIO_FFMPEG_EXE, the one on PATH, else the one imageio-ffmpeg ships."""
    found = os.environ.get("IMAGEIO_FFMPEG_EXE") or shutil.which("ffmpeg")
    if found:
        return found
    # Look in imageio-ffmpeg's binaries folder without importing it: the import costs ~60 ms,
    # a large share of `detect`'s start-up on a short clip.
    spec = importlib.util.find_spec("imageio_ffmpeg")
    if spec is not None and spec.origin:
        shipped = sorted(Path(spec.origin).parent.joinpath("binaries").glob("ffmpeg-*"))
        shipped = [f for f in shipped if f.is_file() and os.access(f, os.X_OK)]
        if len(shipped) == 1:
            return str(shipped[0])
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise MediaError("no ffmpeg binary: install imageio-ffmpeg or put ffmpeg on PATH") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


# ---------------------------------------------------------------------------------------------
# Recognizing a file


def sniff(path: str | os.PathLike) -> str:
    """Return "image" or "video" from the file's leading bytes, or raise MediaError."""
    p = _check_file(path)
    with open(p, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head[:6] in (b"GIF87a", b"GIF89a") or head[:2] == b"BM":
        return "image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska / WebM
        return "video"
    ext = p.suffix.lower()
    kind = "an image" if ext in IMAGE_EXTS else "a video" if ext in VIDEO_EXTS else "media"
    raise MediaError(f"not {kind} in a supported format (unrecognized content)", p)


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError("no such file", p)
    if p.is_dir():
        raise MediaError("is a directory, not a media file", p)
    if not p.is_file():
        raise MediaError("not a regular file", p)
    size = p.stat().st_size
    if size == 0:
        raise MediaError("empty file (0 bytes)", p)
    if size > MAX_FILE_BYTES:
        raise MediaError(f"file is {size / 1e9:.1f} GB, over the {MAX_FILE_BYTES / 1e9:.0f} GB limit", p)
    return p


# ---------------------------------------------------------------------------------------------
# Probing a video

_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\S+.*?: Video: (\w+)[^\n]*?, (\d{1,6})x(\d{1,6})[^\n]*")
_FPS = re.compile(r"([\d.]+)\s*(?:fps|tbr)")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Probe a video with the ffmpeg binary (there is no ffprobe in imageio-ffmpeg)."""
    return probe_video_text(path)[0]


def probe_video_text(path: str | os.PathLike) -> tuple[VideoInfo, str]:
    """`probe_video` and ffmpeg's description of the file (its stderr), for callers that need
    more than VideoInfo holds (pixel format, rotation, stream count)."""
    p = _check_file(path)
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p)],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise MediaError(f"probing the video took over {PROBE_TIMEOUT_S:.0f} s; refused", p) from None
    text = proc.stderr.decode("utf-8", "replace")
    if "Invalid data found" in text or "moov atom not found" in text or "Input #0" not in text:
        last = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = last[-1].split(": ", 1)[-1] if last else "unknown error"
        raise MediaError(f"not a readable video ({why})", p)
    m = _VIDEO_STREAM.search(text)
    if not m:
        raise MediaError("has no video stream (audio-only or data-only container)", p)
    codec, width, height = m.group(1), int(m.group(2)), int(m.group(3))
    fm = _FPS.search(m.group(0))
    fps = float(fm.group(1)) if fm else 0.0
    dm = _DURATION.search(text)
    duration = (int(dm.group(1)) * 3600 + int(dm.group(2)) * 60 + float(dm.group(3))) if dm else 0.0
    frames = int(round(duration * fps)) if fps > 0 and duration > 0 else 0
    return VideoInfo(str(p), width, height, fps, frames, duration, codec), text


def check_video_limits(info: VideoInfo, max_pixels: int = MAX_PIXELS, max_duration: float = MAX_DURATION_S) -> None:
    if info.width * info.height > max_pixels:
        raise MediaError(
            f"video frames are {info.width}x{info.height}, over the {max_pixels / 1e6:.0f}-megapixel limit",
            info.path,
        )
    if info.duration > max_duration:
        raise MediaError(f"video lasts {info.duration:.0f} s, over the {max_duration:.0f} s limit", info.path)
    if info.frames > MAX_FRAMES:
        raise MediaError(f"video declares {info.frames} frames, over the {MAX_FRAMES} limit", info.path)


def pair_gap(fps: float, target_fps: float) -> int:
    """Frames between the two frames of a pair, so that pairs are ~1/target_fps s apart."""
    return max(1, int(round(fps / target_fps))) if fps and fps > 0 else 1


def plan_runs(n_frames: int, max_frames: int, run_length: int = 8, gap: int = 1) -> list[int]:
    """Frame numbers to decode: runs of `run_length` frames `gap` apart, spread evenly over a video
    of `n_frames` (0 = unknown: one run from the start), at most `max_frames` in all.

    Runs give consecutive pairs for temporal evidence; spreading them covers the whole clip."""
    max_frames = max(1, int(max_frames))
    gap = max(1, int(gap))
    L = max(1, min(run_length, max_frames))
    span = (L - 1) * gap + 1
    if n_frames <= 0:
        return [i * gap for i in range(max_frames)]
    if n_frames <= span:
        return list(range(0, n_frames, gap))[:max_frames]
    n_runs = max(1, min(max_frames // L, -(-n_frames // span)))
    # evenly spaced run starts, rounded half to even: numpy.linspace(0, last, n).round()
    last = n_frames - span
    starts = [0] if n_runs == 1 else [round(i * (last / (n_runs - 1))) for i in range(n_runs - 1)] + [last]
    want = sorted({s0 + k * gap for s0 in starts for k in range(L)})
    return want[:max_frames]
