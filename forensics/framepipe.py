"""A video's sampled frames, decoded by an ffmpeg subprocess started before the heavy imports.

`forensics detect clip.mp4` spends about 0.25 s importing numpy, OpenCV and the detectors before
it could decode a frame. `FramePipe.start` needs only the standard library: in a background
thread it reads the clip's facts (an MP4's sample table, `mediainfo.mp4_info`, else ffmpeg's
probe), plans the frames `media.read_frame_runs` would decode, and has ffmpeg decode them (one
pass, a `select` filter, raw RGB on a pipe), so decoding runs on the other core while Python
imports; `media.read_frame_runs(..., prefetched=pipe)` then takes the frames.

The pipe only takes files where it gives exactly what OpenCV's FFmpeg backend gives: a single
video stream, 8-bit 4:2:0, no rotation, a declared length, and a plan that OpenCV decodes from
the first frame without seeking (on longer clips it seeks, which costs less than decoding every
frame). tests/test_video_detect.py compares the two paths. Anything else (another kind of file,
a different request, an ffmpeg error or message, fewer frames than planned) leaves the pipe
without frames, and read_frame_runs decodes the plain way and raises its usual errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

from . import mediainfo as mi

DECODE_TIMEOUT_S = 300.0
_YUV420P = re.compile(r",\s*yuv420p[(,\s]")
_LEVEL = re.compile(r"^(\[[^\]]* @ [^\]]*\] )?\[(trace|debug|verbose|info|warning)\] ")
_ERROR = re.compile(r"\[(error|fatal|panic)\] ")


def _unsupported(text: str, info: mi.VideoInfo) -> str | None:
    """Why ffmpeg's description of the input rules the pipe out, or None: the pipe only takes
    files where it decodes exactly what OpenCV's FFmpeg backend gives (see the module doc)."""
    m = mi._VIDEO_STREAM.search(text)
    if m is None:
        return "no video stream described"
    if (int(m.group(2)), int(m.group(3))) != (info.width, info.height):
        return "size differs from the sample table"
    if info.frames <= 0:
        return "no declared length"
    if text.count("Video:") != 1:
        return "several video streams"
    if not _YUV420P.search(m.group(0)):
        return "not 8-bit 4:2:0"
    low = text.lower()
    if "displaymatrix" in low or "display matrix" in low or "rotate" in low:   # ffmpeg 9: "Display Matrix"
        return "rotated"
    return None


def _select_expr(want: list[int], gap: int) -> str:
    """ffmpeg `select` expression for the frame numbers: one term per run of frames `gap` apart."""
    runs: list[list[int]] = []
    for f in want:
        if runs and f - runs[-1][-1] == gap:
            runs[-1].append(f)
        else:
            runs.append([f])
    terms = []
    for r in runs:
        a, b = r[0], r[-1]
        if a == b:
            terms.append(f"eq(n,{a})")
        elif gap == 1:
            terms.append(f"between(n,{a},{b})")
        else:
            terms.append(f"between(n,{a},{b})*not(mod(n-{a},{gap}))")
    return "+".join(terms)


class FramePipe:
    """Frames of one `read_frame_runs` request, decoded in the background (see the module doc)."""

    def __init__(self, path, max_frames: int = 32, *, run_length: int = 8, target_fps: float = 8.0,
                 max_pixels: int = mi.MAX_PIXELS, max_duration: float = mi.MAX_DURATION_S):
        self.path = str(path)
        self.request = (max_frames, run_length, target_fps, max_pixels, max_duration)
        self.info: mi.VideoInfo | None = None     # the probe, when it succeeded
        self.frames: list[bytearray] | None = None
        self.want: list[int] = []
        self.gap = 1
        self.declined: str | None = None          # why the pipe gave no frames (tests, debugging)
        self._proc: subprocess.Popen | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="framepipe", daemon=True)

    @classmethod
    def start(cls, path, max_frames: int = 32, **kw) -> "FramePipe":
        pipe = cls(path, max_frames, **kw)
        pipe._thread.start()
        return pipe

    def _run(self) -> None:
        try:
            self._decode()
        except Exception as exc:  # the plain path redoes the work and reports properly
            self.frames = None
            self.declined = f"{type(exc).__name__}: {exc}"

    def _decode(self) -> None:
        max_frames, run_length, target_fps, max_pixels, max_duration = self.request
        p = mi._check_file(self.path)
        if mi.sniff(p) != "video":
            self.declined = "not a video"
            return
        # An MP4's sample table gives the plan without running ffmpeg twice (its start-up alone is
        # ~20 ms); ffmpeg's description of the input then comes with the decode, and is checked
        # before any frame is handed over. Other containers are probed first.
        info, text = mi.mp4_info(p), None
        if info is None:
            info, text = mi.probe_video_text(p)
        mi.check_video_limits(info, max_pixels, max_duration)
        self.info = info
        gap = mi.pair_gap(info.fps, target_fps)
        want = mi.plan_runs(info.frames, max_frames, run_length, gap)
        why = ("seeks" if any(b - a > mi.SEEK_MIN_GAP for a, b in zip([0] + want, want)) else None)
        why = why or (_unsupported(text, info) if text is not None else None)
        if why:
            self.declined = why
            return
        # One decoding thread: ffmpeg shares the two cores with Python's imports and scoring, and
        # frame threading only adds CPU time there.
        cmd = [mi.ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats",
               "-loglevel", "error" if text is not None else "level+info", "-threads", "1", "-i", str(p),
               "-map", "0:v:0", "-vf", f"select='{_select_expr(want, gap)}'", "-fps_mode", "passthrough",
               "-frames:v", str(len(want)), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        size = info.width * info.height * 3
        frames: list[bytearray] = []
        err: list[bytes] = []
        with self._lock:
            if self._closed:
                return
            self._proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE)
        drain = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        drain.start()
        try:
            for _ in want:
                buf = bytearray(size)
                view, got = memoryview(buf), 0
                while got < size:
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < size:
                    break
                frames.append(buf)
            proc.stdout.close()
            rc = proc.wait(timeout=DECODE_TIMEOUT_S)
            drain.join(DECODE_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join(5)
            proc.stderr.close()
        msg = b"".join(err).decode("utf-8", "replace")
        if text is None:        # level+info: the input's description, then any messages
            lines = msg.splitlines()
            text = "\n".join(_LEVEL.sub("", ln) for ln in lines[:next((i for i, ln in enumerate(lines)
                                                                        if "Stream mapping:" in ln), len(lines))])
            msg = "\n".join(ln for ln in lines if _ERROR.search(ln))
            why = _unsupported(text, info)
            if why:
                self.declined = why
                return
        msg = msg.strip()
        if rc != 0 or msg or len(frames) != len(want):
            self.declined = (f"ffmpeg exit {rc}, {len(frames)} of {len(want)} frames"
                             + (f": {msg.splitlines()[-1][:200]}" if msg else ""))
            return
        self.frames, self.want, self.gap = frames, want, gap

    def result(self, path, max_frames: int = 32, *, run_length: int = 8, target_fps: float = 8.0,
               max_pixels: int = mi.MAX_PIXELS, max_duration: float = mi.MAX_DURATION_S):
        """(raw RGB frames, frame numbers, gap, VideoInfo) when this pipe decoded exactly this
        request; (None, None, None, VideoInfo or None) otherwise, with the probe when it
        succeeded for this request (the plain path may reuse it)."""
        same = (os.path.abspath(self.path) == os.path.abspath(str(path))
                and self.request == (max_frames, run_length, target_fps, max_pixels, max_duration))
        if not same:
            self.close()
            return None, None, None, None
        self._thread.join(DECODE_TIMEOUT_S)
        if self._thread.is_alive():
            self.close()
            self._thread.join()
            return None, None, None, self.info
        if self.frames is None:
            return None, None, None, self.info
        frames, self.frames = self.frames, None       # handed over once
        return frames, self.want, self.gap, self.info

    def close(self) -> None:
        """Stop ffmpeg if it still runs (nothing else to free)."""
        with self._lock:
            self._closed = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()


def start_for(paths: list[str], max_frames: int) -> FramePipe | None:
    """A pipe for `forensics detect PATH` on one video file; None for anything else."""
    if len(paths) != 1 or max_frames < 1:
        return None
    p = Path(paths[0])
    try:
        if not p.is_file():
            return None
    except OSError:
        return None
    return FramePipe.start(p, max_frames)
