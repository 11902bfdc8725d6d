"""What a media file is, without decoding it: sniffing, limits, the ffmpeg probe, frame plans.

Standard library only, so that `forensics detect` can probe a video and start decoding it
(forensics/framepipe.py) before numpy and OpenCV are imported. forensics/media.py re-exports
every name here; use it from there.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import subprocess
from pathlib import Path
from typing import NamedTuple

from .errors import MediaError

MAX_PIXELS = 100_000_000  # per image or frame; 100 MP covers every camera short of gigapixel
MAX_DURATION_S = 3600.0  # per video
MAX_FRAMES = 200_000
MAX_FILE_BYTES = 4 * 1024**3
PROBE_TIMEOUT_S = 20.0

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".m2v", ".vob",
              ".ts", ".mts", ".m2ts", ".ogv", ".flv", ".wmv", ".asf", ".y4m"}
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS

SEEK_MIN_GAP = 300  # frames; past the longest common keyframe interval (x264's default is 250)


class VideoInfo(NamedTuple):   # a NamedTuple: dataclasses costs `detect` ~15 ms of start-up
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
    import shutil

    found = os.environ.get("IMAGEIO_FFMPEG_EXE") or shutil.which("ffmpeg")
    if found:
        return found
    # Look in imageio-ffmpeg's binaries folder without importing it: the import costs ~60 ms,
    # a large share of `detect`'s start-up on a short clip.
    import importlib.util

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


_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


def video_container(head: bytes) -> str | None:
    """The video container that a file's first 512 bytes name, or None. Audio-only files of these
    containers (an .ogg, an .flv of sound) pass here and fail at the probe ("no video stream")."""
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"                                        # MP4, MOV, 3GP
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"                                   # MKV, WebM
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"                                    # .mpg/.vob: camcorders, DVDs
    if head[:4] == b"\x00\x00\x01\xb3":
        return "mpeg-video"                                 # a bare MPEG-1/2 video stream
    if all(len(head) > i and head[i] == 0x47 for i in (0, 188, 376)):
        return "mpeg-ts"                                    # broadcast, HLS segments
    if all(len(head) > i and head[i] == 0x47 for i in (4, 196, 388)):
        return "mpeg-ts"                                    # M2TS/MTS: AVCHD cameras
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FLV\x01":
        return "flv"
    if head[:16] == _ASF:
        return "asf"                                        # WMV
    if head[:10] == b"YUV4MPEG2 ":
        return "y4m"                                        # raw frames, as test sequences ship
    return None


def sniff(path: str | os.PathLike) -> str:
    """Return "image" or "video" from the file's leading bytes, or raise MediaError."""
    p = _check_file(path)
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head[:6] in (b"GIF87a", b"GIF89a") or head[:2] == b"BM":
        return "image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if video_container(head):
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


def video_info(path: str | os.PathLike) -> VideoInfo:
    """What frame plans are made from: the MP4 sample table when `mp4_info` can read it (exact
    frame count, no subprocess), else the ffmpeg probe. `read_frame_runs` and the frame pipe
    both plan from this, so they decode the same frames."""
    return mp4_info(path) or probe_video(path)


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
_CODECS = {b"avc1": "h264", b"avc3": "h264", b"hvc1": "hevc", b"hev1": "hevc", b"mp4v": "mpeg4",
           b"av01": "av1", b"vp09": "vp9"}
MAX_MOOV_BYTES = 64 * 1024**2


def _box_header(b: bytes, at: int, room: int) -> tuple[bytes, int, int]:
    """(type, header length, size) of the ISO-BMFF box whose header starts at b[at:], with `room`
    bytes left in its parent; ValueError when the header is cut short or the size does not fit."""
    if len(b) < at + 8:
        raise ValueError("box header cut short")
    size, kind = struct.unpack_from(">I4s", b, at)
    head = 8
    if size == 1:
        if len(b) < at + 16:
            raise ValueError("64-bit box size cut short")
        size, head = struct.unpack_from(">Q", b, at + 8)[0], 16
    elif size == 0:
        size = room                                            # to the end of the parent
    if size < head or size > room:
        raise ValueError(f"box {kind!r} overruns its parent")
    return kind, head, size


def _boxes(buf: bytes, start: int, end: int):
    """(type, payload start, payload end) of the ISO-BMFF boxes in buf[start:end]."""
    pos = start
    while pos + 8 <= end:
        kind, head, size = _box_header(buf, pos, end - pos)
        yield kind, pos + head, pos + size
        pos += size


def _find_moov(fh, file_size: int) -> bytes | None:
    """The top-level `moov` box, read without reading the media data around it."""
    pos = 0
    while pos + 8 <= file_size:
        fh.seek(pos)
        kind, _, size = _box_header(fh.read(16), 0, file_size - pos)
        if kind == b"moov":
            if size > MAX_MOOV_BYTES:
                return None
            fh.seek(pos)
            return fh.read(size)
        pos += size
    return None


def mp4_info(path: str | os.PathLike) -> VideoInfo | None:
    """VideoInfo from an MP4/MOV file's `moov` box in a millisecond, or None when the file is not
    one plain video track that OpenCV and ffmpeg decode as exactly its samples: another
    container, fragmented MP4 (samples in `moof`), several video tracks, or an edit list that
    trims or repeats media. frames = the sample count, fps = frames / the track's duration.
    None is never an error: the caller then probes with ffmpeg, which reports problems."""
    try:
        p = Path(path)
        size = p.stat().st_size
        with open(p, "rb") as fh:
            if fh.read(8)[4:8] not in (b"ftyp", b"moov", b"wide", b"free", b"skip", b"mdat"):
                return None
            moov = _find_moov(fh, size)
        if moov is None:
            return None
        video, movie_ts, movie_dur = [], 0, 0
        for kind, a, b in _boxes(moov, 8, len(moov)):
            if kind == b"mvhd":
                v = moov[a]
                movie_ts, movie_dur = (struct.unpack_from(">IQ", moov, a + 20) if v == 1
                                       else struct.unpack_from(">II", moov, a + 12))
            elif kind == b"mvex":
                return None                                   # fragmented
            elif kind == b"trak":
                t = _trak(moov, a, b)
                if t is not None:
                    video.append(t)
        if len(video) != 1 or movie_ts <= 0:
            return None
        t = video[0]
        if t["frames"] <= 0 or t["duration"] <= 0 or t["width"] <= 0 or t["height"] <= 0:
            return None
        if t["edits"] is not None:                          # one edit that shows the whole track
            seg, media_time, rate = t["edits"]
            if rate != 1 or media_time < 0 or abs(seg / movie_ts - t["duration"]) > 1.5 * t["duration"] / t["frames"]:
                return None
        fps = t["frames"] / t["duration"]
        return VideoInfo(str(p), t["width"], t["height"], fps, t["frames"], movie_dur / movie_ts, t["codec"])
    except Exception:  # noqa: BLE001 - any malformed or unexpected box: let ffmpeg probe it
        return None


def _trak(m: bytes, a: int, b: int) -> dict | None:
    """A video track's facts, or None for other tracks (ValueError: one we do not plan from)."""
    box = {}

    def walk(lo, hi):
        for kind, x, y in _boxes(m, lo, hi):
            if kind in _CONTAINERS:
                walk(x, y)
            elif kind in (b"mdhd", b"hdlr", b"stsd", b"stts", b"stsz", b"elst"):
                box.setdefault(kind, (x, y))   # the first: a MOV's minf has a second (data) hdlr

    walk(a, b)
    if b"hdlr" not in box or m[box[b"hdlr"][0] + 8:box[b"hdlr"][0] + 12] != b"vide":
        return None
    x, _ = box[b"mdhd"]
    ts = struct.unpack_from(">I", m, x + (20 if m[x] == 1 else 12))[0]
    x, _ = box[b"stts"]
    n = struct.unpack_from(">I", m, x + 4)[0]
    stts = struct.unpack_from(f">{2 * n}I", m, x + 8)
    frames = sum(stts[0::2])
    ticks = sum(c * d for c, d in zip(stts[0::2], stts[1::2]))
    if b"stsz" in box:
        x, _ = box[b"stsz"]
        if struct.unpack_from(">I", m, x + 8)[0] != frames:
            raise ValueError("the sample tables disagree")
    x, _ = box[b"stsd"]
    fmt = m[x + 12:x + 16]
    width, height = struct.unpack_from(">HH", m, x + 8 + 32)  # VisualSampleEntry
    edits = None
    if b"elst" in box:
        x, _ = box[b"elst"]
        v, count = m[x], struct.unpack_from(">I", m, x + 4)[0]
        if count != 1:
            raise ValueError("an edit list of several edits")
        seg, media_time = (struct.unpack_from(">Qq", m, x + 8) if v == 1 else struct.unpack_from(">Ii", m, x + 8))
        rate = struct.unpack_from(">h", m, x + 8 + (16 if v == 1 else 8))[0]
        edits = (seg, media_time, rate)
    return {"frames": frames, "duration": ticks / ts if ts else 0, "width": width, "height": height,
            "codec": _CODECS.get(fmt, fmt.decode("latin-1").strip()), "edits": edits}


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


def pair_gap(fps: float, target_fps: float, stride: int | None = None) -> int:
    """Frames between the two frames of a pair: `stride` when given (`detect --stride`), else
    so that pairs are ~1/target_fps s apart."""
    if stride:
        return stride
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
