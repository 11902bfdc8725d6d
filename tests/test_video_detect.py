"""`forensics detect` on video, fast path: the numpy artifact net (equal to the timm one), seeking
in run sampling, the per-frame patch budget, the HTML report with per-frame plot and
thumbnails, and real clips cut from a user video folder at ~8 fps. No wall-clock assertions."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest

from forensics import detect, media, realdata
from forensics.detectors import artifact as A
from forensics.detectors import base as dbase
from forensics.detectors.base import Media
from forensics.errors import MediaError

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _textured_clip(n: int, w: int = 48, h: int = 32, seed: int = 0) -> np.ndarray:
    """A camera panning over a real photo: every frame differs, so frames can be matched."""
    photo = realdata._load_source("skimage:chelsea")
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        y, x = (i // 7) % (photo.shape[0] - h), (3 * i) % (photo.shape[1] - w)
        out[i] = np.clip(photo[y:y + h, x:x + w].astype(np.int16) + rng.integers(-2, 3, (h, w, 3)), 0, 255)
    return out


# -- the numpy artifact net ------------------------------------------------------------------
def test_numpy_artifact_net_equals_timm_on_shipped_weights():
    d = dbase.CHECKPOINT_ROOT / "artifact"
    if not (d / "config.json").is_file():
        pytest.skip("no shipped artifact checkpoint")
    fast = A.ArtifactDetector.load(d)
    ref = A.ArtifactDetector.load(d, backend="torch")
    assert isinstance(fast.net, A.NumpyPatchNet)
    rng = np.random.default_rng(0)
    photo = realdata._load_source("skimage:coffee")
    patches = np.concatenate([rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
                              A.patch_grid(photo)[0][:60], np.zeros((2, 32, 32, 3), np.uint8)])
    a, b = fast.patch_outputs(patches), ref.patch_outputs(patches)
    assert a.shape == b.shape == (len(patches), 1 + len(fast.config["classes"]))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_numpy_net_other_backbones_and_bad_state():
    torch = pytest.importorskip("torch")
    from forensics.detectors.artifact_torch import PatchNet

    torch.manual_seed(0)
    for spec in ({**A.BACKBONE, "layers": [2, 1, 1, 1], "stem_pool": False},
                 {**A.BACKBONE, "stem_type": "", "stem_stride": 1, "channels": [16, 16, 32, 32]}):
        net = PatchNet(spec, n_classes=3).eval()
        for mod in net.modules():  # non-trivial running statistics, so folding BatchNorm matters
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.2, 0.2)
        state = {k: v.numpy() for k, v in net.state_dict().items()}
        x = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
        np.testing.assert_allclose(A.NumpyPatchNet(spec, state, 3).outputs(x), net.outputs(x), rtol=1e-5, atol=1e-5)
    bad = dict(state, **{"body.layer2.0.conv1.weight": np.zeros((16, 8, 3, 3), np.float32)})
    with pytest.raises(ValueError):                     # layers that do not chain
        A.NumpyPatchNet(spec, bad, 3)
    state.pop("head.bias")
    with pytest.raises(KeyError):
        A.NumpyPatchNet(spec, state, 3)


def test_loaded_detector_saves_and_reloads_unchanged(tmp_path):
    d = dbase.CHECKPOINT_ROOT / "artifact"
    if not (d / "config.json").is_file():
        pytest.skip("no shipped artifact checkpoint")
    det = A.ArtifactDetector.load(d)
    det.save(tmp_path / "a")
    from safetensors.numpy import load_file

    a, b = load_file(str(d / "model.safetensors")), load_file(str(tmp_path / "a" / "model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((d / "config.json").read_text())
    from safetensors.numpy import save_file

    save_file({k: v for k, v in a.items() if k != "head.weight"}, str(tmp_path / "bad" / "model.safetensors"))
    from forensics.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not match"):
        A.ArtifactDetector.load(tmp_path / "bad")


# -- run sampling with seeks -----------------------------------------------------------------
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    return media.write_mp4(d / "long.mp4", _textured_clip(600), fps=30, crf=20, preset="ultrafast")


def test_seeking_reads_the_same_frames_as_decoding(long_clip, monkeypatch):
    monkeypatch.setattr(media, "SEEK_MIN_GAP", 40)
    frames, index, gap, info = media.read_frame_runs(long_clip)
    assert gap == 4 and len(frames) == 32 and index[-1] == 599
    plain, index2, _, eof, seeked, _ = media._decode_frames(Path(long_clip), index, info.fps, seek=False)
    _, _, _, _, did_seek, _ = media._decode_frames(Path(long_clip), index, info.fps, seek=True)
    assert did_seek is True and seeked is False and index2 == index
    assert all(np.array_equal(a, b) for a, b in zip(frames, plain))


def test_a_seek_to_the_wrong_frame_falls_back_to_decoding(long_clip, monkeypatch):
    monkeypatch.setattr(media, "SEEK_MIN_GAP", 40)
    real_capture = cv2.VideoCapture

    class OffByFive:  # a broken index: the decoder lands 5 frames after the asked one
        def __init__(self, path):
            self.cap = real_capture(path)

        def set(self, prop, value):
            return self.cap.set(prop, value + 5)

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(media.cv2, "VideoCapture", OffByFive)
    frames, index, _, info = media.read_frame_runs(long_clip)
    monkeypatch.setattr(media.cv2, "VideoCapture", real_capture)
    plain, _, _, _, _, _ = media._decode_frames(Path(long_clip), index, info.fps, seek=False)
    assert all(np.array_equal(a, b) for a, b in zip(frames, plain))


def test_truncated_long_video_is_refused_with_seeking(long_clip, tmp_path, monkeypatch):
    monkeypatch.setattr(media, "SEEK_MIN_GAP", 40)
    data = Path(long_clip).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # faststart: the index still declares 600 frames
    with pytest.raises(MediaError, match="truncated"):
        media.read_frame_runs(cut)


def test_avi_with_dropped_frames_is_read_at_its_own_rate_not_called_truncated(tmp_path, capsys):
    # An AVI whose index holds empty chunks (dropped frames, as webcams and DVRs write them):
    # 85 frames declared at 15 fps, 15 decode, the last one near the end of the clip.
    avi = tmp_path / "dropped.avi"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=15",
                    "-t", "6", "-vf", "select='not(mod(n,6))'", "-fps_mode", "passthrough", "-c:v", "mpeg4",
                    "-q:v", "5", str(avi)], check=True, timeout=60)
    declared = media.video_info(avi)
    assert declared.frames > 60
    frames, index, gap, info = media.read_frame_runs(avi)
    assert info.frames == 15 and len(frames) == 15 and index == list(range(15)) and gap == 1
    assert info.fps == pytest.approx(15 / declared.duration)
    assert len(list(media.VideoReader(avi))) == 15
    from cli import main

    assert main(["detect", str(avi), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert any("s apart" in n and "calibration" in n for n in out["detectors"]["temporal"]["notes"])
    # The same file cut short is still a truncation: its last frame is far from the declared end.
    cut = tmp_path / "cut.avi"
    data = avi.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="truncated"):
        media.read_frame_runs(cut)


def test_variable_frame_rate_video_is_analysed_not_called_truncated(tmp_path):
    # A phone-like VFR clip: 60 fps and 15 fps seconds in turn. Matroska states the peak rate,
    # so frames = duration x 60 over-counts by half; the file is whole and must be analysed.
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=60",
                    "-t", "4", "-vf", "select='lt(mod(t,2),1)+not(mod(n,4))'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr)], check=True, timeout=60)
    declared = media.video_info(vfr)
    frames, index, gap, info = media.read_frame_runs(vfr)
    assert declared.frames > 1.4 * info.frames and info.frames == 150
    assert len(frames) == 32 and index[-1] == 149 and gap == round(info.fps / 8)
    assert len(list(media.VideoReader(vfr))) == 150


# -- the per-frame budget --------------------------------------------------------------------
@pytest.mark.parametrize("size,expect", [((360, 640), 4), ((720, 1280), 4), ((32, 32), 32), ((120, 160), 8),
                                         ((240, 320), 4)])
def test_per_frame_budget_counts_patches(size, expect):
    h, w = size
    m = Media("x.mp4", "video", [np.zeros((h, w, 3), np.uint8)] * 32, 30.0, 300,
              frame_index=list(range(0, 128, 4)), pair_gap=4)
    sub = detect.per_frame_subset(m)
    assert len(sub.frames) == expect and sub.frame_index[0] == 0 and sub.frame_index[-1] == 124
    assert sub.max_patches == (detect.FRAME_PATCHES if expect < 32 else None)


def test_per_frame_detectors_honour_the_patch_cap():
    if not _installed():
        pytest.skip("shipped detector checkpoints missing")
    frames = list(_textured_clip(6, 320, 240, seed=1))
    m = Media("x.mp4", "video", frames, 30.0, 6, frame_index=list(range(6)))
    dets = detect.load_detectors("artifact,frequency")
    sub = detect.per_frame_subset(m)
    assert len(sub.frames) == 4 and sub.max_patches == detect.FRAME_PATCHES
    for n, d in dets.items():
        capped, full = d.score(sub), d.score(dataclasses.replace(sub, max_patches=None))
        assert 0 < capped.heatmap.size <= detect.FRAME_PATCHES < full.heatmap.size == 70  # a 7x10 grid, subsampled
        assert any("of 70 patches per frame" in t for t in capped.notes) and not full.notes
        assert len(capped.per_frame) == 4
    img = Media("x.png", "image", frames[:1])                                     # images keep their cap
    assert detect.per_frame_subset(img) is img and dets["artifact"].score(img).heatmap.size == 70


# -- decoding in an ffmpeg subprocess started early (forensics/framepipe.py) ------------------
def test_prefetched_frames_equal_plain_decoding(tmp_path):
    from forensics import framepipe

    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(120, 96, 64), fps=30, crf=20, preset="ultrafast")
    pipe = framepipe.FramePipe.start(clip, 32)
    frames, index, gap, info = media.read_frame_runs(clip, 32, prefetched=pipe)
    assert pipe.declined is None and pipe.frames is None                      # decoded there, handed over
    plain, index2, gap2, info2 = media.read_frame_runs(clip, 32)
    assert index == index2 and gap == gap2 == 4 and info == info2 and len(frames) == 32
    # the same swscale conversion as OpenCV's FFmpeg backend; a different build may round differently
    for a, b in zip(frames, plain):
        assert a.shape == b.shape and a.flags.writeable
        assert np.abs(a.astype(int) - b).max() <= 2
    if _installed():
        dets = detect.load_detectors()
        fast = detect.detect_file(clip, dets, prefetched=framepipe.FramePipe.start(clip, 32))
        slow = detect.detect_file(clip, dets)
        assert fast["frames_scored"] == slow["frames_scored"] and fast["per_frame_index"] == slow["per_frame_index"]
        for n in dets:
            np.testing.assert_allclose(fast["detectors"][n]["per_frame"], slow["detectors"][n]["per_frame"], atol=2e-3)
        assert abs(fast["p_synthetic"] - slow["p_synthetic"]) <= 2e-3


def test_stride_sets_the_spacing_of_sampled_frames_on_both_decode_paths(tmp_path, capsys):
    """`--stride N`: frames of a run N apart (default ~1/8 s: 4 at 30 fps), the same through the
    prefetch pipe (started early by the CLI for exactly this request) and OpenCV; the temporal
    evidence says when its pairs are far from the ~1/8 s it was trained on."""
    import cli
    from forensics import framepipe

    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(120, 96, 64), fps=30, crf=20, preset="ultrafast")
    for stride in (1, 7):
        pipe = framepipe.FramePipe.start(clip, 16, stride=stride)
        frames, index, gap, _ = media.read_frame_runs(clip, 16, prefetched=pipe, stride=stride)
        assert pipe.declined is None and gap == stride and len(frames) == 16
        assert media.read_frame_runs(clip, 16, stride=stride)[1] == index
        assert all(b - a == stride for a, b in zip(index[:8], index[1:8]))          # the first run
    cli._start_pipe_early(["detect", str(clip), "--stride", "7", "--json"])
    early, cli._EARLY_PIPE = cli._EARLY_PIPE, None
    assert early.serves([str(clip)], 32, 7) and not early.serves([str(clip)], 32)
    early.close()
    assert cli.main(["detect", str(clip), "--stride=1", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["detectors"]["temporal"]
    assert all(b - a == 1 for a, b in t["pairs"]) and any("0.033 s apart" in n for n in t["notes"])
    assert cli.main(["detect", str(clip), "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["detectors"]["temporal"]
    assert all(b - a == 4 for a, b in t["pairs"]) and not any("s apart" in n for n in t["notes"])
    assert cli.main(["detect", str(clip), "--stride", "0"]) == 2
    assert "--stride must be" in capsys.readouterr().err


def test_scoring_while_decoding_reuses_its_work_and_changes_nothing(tmp_path, monkeypatch):
    """detect_file scores the runs a pipe has written while it decodes the rest; the final pass
    reuses that work (frame_memo) and the result is the one of scoring everything at the end."""
    from forensics import framepipe
    from forensics.detectors import temporal as T

    if not _installed():
        pytest.skip("no shipped detectors")
    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(120, 96, 64), fps=30, crf=20, preset="ultrafast")
    dets = detect.load_detectors()
    done = framepipe.FramePipe.start(clip, 32)
    done._thread.join()
    views, want, gap, info = list(done.frames), done.want, done.gap, done.info

    class Staged:
        """The finished pipe's frames handed out one run more per call, as while ffmpeg decodes."""
        def __init__(self):
            self.info, self.calls = info, 0

        def available(self, path, max_frames, **kw):
            self.calls += 1
            n = 8 * self.calls
            return None if n > len(views) else (views[:n], want, gap)

        def result(self, path, max_frames, **kw):
            return views, want, gap, info

    runs, frames = [], []
    real_runs, real_frames = T.run_features, A.ArtifactDetector.frame_outputs
    monkeypatch.setattr(T, "run_features", lambda work: runs.append(len(work)) or real_runs(work))
    monkeypatch.setattr(A.ArtifactDetector, "frame_outputs",
                        lambda self, fr, cap=A.MAX_PATCHES: frames.append(len(fr)) or real_frames(self, fr, cap))
    staged = detect.detect_file(clip, dets, prefetched=Staged())
    n = staged["frames_per_frame_detectors"]
    assert runs == [8, 8, 8, 8] and len(frames) == 4 and sum(frames) == n     # each scored once, in 4 steps
    runs.clear()
    frames.clear()
    finished = framepipe.FramePipe.start(clip, 32)
    finished._thread.join()      # decoded before detect_file looks: no head start, all at the end
    at_end = detect.detect_file(clip, dets, prefetched=finished)
    assert runs == [8, 8, 8, 8] and frames == [n]
    staged.pop("seconds"), at_end.pop("seconds")
    assert staged == at_end


def test_cli_starts_the_pipe_before_parsing_and_checks_it_after(tmp_path, monkeypatch, capsys):
    import cli
    from forensics import framepipe

    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(40, 48, 32), fps=8, preset="ultrafast")
    started = []
    real_start = framepipe.FramePipe.start
    monkeypatch.setattr(framepipe.FramePipe, "start",
                        classmethod(lambda cls, p, n=32, **kw: started.append((str(p), n)) or real_start(p, n, **kw)))
    for argv, early in ((["detect", str(clip), "--json"], (str(clip), 32)),
                        (["detect", "--max-frames", "16", str(clip), "--device", "cpu"], (str(clip), 16)),
                        (["detect", "--max-frames=12", str(clip)], (str(clip), 12)),
                        (["detect", "--help"], None), (["detect", "-x", str(clip)], None),
                        (["detect", str(clip), str(clip)], None), (["bank", "list"], None)):
        started.clear()
        cli._start_pipe_early(argv)
        pipe, cli._EARLY_PIPE = cli._EARLY_PIPE, None
        assert (started[0] if started else None) == early, argv
        if pipe is not None:
            assert pipe.serves([str(clip)], early[1]) and not pipe.serves([str(clip)], early[1] + 1)
            pipe.close()
            pipe._thread.join()
            assert not list(Path("/dev/shm").glob(f"forensics-frames-{os.getpid()}-*"))   # scratch file gone
    # a pipe for another request than the parsed one is closed, and a right one is started
    cli._start_pipe_early(["detect", str(clip)])
    wrong = cli._EARLY_PIPE
    started.clear()
    assert cli.main(["detect", str(clip), "--max-frames", "8", "--json"]) == 0
    assert cli._EARLY_PIPE is None and wrong._closed and started == [(str(clip), 8)]
    assert json.loads(capsys.readouterr().out)["frames_scored"] <= 8


def test_batch_decodes_the_next_clip_while_scoring_and_changes_nothing(tmp_path, monkeypatch, capsys):
    """A folder: each next video is handed to a pipe before the current file is scored; every
    pipe is used for its own file, closed, and its scratch file deleted; a bad file in between
    is reported and the batch goes on; the results equal one-file runs."""
    import cli
    from forensics import framepipe

    clips = [media.write_mp4(tmp_path / f"c{k}.mp4", _textured_clip(24, 48, 32, seed=k), fps=8, preset="ultrafast")
             for k in range(3)]
    (tmp_path / "b.mp4").write_bytes(b"not a video")                          # sorted first
    (tmp_path / "c1x.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40)   # a broken MP4 between clips
    pipes = []
    real_start = framepipe.FramePipe.start
    monkeypatch.setattr(framepipe.FramePipe, "start",
                        classmethod(lambda cls, p, n=32, **kw: pipes.append(real_start(p, n, **kw)) or pipes[-1]))
    assert cli.main(["detect", str(tmp_path), "--json"]) == 2
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1] == {"summary": {"files": 5, "scored": 3, "failed": 2}}
    by_path = {x["path"]: x for x in lines[:-1]}
    assert "error" in by_path[str(tmp_path / "b.mp4")] and "error" in by_path[str(tmp_path / "c1x.mp4")]
    # every video after the first was started ahead (b.mp4 comes first: nothing started it)
    assert sorted(p.path for p in pipes) == sorted(str(tmp_path / n) for n in ("c0.mp4", "c1.mp4", "c1x.mp4", "c2.mp4"))
    assert all(p._closed for p in pipes)
    for p in pipes:
        p._thread.join()
    assert not list(Path("/dev/shm").glob(f"forensics-frames-{os.getpid()}-*"))
    monkeypatch.undo()
    for c in clips:
        assert cli.main(["detect", str(c), "--json"]) == 0
        one = json.loads(capsys.readouterr().out)
        batch = by_path[str(c)]
        assert {k: v for k, v in one.items() if k != "seconds"} == {k: v for k, v in batch.items() if k != "seconds"}


def test_prefetch_declines_what_it_cannot_match(tmp_path, long_clip, monkeypatch):
    from forensics import framepipe, mediainfo

    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(40, 48, 32), fps=8, preset="ultrafast")
    pipe = framepipe.FramePipe.start(clip, 32)
    assert media.read_frame_runs(clip, 16, prefetched=pipe)[1] == media.read_frame_runs(clip, 16)[1]  # another request
    monkeypatch.setattr(media, "SEEK_MIN_GAP", 40)
    monkeypatch.setattr(mediainfo, "SEEK_MIN_GAP", 40)
    seeks = framepipe.FramePipe.start(long_clip, 32)       # runs > SEEK_MIN_GAP apart: OpenCV seeks
    frames, index, _, _ = media.read_frame_runs(long_clip, 32, prefetched=seeks)
    assert seeks.declined == "seeks" and index == media.read_frame_runs(long_clip, 32)[1]
    png = tmp_path / "p.png"
    media.write_png(png, _textured_clip(1)[0])
    pipe = framepipe.FramePipe.start(png, 32)
    pipe._thread.join()
    assert pipe.declined == "not a video"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    pipe = framepipe.FramePipe.start(bad, 32)
    with pytest.raises(MediaError, match="not a readable video"):        # the plain path's own error
        media.read_frame_runs(bad, 32, prefetched=pipe)
    cut = tmp_path / "cut.mp4"
    data = Path(clip).read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    pipe = framepipe.FramePipe.start(cut, 32)
    try:
        plain = media.read_frame_runs(cut, 32)
    except MediaError as exc:
        with pytest.raises(MediaError, match=str(exc).split("(")[0][:20]):
            media.read_frame_runs(cut, 32, prefetched=pipe)
    else:
        got = media.read_frame_runs(cut, 32, prefetched=pipe)
        assert got[1] == plain[1]


def _ffmpeg(*args):
    import subprocess

    subprocess.run([media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
                   check=True, capture_output=True, timeout=120)


def test_mp4_sample_table_agrees_with_the_ffmpeg_probe(tmp_path):
    from forensics import mediainfo

    clips = [media.write_mp4(tmp_path / "a.mp4", _textured_clip(50, 64, 48), fps=30, preset="ultrafast"),
             media.write_mp4(tmp_path / "b.mp4", _textured_clip(16, 32, 32), fps=8)]
    _ffmpeg("-i", clips[0], "-c", "copy", tmp_path / "c.mov")                 # MOV, moov at the end
    clips.append(tmp_path / "c.mov")
    for c in clips:
        fast, probe = mediainfo.mp4_info(c), media.probe_video(c)
        assert fast is not None and (fast.width, fast.height, fast.frames, fast.codec) == \
            (probe.width, probe.height, probe.frames, probe.codec)
        assert abs(fast.fps - probe.fps) < 1e-6 and abs(fast.duration - probe.duration) < 0.01
    # what it does not plan from: the ffmpeg probe takes over
    _ffmpeg("-i", clips[0], "-c", "copy", "-movflags", "frag_keyframe+empty_moov", tmp_path / "frag.mp4")
    _ffmpeg("-i", clips[0], "-c", "copy", tmp_path / "d.mkv")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", tmp_path / "audio.mp4")
    for name in ("frag.mp4", "d.mkv", "audio.mp4"):
        assert mediainfo.mp4_info(tmp_path / name) is None, name
    assert media.video_info(tmp_path / "frag.mp4").frames == 50
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00\x00\xff\xffmoov" + b"\x01" * 64)  # box overruns
    assert mediainfo.mp4_info(junk) is None
    data = bytearray(Path(clips[0]).read_bytes())
    at = data.find(b"mdhd")
    data[at:at + 4] = b"xxxx"                                            # a track without its media header
    nohdr = tmp_path / "nohdr.mp4"
    nohdr.write_bytes(bytes(data))
    assert mediainfo.mp4_info(nohdr) is None


def test_prefetch_plans_an_mp4_without_probing_and_checks_ffmpegs_description(tmp_path, monkeypatch):
    from forensics import framepipe, mediainfo

    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(60, 64, 48), fps=30, preset="ultrafast")
    plain = media.read_frame_runs(clip, 16)

    def no_probe(*a, **k):
        raise AssertionError("the pipe probed an MP4")

    monkeypatch.setattr(mediainfo, "probe_video_text", no_probe)
    pipe = framepipe.FramePipe.start(clip, 16)
    frames, index, gap, info = media.read_frame_runs(clip, 16, prefetched=pipe)
    assert pipe.declined is None and index == plain[1] and gap == plain[2] and info == plain[3]
    assert all(np.abs(a.astype(int) - b).max() <= 2 for a, b in zip(frames, plain[0]))
    # a rotated clip: ffmpeg's description, which comes with the decode, rules the pipe out
    rot = tmp_path / "rot.mp4"
    _ffmpeg("-display_rotation", "90", "-i", clip, "-c", "copy", rot)
    pipe = framepipe.FramePipe.start(rot, 16)
    pipe._thread.join()
    assert pipe.declined == "rotated" and pipe.frames is None


def test_cli_detect_with_prefetch_matches_the_library(tmp_path):
    if not _installed():
        pytest.skip("shipped detector checkpoints missing")
    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(90, 96, 64), fps=30, preset="ultrafast")
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "detect", str(clip), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    lib = detect.detect_file(clip, detect.load_detectors())
    assert r["per_frame_index"] == lib["per_frame_index"] and r["frames_scored"] == lib["frames_scored"]
    assert abs(r["p_synthetic"] - lib["p_synthetic"]) <= 2e-3 and r["verdict"] == lib["verdict"]


# -- the HTML report -------------------------------------------------------------------------
def _installed():
    return all((dbase.CHECKPOINT_ROOT / n / "config.json").is_file() for n in ("artifact", "frequency", "temporal"))


def test_detect_report_html_has_plot_and_thumbnails(tmp_path):
    if not _installed():
        pytest.skip("shipped detector checkpoints missing")
    clip = media.write_mp4(tmp_path / "a<b>&'clip.mp4", _textured_clip(64, 64, 48), fps=16, preset="ultrafast")
    dets = detect.load_detectors()
    out = detect.detect_file(clip, dets, max_frames=16, report_dir=tmp_path / "rep")
    rep = out["report"]
    page = Path(rep["html"]).read_text()
    assert "<b>&" not in page and "a&lt;b&gt;&amp;" in page          # the file name is escaped
    svg = page[page.index("<svg"):page.index("</svg>") + 6]
    root = ElementTree.fromstring(svg)                                  # well-formed
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 3                      # artifact, frequency, temporal
    n_points = len(out["detectors"]["temporal"]["per_pair"]) + 2 * len(out["per_frame_index"])
    assert len(root.findall(f"{ns}circle")) == n_points
    assert len(out["per_frame_index"]) == out["frames_per_frame_detectors"] == len(out["detectors"]["artifact"]["per_frame"])
    thumbs = rep["thumbnails"]
    assert len(thumbs) == len(rep["suspicious_frames"]) == 6
    ps = [r["p"] for r in rep["suspicious_frames"]]
    assert ps == sorted(ps, reverse=True)
    for t, r in zip(thumbs, rep["suspicious_frames"]):
        assert Path(t).is_file() and f"src='{html.escape(quote(Path(t).name))}'" in page
        assert f"frame {r['frame']} (" in page
        assert media.read_image(t).shape[1] == 240
    saved = json.loads(Path(rep["json"]).read_text())
    assert saved["report"]["html"] == rep["html"] and saved["per_frame_index"] == out["per_frame_index"]


def test_cli_detect_report_does_not_import_torch(tmp_path):
    if not _installed():
        pytest.skip("shipped detector checkpoints missing")
    clip = media.write_mp4(tmp_path / "c.mp4", _textured_clip(40, 64, 48), fps=8, preset="ultrafast")
    code = ("import sys, cli\n"
            f"rc = cli.main(['detect', {str(clip)!r}, '--json', '--report', {str(tmp_path / 'r')!r}])\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'scoring imported torch'\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["modality"] == "video" and Path(r["report"]["html"]).is_file()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "detect", str(bad), "--report", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


# -- real clips from a user video folder -----------------------------------------------------
def _ramp_video(path, n, fps):
    """Flat frames whose grey level encodes the frame number (20 + 2i)."""
    frames = np.stack([np.full((36, 48, 3), 20 + 2 * i, np.uint8) for i in range(n)])
    return media.write_mp4(path, frames, fps=fps, crf=10, preset="ultrafast")


def test_folder_clips_resampled_to_8_fps_split_by_file(tmp_path):
    (tmp_path / "sub").mkdir()
    _ramp_video(tmp_path / "a.mp4", 70, 24)        # stride 3 → 24 frames → 1 clip of 16 at 8 fps
    _ramp_video(tmp_path / "sub" / "b.mp4", 100, 30)  # stride 4 → 25 frames → 1 clip at 7.5 fps
    _ramp_video(tmp_path / "c.mp4", 40, 4)          # under 8 fps: every frame → 2 clips at 4 fps
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    got = list(realdata.folder_clips(tmp_path, frames=16, size=32))
    by = {}
    for clip, fps, source, split in got:
        assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
        assert split == realdata.split_of(source.split(":", 1)[1])
        by.setdefault(source, []).append((clip, fps))
    assert sorted(by) == ["file:a.mp4", "file:c.mp4", "file:sub/b.mp4"]
    (a, fa), = by["file:a.mp4"]
    (b, fb), = by["file:sub/b.mp4"]
    assert fa == 8.0 and fb == 7.5 and [f for _, f in by["file:c.mp4"]] == [4.0, 4.0]
    levels = a.reshape(16, -1).mean(1)
    np.testing.assert_allclose(levels, 20 + 2 * 3 * np.arange(16), atol=2)   # every 3rd frame
    np.testing.assert_allclose(b.reshape(16, -1).mean(1), 20 + 2 * 4 * np.arange(16), atol=2)
    c2 = by["file:c.mp4"][1][0].reshape(16, -1).mean(1)
    np.testing.assert_allclose(c2, 20 + 2 * (16 + np.arange(16)), atol=2)    # the second clip follows
    assert len(list(realdata.folder_clips(tmp_path, frames=16, size=32, max_clips_per_video=1))) == 3
    assert realdata.clip_stride(30) == 4 and realdata.clip_stride(24) == 3 and realdata.clip_stride(6) == 1


def test_folder_clips_skip_videos_whose_frames_are_further_apart_than_their_rate(tmp_path):
    # An AVI with dropped frames states 15 fps but holds a frame every 0.4 s: its clips would be
    # labelled ~7.5 fps while spanning 6x that time, so it gives none; a normal clip still does.
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=15",
                    "-t", "6", "-vf", "select='not(mod(n,6))'", "-fps_mode", "passthrough", "-c:v", "mpeg4",
                    "-q:v", "5", str(tmp_path / "dropped.avi")], check=True, timeout=60)
    _ramp_video(tmp_path / "a.mp4", 70, 24)
    got = [source for _, _, source, _ in realdata.folder_clips(tmp_path, frames=4, size=32)]
    assert got and set(got) == {"file:a.mp4"}


# Containers users meet besides MP4/MKV/AVI: camcorders and DVDs (MPEG-PS), broadcast and AVCHD
# (MPEG-TS, M2TS), Ogg Theora, Flash, Windows Media, raw Y4M test sequences, a bare MPEG stream.
OTHER_CONTAINERS = [
    ("clip.mpg", "mpeg-ps", ["-c:v", "mpeg2video", "-q:v", "3"]),
    ("clip.ts", "mpeg-ts", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts"]),
    ("clip.m2ts", "mpeg-ts", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", "-mpegts_m2ts_mode", "1"]),
    ("clip.ogv", "ogg", ["-c:v", "libtheora", "-q:v", "7"]),
    ("clip.flv", "flv", ["-c:v", "flv", "-q:v", "3"]),
    ("clip.wmv", "asf", ["-c:v", "wmv2", "-q:v", "3"]),
    ("clip.y4m", "y4m", ["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe"]),
    ("clip.m2v", "mpeg-video", ["-c:v", "mpeg2video", "-q:v", "3", "-f", "mpeg2video"]),
]


@pytest.fixture(scope="module")
def other_containers(tmp_path_factory):
    d = tmp_path_factory.mktemp("containers")
    src = media.write_mp4(d / "src.mp4", np.repeat(np.repeat(_textured_clip(24, 48, 32), 2, 1), 2, 2), fps=24)
    for name, _, args in OTHER_CONTAINERS:
        _ffmpeg("-i", src, "-an", *args, d / name)
    return d


@pytest.mark.parametrize("name,container,_", OTHER_CONTAINERS)
def test_other_video_containers_are_recognized_and_scored(other_containers, name, container, _):
    from forensics import framepipe, mediainfo

    p = other_containers / name
    assert mediainfo.video_container(p.read_bytes()[:512]) == container and media.sniff(p) == "video"
    frames, index, gap, info = media.read_frame_runs(p, 16)
    # 24 frames at 24 fps; MPEG program streams state ~0.9 s and bare streams no length, so the
    # plan may hold fewer frames there (one run from the start), never a wrong one
    assert frames[0].shape == (64, 96, 3) and gap == 3 and len(frames) == len(index) >= 7
    assert len(frames) == 16 or container in ("mpeg-ps", "mpeg-video")
    # the prefetch pipe leaves these to the plain path
    pipe = framepipe.FramePipe.start(p, 16)
    assert pipe.result(p, 16)[0] is None and container in pipe.declined
    r = run_cli("detect", p, "--json", "--max-frames", "16", timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["modality"] == "video" and out["frames_scored"] == len(frames)
    assert len(out["detectors"]["temporal"]["per_pair"]) >= 6


def test_folders_include_every_recognized_video_container(other_containers):
    names = {p.name for p in media.iter_media_files(other_containers)}
    assert names == {"src.mp4"} | {n for n, _, _ in OTHER_CONTAINERS}
