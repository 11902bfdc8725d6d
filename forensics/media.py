"""Reading and writing media with real codecs, defensively.

- Images are decoded with Pillow after a header-only size check (no decompression bombs), and
  every mode (grayscale, palette, RGBA, 16-bit, CMYK) is converted to RGB uint8.
- Videos are probed by the ffmpeg binary (imageio-ffmpeg's when none is on PATH) under a
  timeout, refused before decoding when over the limits, then decoded by OpenCV as a stream of
  frames, so a long clip never has to fit in memory.
- PNG and H.264 MP4 are written atomically (temp file + rename).

The container is recognized from the file's leading bytes, never from its extension alone.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path
from typing import Iterator

os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import MediaError  # noqa: E402
# Sniffing, limits, probing and frame plans need no numpy or OpenCV; they live in mediainfo (so
# `detect` can start decoding before the heavy imports) and are re-exported here.
from .mediainfo import (  # noqa: E402,F401
    IMAGE_EXTS, MAX_DURATION_S, MAX_FILE_BYTES, MAX_FRAMES, MAX_PIXELS, MEDIA_EXTS, PROBE_TIMEOUT_S, SEEK_MIN_GAP,
    VIDEO_EXTS, VideoInfo, _check_file, check_video_limits, ffmpeg_exe, pair_gap, plan_runs, probe_video,
    probe_video_text, sniff, video_info,
)


def _mkstemp(**kw) -> tuple[int, str]:
    """tempfile.mkstemp, imported when a file is written: tempfile pulls in shutil, random, bz2
    and lzma (~8 ms of `forensics detect`'s start-up, which writes nothing)."""
    import tempfile

    return tempfile.mkstemp(**kw)


def _pil():
    """Pillow's Image module with the project's settings, imported on first use: a video never
    needs it, and importing it cost `detect clip.mp4` ~50 ms. Code that opens images with
    Pillow takes it from here."""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Our own size check runs first, with a clear message; Pillow's guard stays as a second line.
    Image.MAX_IMAGE_PIXELS = None
    return Image

ENCODE_TIMEOUT_S = 300.0


# ---------------------------------------------------------------------------------------------
# Images


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header alone."""
    p = _check_file(path)
    try:
        with _pil().open(p) as im:
            return im.size
    except Exception as exc:
        raise MediaError(f"not a readable image ({_reason(exc)})", p) from None


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image (first frame of an animation) to RGB uint8 of shape (H, W, 3)."""
    p = _check_file(path)
    if sniff(p) != "image":
        raise MediaError("is a video, not an image", p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _pil().open(p) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise MediaError(
                        f"image declares {w}x{h} = {w * h / 1e6:.0f} megapixels, over the "
                        f"{max_pixels / 1e6:.0f}-megapixel limit; refused before decoding",
                        p,
                    )
                if w < 1 or h < 1:
                    raise MediaError(f"image has an empty size {w}x{h}", p)
                im.seek(0)
                im.load()
                return to_rgb8(im)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot decode image ({_reason(exc)})", p) from None


def to_rgb8(im) -> np.ndarray:
    """Any Pillow image to RGB uint8, scaling 16/32-bit samples instead of clipping them."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        g = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        g = np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) / (hi - lo) * 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels are composited over white, as viewers show them.
        rgba = im.convert("RGBA")
        Image = _pil()
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write RGB uint8 (H, W, 3) as PNG, atomically."""
    rgb = _as_rgb8(rgb)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MediaError("PNG encoding failed", path)
    return atomic_write_bytes(path, buf.tobytes())


def write_jpeg(path: str | os.PathLike, rgb: np.ndarray, quality: int = 90) -> Path:
    rgb = _as_rgb8(rgb)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MediaError("JPEG encoding failed", path)
    return atomic_write_bytes(path, buf.tobytes())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return path


def _as_rgb8(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an RGB array (H, W, 3); got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels; got {a.dtype}")
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------------
# Video


class VideoReader:
    """A stream of RGB uint8 frames with metadata; opens lazily and checks limits first.

    `stride` keeps every k-th frame; `max_frames` stops after that many kept frames.
    A file that yields far fewer frames than its container declares is reported as truncated,
    unless its last frame is near the end of its duration (an AVI's dropped frames decode to
    nothing: such a file has fewer frames, not a missing end).
    """

    def __init__(self, path, *, max_frames: int | None = None, stride: int = 1,
                 max_pixels: int = MAX_PIXELS, max_duration: float = MAX_DURATION_S):
        p = _check_file(path)
        if sniff(p) != "video":
            raise MediaError("is an image, not a video", p)
        self.path = str(p)
        self.info = probe_video(p)
        check_video_limits(self.info, max_pixels, max_duration)
        self.max_frames = max_frames
        self.stride = max(1, int(stride))
        self.decoded = 0
        self.last_ms: float | None = None

    @property
    def fps(self) -> float:
        return self.info.fps

    def __iter__(self) -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            raise MediaError("OpenCV cannot open this video", self.path)
        kept = 0
        self.decoded = 0
        self.last_ms = None    # timestamp of the frame decoded last (callers check spacing)
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                self.decoded += 1
                self.last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                if (self.decoded - 1) % self.stride:
                    continue
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                kept += 1
                if self.max_frames is not None and kept >= self.max_frames:
                    return
        finally:
            cap.release()
        if self.decoded == 0:
            raise MediaError("no frame could be decoded (truncated or corrupt video)", self.path)
        declared = self.info.frames
        if declared > 4 and self.decoded < 0.8 * declared - 2 and not _spans_duration(self.last_ms, self.info):
            raise MediaError(
                f"truncated video: the container declares ~{declared} frames but only "
                f"{self.decoded} decode",
                self.path,
            )

    def read_all(self) -> np.ndarray:
        """All kept frames as (T, H, W, 3); for short clips only."""
        return np.stack(list(self))


def read_video(path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    r = VideoReader(path, max_frames=max_frames)
    return r.read_all(), r.fps


def write_mp4(path: str | os.PathLike, frames, fps: float = 8.0, crf: int = 18,
              preset: str = "medium") -> Path:
    """Encode RGB uint8 frames (T, H, W, 3) as H.264 MP4 (yuv420p, faststart), atomically.

    Odd sizes are padded by one pixel (yuv420p needs even sides).
    """
    import ffmpeg  # ffmpeg-python builds the argument list; we run it with a timeout

    arr = np.stack([_as_rgb8(f) for f in frames]) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
        raise ValueError(f"expected uint8 frames (T, H, W, 3); got {arr.shape} {arr.dtype}")
    t, h, w, _ = arr.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(prefix=".tmp-", suffix=".mp4", dir=path.parent)
    os.close(fd)
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps)
    if w % 2 or h % 2:
        stream = stream.filter("pad", w + w % 2, h + h % 2)
    stream = ffmpeg.output(
        stream, tmp, vcodec="libx264", pix_fmt="yuv420p", crf=int(crf), preset=preset,
        r=fps, movflags="+faststart", loglevel="error",
    ).overwrite_output()
    args = ffmpeg.compile(stream, cmd=ffmpeg_exe())
    try:
        proc = subprocess.run(args, input=np.ascontiguousarray(arr).tobytes(),
                              capture_output=True, timeout=ENCODE_TIMEOUT_S)
        if proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise MediaError(f"H.264 encoding failed ({msg[-1] if msg else proc.returncode})", path)
        os.replace(tmp, path)
    except subprocess.TimeoutExpired:
        raise MediaError(f"H.264 encoding took over {ENCODE_TIMEOUT_S:.0f} s", path) from None
    finally:
        _unlink(tmp)
    return path


def transcode(src, dst, *, args: list[str], timeout: float = ENCODE_TIMEOUT_S) -> Path:
    """Run ffmpeg on one file with extra output arguments (argument list, no shell)."""
    dst = Path(dst)
    fd, tmp = _mkstemp(prefix=".tmp-", suffix=dst.suffix, dir=dst.parent)
    os.close(fd)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise MediaError(f"ffmpeg failed: {proc.stderr.decode('utf-8', 'replace').strip()[-200:]}", src)
        os.replace(tmp, dst)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg took over {timeout:.0f} s", src) from None
    finally:
        _unlink(tmp)
    return dst


# ---------------------------------------------------------------------------------------------
# Helpers


def frames_of(path, *, max_frames: int | None = None) -> tuple[str, Iterator[np.ndarray], dict]:
    """Open any supported file: ("image"|"video", frame iterator, metadata)."""
    kind = sniff(path)
    if kind == "image":
        rgb = read_image(path)
        return kind, iter([rgb]), {"width": rgb.shape[1], "height": rgb.shape[0], "frames": 1, "fps": None}
    reader = VideoReader(path, max_frames=max_frames)
    if max_frames and reader.info.frames > max_frames:
        reader.stride = max(1, reader.info.frames // max_frames)
    i = reader.info
    return kind, iter(reader), {"width": i.width, "height": i.height, "frames": i.frames, "fps": i.fps}


def read_frame_runs(path: str | os.PathLike, max_frames: int = 32, *, run_length: int = 8,
                    target_fps: float = 8.0, max_pixels: int = MAX_PIXELS,
                    max_duration: float = MAX_DURATION_S, prefetched=None, stride: int | None = None,
                    ) -> tuple[list[np.ndarray], list[int], int, VideoInfo]:
    """Decode runs of frames (see `plan_runs`) from a video: (frames, frame numbers, gap, info).

    Consecutive frames of a run are `gap` = round(fps / target_fps) frames apart, so pairs are
    about 1/target_fps seconds apart whatever the frame rate; `stride` sets the gap instead.
    Frames between wanted ones are only grabbed (decoded, not converted), and decoding stops
    after the last wanted frame. Where the
    next wanted frame is over SEEK_MIN_GAP frames ahead, the decoder seeks (to the keyframe
    before it, then decodes forward) instead of decoding everything in between, so the cost of a
    long video grows with the number of runs, not with its length; a seek whose frame's
    timestamp is not the expected one (variable frame rate, a broken index) is abandoned for
    plain decoding. The same checks as `VideoReader` apply (limits before decoding, no decodable
    frame, truncation); a file whose frames reach its stated duration but number far fewer than
    it declares (an AVI's dropped frames, a VFR file stating its peak rate) is planned again on
    the frames that decode, and its info then gives their count and average rate.

    `prefetched`: a `framepipe.FramePipe` started on this request; its frames are used when it
    decoded them, and its probe when it got that far.
    """
    info = None
    if prefetched is not None:
        raw, want, gap, info = prefetched.result(path, max_frames, run_length=run_length, target_fps=target_fps,
                                                 max_pixels=max_pixels, max_duration=max_duration, stride=stride)
        if raw is not None:
            shape = (info.height, info.width, 3)
            return [np.frombuffer(b, np.uint8).reshape(shape) for b in raw], want, gap, info
    p = _check_file(path)
    if sniff(p) != "video":
        raise MediaError("is an image, not a video", p)
    if info is None:
        info = video_info(p)
    check_video_limits(info, max_pixels, max_duration)
    gap = pair_gap(info.fps, target_fps, stride)
    want = plan_runs(info.frames, max_frames, run_length, gap)
    frames, index, reached, eof, seeked, last_ms = _decode_frames(p, want, info.fps, seek=True)
    if seeked is None:  # a seek landed on the wrong frame: decode the plain way
        frames, index, reached, eof, seeked, last_ms = _decode_frames(p, want, info.fps, seek=False)
    if reached == 0:
        raise MediaError("no frame could be decoded (truncated or corrupt video)", p)
    declared = info.frames
    short = eof and declared > 4 and reached < 0.8 * declared - 2
    if short and seeked:  # frames were skipped, not decoded: count how many really decode
        reached, last_ms = _count_frames(p)
        short = reached < 0.8 * declared - 2
    if short and _spans_duration(last_ms, info):
        # Not cut short: the container indexes frames that hold nothing (an AVI's dropped
        # frames, which players show as repeats). Plan on the frames that decode, at their own
        # rate, so runs still cover the clip and pairs are as far apart in time as they are.
        fps = reached / info.duration
        info = info._replace(frames=reached, fps=fps)
        gap = pair_gap(fps, target_fps, stride)
        want = plan_runs(reached, max_frames, run_length, gap)
        frames, index = _decode_frames(p, want, fps, seek=False)[:2]
        short = False
    if short:
        raise MediaError(f"truncated video: the container declares ~{declared} frames but only "
                         f"{reached} decode", p)
    if not frames:  # the container over-declared its length: fall back to the first frames
        return read_frame_runs_from_start(p, max_frames, gap, info)
    return frames, index, gap, info


def _spans_duration(last_ms: float | None, info: VideoInfo) -> bool:
    """Whether the last frame that decoded is near the end of the container's duration (then a
    frame count short of the declared one is not a truncation)."""
    if not last_ms or info.duration <= 0:
        return False
    return last_ms / 1000.0 >= 0.8 * info.duration - 1.0 / max(info.fps, 1.0)


def _decode_frames(p: Path, want: list[int], fps: float, *, seek: bool):
    """(frames, frame numbers, 1 + last frame number reached, hit the end, seeked: True/False,
    or None when a seek proved inexact, timestamp in ms of the last frame grabbed or None)."""
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise MediaError("OpenCV cannot open this video", p)
    frames: list[np.ndarray] = []
    index: list[int] = []
    last_ms = None
    pos = reached = 0          # pos: the frame number the next grab returns
    eof = seeked = False
    t0 = None                  # (frame number, ms) of the first frame read: the time base
    try:
        for f in want:
            jumped = False
            if seek and fps > 0 and t0 is not None and f - pos > SEEK_MIN_GAP:
                jumped = bool(cap.set(cv2.CAP_PROP_POS_FRAMES, f))
                if not jumped:
                    return frames, index, reached, eof, None
                pos, seeked = f, True
            while pos < f:
                if not cap.grab():
                    eof = True
                    break
                pos += 1
                reached = pos
                last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if eof:
                break
            ok, bgr = cap.read()
            if not ok or bgr is None:
                eof = True
                break
            ms = last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if t0 is None:
                t0 = (f, ms)
            elif jumped and abs(ms - (t0[1] + (f - t0[0]) * 1000.0 / fps)) > 500.0 / fps:
                return frames, index, reached, eof, None, last_ms
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index.append(f)
            pos = reached = f + 1
    finally:
        cap.release()
    return frames, index, reached, eof, seeked, last_ms


def _count_frames(p: Path) -> tuple[int, float | None]:
    """(frames that decode, timestamp in ms of the last one)."""
    cap = cv2.VideoCapture(str(p))
    n, last_ms = 0, None
    try:
        while cap.grab():
            n += 1
            last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
    finally:
        cap.release()
    return n, last_ms


def read_frame_runs_from_start(p: Path, max_frames: int, gap: int, info: VideoInfo):
    cap = cv2.VideoCapture(str(p))
    frames, index, i = [], [], 0
    try:
        while len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if i % gap == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index.append(i)
            i += 1
    finally:
        cap.release()
    if not frames:
        raise MediaError("no frame could be decoded (truncated or corrupt video)", p)
    return frames, index, gap, info


def expand_paths(paths) -> Iterator[Path]:
    """Files as given, folders as the media files inside them (sorted, streamed: a folder of a
    million files is never listed in memory at once)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from iter_media_files(p)
        else:
            yield p


def iter_media_files(root: str | os.PathLike) -> Iterator[Path]:
    """Media files under a folder, sorted, by extension; symlinks are not followed."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if f.suffix.lower() in MEDIA_EXTS and not name.startswith(".") and not f.is_symlink():
                yield f


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
