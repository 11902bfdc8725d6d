"""A video's sampled frames, decoded by an ffmpeg subprocess started before the heavy imports.

`forensics detect clip.mp4` spends about 0.25 s importing numpy, OpenCV and the detectors before
it could decode a frame. `FramePipe.start` needs only the standard library: in a background
thread it reads the clip's facts (an MP4's sample table, `mediainfo.mp4_info`, else ffmpeg's
probe), plans the frames `media.read_frame_runs` would decode, and has ffmpeg decode them (one
pass, a `select` filter, raw RGB into a scratch file in /dev/shm, memory-mapped and deleted),
so decoding runs on the other core while Python imports; `available` hands out the frames
written so far (`detect` scores whole runs while the rest decodes), and
`media.read_frame_runs(..., prefetched=pipe)` then takes them all.

The pipe only takes files where it gives exactly what OpenCV's FFmpeg backend gives: MP4/MOV,
Matroska/WebM or AVI with a single video stream, 8-bit 4:2:0, no rotation, a declared length,
and a plan that OpenCV decodes from the first frame without seeking (on longer clips it seeks,
which costs less than decoding every frame). tests/test_video_detect.py compares the two paths. Anything else (another kind of file,
a different request, an ffmpeg error or message, fewer frames than planned) leaves the pipe
without frames, and read_frame_runs decodes the plain way and raises its usual errors.
"""

from __future__ import annotations

import mmap
import os
import re
import subprocess
import threading
from pathlib import Path

from . import mediainfo as mi

DECODE_TIMEOUT_S = 300.0
# Containers where tests/test_video_detect.py shows ffmpeg's frames equal OpenCV's; others (MPEG
# program and transport streams, Ogg, FLV, ASF, Y4M) number or time frames in ways the two
# readers need not share, so they take the plain path.
PIPE_CONTAINERS = ("mp4", "matroska", "avi")
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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _scratch_file(nbytes: int) -> str | None:
    """A new private file for ffmpeg's raw frames: in /dev/shm (memory) when it has room for
    them twice over, else in the temporary folder; None when neither can be written."""
    tmp = os.environ.get("TMPDIR") or "/tmp"
    for d in ("/dev/shm", tmp):
        try:
            vfs = os.statvfs(d)
            if vfs.f_bavail * vfs.f_frsize < 2 * nbytes + (64 << 20) and d != tmp:
                continue
            path = os.path.join(d, f"forensics-frames-{os.getpid()}-{os.urandom(6).hex()}.rgb")
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return path
        except OSError:
            continue
    return None


class FramePipe:
    """Frames of one `read_frame_runs` request, decoded in the background (see the module doc)."""

    def __init__(self, path, max_frames: int = 32, *, run_length: int = 8, target_fps: float = 8.0,
                 max_pixels: int = mi.MAX_PIXELS, max_duration: float = mi.MAX_DURATION_S,
                 stride: int | None = None):
        self.path = str(path)
        self.request = (max_frames, run_length, target_fps, max_pixels, max_duration, stride)
        self.info: mi.VideoInfo | None = None     # the probe, when it succeeded
        self.frames: list[memoryview] | None = None
        self.want: list[int] = []
        self.gap = 1
        self.declined: str | None = None          # why the pipe gave no frames (tests, debugging)
        self._proc: subprocess.Popen | None = None
        self._out: str | None = None              # the scratch file's name
        self._fd: int | None = None               # the scratch file, open while ffmpeg writes it
        self._size = 0                            # bytes per frame
        self._plan: tuple[list[int], int] | None = None   # (frame numbers, gap) being decoded
        self._views: list[memoryview] = []        # frames handed out so far, in plan order
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
        max_frames, run_length, target_fps, max_pixels, max_duration, stride = self.request
        p = mi._check_file(self.path)
        with open(p, "rb") as fh:
            container = mi.video_container(fh.read(512))
        if container not in PIPE_CONTAINERS:
            self.declined = ("not a video" if container is None else
                             f"{container}: not a container the pipe was checked against OpenCV on")
            return
        # An MP4's sample table gives the plan without running ffmpeg twice (its start-up alone is
        # ~20 ms); ffmpeg's description of the input then comes with the decode, and is checked
        # before any frame is handed over. Other containers are probed first.
        info, text = mi.mp4_info(p), None
        if info is None:
            info, text = mi.probe_video_text(p)
        mi.check_video_limits(info, max_pixels, max_duration)
        self.info = info
        gap = mi.pair_gap(info.fps, target_fps, stride)
        want = mi.plan_runs(info.frames, max_frames, run_length, gap)
        why = ("seeks" if any(b - a > mi.SEEK_MIN_GAP for a, b in zip([0] + want, want)) else None)
        why = why or (_unsupported(text, info) if text is not None else None)
        if why:
            self.declined = why
            return
        size = info.width * info.height * 3
        total = size * len(want)
        out = _scratch_file(total)
        if out is None:
            self.declined = "no scratch space"
            return
        with self._lock:
            self._out = out                       # close() deletes it too: the process may exit first
        # One decoding thread: ffmpeg shares the two cores with Python's imports and scoring, and
        # frame threading only adds CPU time there. Frames go to a scratch file, not a pipe: a
        # pipe's 64 KB blocked ffmpeg until a reader thread got the GIL from the imports, which
        # stretched a 0.2 s decode to 0.4 s. The file is read through memory maps of an open
        # descriptor (no copy), so its name can go as soon as ffmpeg is done.
        cmd = [mi.ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-y",
               "-loglevel", "error" if text is not None else "level+info", "-threads", "1", "-i", str(p),
               "-map", "0:v:0", "-vf", f"select='{_select_expr(want, gap)}'", "-fps_mode", "passthrough",
               "-frames:v", str(len(want)), "-f", "rawvideo", "-pix_fmt", "rgb24", out]
        try:
            with self._lock:
                if self._closed:
                    return
                self._fd = os.open(out, os.O_RDONLY)
                self._size, self._plan = size, (want, gap)
                self._proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.PIPE)
            try:
                _, err = proc.communicate(timeout=DECODE_TIMEOUT_S)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            rc = proc.returncode
            with self._lock:
                frames = self._map_new() if self._fd is not None else []
        finally:
            with self._lock:
                _unlink(out)
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
        msg = err.decode("utf-8", "replace")
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

    def _map_new(self) -> list[memoryview]:
        """Every frame ffmpeg has written completely so far (under the lock): views made once
        per frame, so a frame handed out early and again at the end is the same memory."""
        want, _ = self._plan
        n = min(os.fstat(self._fd).st_size // self._size, len(want))
        if n > len(self._views):
            data = mmap.mmap(self._fd, n * self._size, access=mmap.ACCESS_COPY)
            view = memoryview(data)
            self._views += [view[i * self._size:(i + 1) * self._size] for i in range(len(self._views), n)]
        return list(self._views)

    def available(self, path, max_frames: int = 32, **kw):
        """While ffmpeg decodes: (raw RGB frames written so far, planned frame numbers, gap) for
        this request, without waiting; None when the pipe is not decoding it (or has finished:
        then `result` has everything). Callers may start on these frames; they are the same
        memory that `result` hands over, unless the pipe declines, when `result` gives None."""
        if not self._same(path, max_frames, **kw):
            return None
        with self._lock:
            if self._fd is None or self._plan is None:
                return None
            return self._map_new(), self._plan[0], self._plan[1]

    def _same(self, path, max_frames: int = 32, *, run_length: int = 8, target_fps: float = 8.0,
              max_pixels: int = mi.MAX_PIXELS, max_duration: float = mi.MAX_DURATION_S,
              stride: int | None = None) -> bool:
        return (os.path.abspath(self.path) == os.path.abspath(str(path))
                and self.request == (max_frames, run_length, target_fps, max_pixels, max_duration, stride))

    def result(self, path, max_frames: int = 32, **kw):
        """(raw RGB frames, frame numbers, gap, VideoInfo) when this pipe decoded exactly this
        request (`read_frame_runs`' arguments); (None, None, None, VideoInfo or None) otherwise,
        with the probe when it succeeded for this request (the plain path may reuse it)."""
        if not self._same(path, max_frames, **kw):
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

    def serves(self, paths: list[str], max_frames: int, stride: int | None = None) -> bool:
        """Whether this pipe is what `start_for(paths, max_frames, stride)` would start."""
        return len(paths) == 1 and self._same(paths[0], max_frames, stride=stride)

    def close(self) -> None:
        """Stop ffmpeg if it still runs and delete its scratch file (frames already mapped stay)."""
        with self._lock:
            self._closed = True
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if self._out is not None:
                _unlink(self._out)


def start_for(paths: list[str], max_frames: int, stride: int | None = None) -> FramePipe | None:
    """A pipe for `forensics detect PATH` on one video file; None for anything else."""
    if len(paths) != 1 or max_frames < 1 or (stride is not None and stride < 1):
        return None
    p = Path(paths[0])
    try:
        if not p.is_file():
            return None
    except OSError:
        return None
    return FramePipe.start(p, max_frames, stride=stride)
