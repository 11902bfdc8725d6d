"""Video: the video diffusion model, latent-walk clips, temporal features, the temporal detector
and `detect` on an MP4. Small and CPU-sized (tiny presets, a 22-clip corpus)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from forensics import detect, media, realdata
from forensics.corpus import Corpus, CorpusWriter
from forensics.detectors import temporal as T
from forensics.detectors.base import Media
from generators import base


# -- video diffusion ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vd():
    torch.manual_seed(0)
    return base.create("video_diffusion", "tiny").eval()


def test_video_diffusion_loss_and_sample(tiny_vd):
    m = tiny_vd
    c = m.config
    x = torch.rand(2, c.frames, 3, c.image_size, c.image_size) * 2 - 1
    m.train()
    loss = m.loss(x)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    m.eval()
    a = m.sample(2, generator=torch.Generator().manual_seed(3))
    b = m.sample(2, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, c.frames, 3, c.image_size, c.image_size)
    assert torch.equal(a, b) and a.abs().max() <= 1
    assert not torch.equal(a, m.sample(2, generator=torch.Generator().manual_seed(4)))
    assert m.num_parameters() < 2_000_000
    assert base.create("video_diffusion", "cpu").num_parameters() <= 2_000_000


def test_video_diffusion_autoregressive_extension(tiny_vd):
    m = tiny_vd
    c = m.config
    long = m.sample(1, generator=torch.Generator().manual_seed(0), frames=3 * c.frames + 1)
    assert long.shape[1] == 3 * c.frames + 1
    given = torch.rand(1, c.frames, 3, c.image_size, c.image_size) * 2 - 1
    ext = m.extend(given, 2 * c.frames, generator=torch.Generator().manual_seed(0))
    assert ext.shape[1] == 2 * c.frames
    assert torch.allclose(ext[:, :c.frames], given)            # the given frames are kept as they are
    # The chunk after the first is conditioned: its context frames are the previous chunk's last.
    short = m.sample(1, generator=torch.Generator().manual_seed(0), frames=c.frames)
    assert torch.equal(long[:, :c.frames], short)


def test_video_diffusion_temporal_super_resolution(tiny_vd, tmp_path):
    m = tiny_vd
    c = m.config
    given = torch.rand(2, 5, 3, c.image_size, c.image_size) * 2 - 1
    up = m.interpolate(given, generator=torch.Generator().manual_seed(0))
    assert up.shape == (2, 9, 3, c.image_size, c.image_size)
    assert torch.allclose(up[:, ::2], given)                      # the given frames stay, in order
    assert up[:, 1::2].abs().max() <= 1 and up[:, 1::2].abs().sum() > 0   # every gap was sampled
    # the training mask draws both conditionings: first `context` frames and even frames
    masks = m._cond_mask(torch.zeros(256, c.frames, 3, 1, 1), torch.Generator().manual_seed(0)).view(256, -1)
    rows = {tuple(r.int().tolist()) for r in masks}
    first = tuple(int(i < c.context) for i in range(c.frames))
    even = tuple(int(i % 2 == 0) for i in range(c.frames))
    assert {first, even, (0,) * c.frames} <= rows and len(rows) == 3
    # the cascade: a short base clip, then upsampled in time; clips at twice the frame rate
    clip = m.sample(1, generator=torch.Generator().manual_seed(1), sampler="ddim+tsr", frames=7)
    assert clip.shape[1] == 7 and m.fps_for("ddim+tsr") == 2 * c.fps
    with pytest.raises(base.GeneratorError):
        m.sample(1, generator=torch.Generator(), sampler="ddim+upscale")

    from forensics.generate import generate

    ck = m.save(tmp_path / "vd")
    r = generate(["video_diffusion_tsr"], 1, tmp_path / "out", checkpoint=str(ck), device="cpu",
                 progress=False, frames=6)
    assert r["made"] == 1
    row = Corpus(tmp_path / "out").rows[0]
    assert (row["architecture"], row["sampler"], row["family"]) == ("video_diffusion_tsr", "ddim+tsr", "video_diffusion")
    assert row["frames"] == 6 and row["fps"] == 2 * c.fps


# -- latent walks ------------------------------------------------------------------------------
def test_latent_walk_generate_writes_mp4_rows(tmp_path):
    from forensics.generate import generate

    ck = base.create("vae", "tiny").save(tmp_path / "vae")
    r = generate(["vae_interp"], 2, tmp_path / "out", checkpoint=str(ck), device="cpu", progress=False, frames=6)
    assert r["made"] == 2
    c = Corpus(tmp_path / "out")
    assert len(c.rows) == 2
    for row in c.rows:
        assert row["file_name"].startswith("clips/vae_interp/") and row["file_name"].endswith(".mp4")
        assert (row["modality"], row["family"], row["architecture"], row["sampler"]) == \
            ("video", "vae", "vae_interp", "latent_walk")
        assert row["frames"] == 6 and row["fps"] == 8.0 and row["checkpoint_sha256"] == base.checkpoint_sha256(ck)
        frames, fps = media.read_video(c.path(row))
        assert frames.shape == (6, 32, 32, 3)


# -- temporal features -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cam_clip():
    photo = realdata._load_source("skimage:chelsea")
    return realdata.virtual_camera_clip(photo, np.random.default_rng(1), 16, 32)


def _mean_features(clip):
    feats, _, summary = T.clip_features(list(clip))
    return np.concatenate(feats).mean(0), summary


def test_temporal_features_static_flicker_shuffled(cam_clip):
    i = {n: k for k, n in enumerate(T.FEATURES)}
    real, s_real = _mean_features(cam_clip)
    flick = cam_clip.astype(np.float32)
    flick[1::2] *= 1.2
    flick, s_flick = _mean_features(np.clip(flick, 0, 255).astype(np.uint8))
    assert flick[i["log_brightness_flicker"]] > real[i["log_brightness_flicker"]] + 1.0
    assert flick[i["log_brightness_second_difference"]] > real[i["log_brightness_second_difference"]] + 1.0
    assert flick[i["log_warp_residual"]] > real[i["log_warp_residual"]]
    assert s_flick["flicker_gray_levels"] > 5 * s_real["flicker_gray_levels"]
    # A still clip: nothing changes, so no residual; shuffled frames: motion no flow explains.
    _, s_static = _mean_features(np.stack([cam_clip[0]] * 8))
    assert s_static["warp_residual_gray_levels"] < 0.5 and s_static["flicker_gray_levels"] == 0
    perm = np.random.default_rng(0).permutation(len(cam_clip))
    _, s_shuf = _mean_features(cam_clip[perm])
    assert s_shuf["warp_residual_gray_levels"] > s_real["warp_residual_gray_levels"]


def test_train_augmentation_moves_objects_across_real_clips(cam_clip):
    """Real clips get objects crossing the frame on their own (not with the camera); both
    classes sometimes lose every other frame; shapes and dtype stay."""
    aug = T._Augment(np.random.default_rng(0))
    aug.pool = [np.full_like(cam_clip[0], (255, 0, 255))]     # a colour the clip does not have
    moved = 0
    for _ in range(20):
        out = aug._moving_objects(cam_clip)
        assert out.shape == cam_clip.shape and out.dtype == np.uint8
        mask = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] > 200)     # (T, H, W)
        seen = [t for t in range(len(out)) if mask[t].any()]
        assert seen, "the object never entered the frame"
        a, b = seen[0], seen[-1]
        centre = [np.argwhere(mask[t]).mean(0) for t in (a, b)]
        moved += bool(b > a and (np.abs(centre[1] - centre[0]).max() > 1 or mask[a].sum() != mask[b].sum()))
    assert moved >= 15
    lengths = {len(aug(cam_clip, real=bool(k % 2))) for k in range(40)}
    assert lengths == {len(cam_clip), len(cam_clip[::2])}


def test_plan_runs_spreads_pairs():
    idx = media.plan_runs(300, 32, 8, 4)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 299
    runs = T.split_runs(idx, 4, len(idx))
    assert len(runs) == 4 and all(len(r) == 8 for r in runs)
    assert media.plan_runs(16, 32, 8, 1) == list(range(16))
    assert media.plan_runs(0, 5, 8, 2) == [0, 2, 4, 6, 8]
    # a short clip at twice the target frame rate: the two planned runs interleave, and both
    # still give pairs 2 frames apart (they gave none before)
    idx = media.plan_runs(16, 32, 8, 2)
    assert idx == list(range(16))
    runs = T.split_runs(idx, 2, len(idx))
    assert sorted(map(tuple, runs)) == [tuple(range(0, 16, 2)), tuple(range(1, 16, 2))]


# -- the temporal detector ---------------------------------------------------------------------
def _morph_clip(rng, frames=16):
    """A stand-in for a frame-wise fake: a cross-fade between two photo crops."""
    srcs = realdata.bundled_sources()
    a = realdata.random_crop(srcs[int(rng.integers(len(srcs)))].load(), rng)
    b = realdata.random_crop(srcs[int(rng.integers(len(srcs)))].load(), rng)
    u = np.linspace(0, 1, frames)[:, None, None, None]
    return np.clip((1 - u) * a + u * b + rng.normal(0, 1, (frames, 32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_video_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("video_corpus")
    rng = np.random.default_rng(0)
    photos = {sp: [s for s in realdata.bundled_sources() if s.split == sp] for sp in realdata.SPLITS}
    with CorpusWriter(d) as w:
        for sp, n in (("train", 6), ("val", 3), ("test", 2)):
            for k in range(n):
                src = photos[sp][k % len(photos[sp])]
                clip = realdata.virtual_camera_clip(src.load(), rng, 16, 32)
                w.add_clip(f"clips/real/{sp}_{k}.mp4", clip, 8.0, label="real", family="real",
                           architecture="real", source=src.name, split=sp)
                w.add_clip(f"clips/morph/{sp}_{k}.mp4", _morph_clip(rng), 8.0, label="synthetic",
                           family="vae", architecture="morph", split=sp)
    return d


@pytest.fixture(scope="module")
def fitted_temporal(tiny_video_corpus):
    return T.TemporalDetector().fit(Corpus(tiny_video_corpus), epochs=60)


@pytest.fixture(scope="module")
def video_fusion(fitted_temporal, tiny_video_corpus, tmp_path_factory):
    """A video fusion fitted on the tiny corpus over its temporal detector and the shipped
    frequency detector (the per-frame one a video fusion combines with it)."""
    from forensics.detectors import base as dbase
    from forensics.detectors.fusion import VideoFusionDetector
    from forensics.fit import train_detector

    if not (dbase.CHECKPOINT_ROOT / "frequency" / "config.json").is_file():
        pytest.skip("no shipped frequency checkpoint")
    d = tmp_path_factory.mktemp("video_fusion")
    fitted_temporal.save(d / "temporal")
    dets = {"temporal": dbase.load(d / "temporal"), "frequency": dbase.load("frequency")}
    card = train_detector("fusion_video", tiny_video_corpus, d / "fusion_video", detectors=dets)
    return {"dir": d, "dets": dets, "card": card, "fusion": VideoFusionDetector.load(d / "fusion_video")}


def test_video_fusion_fits_on_clips_and_detect_uses_it(video_fusion, tiny_video_corpus, monkeypatch):
    fus, card, dets = video_fusion["fusion"], video_fusion["card"], video_fusion["dets"]
    assert fus.name == "fusion_video" and fus.inputs == ["frequency", "temporal"]
    assert fus.config["modality"] == "video" and 0.5 <= fus.threshold < 1
    assert fus.config["val"]["n_real"] == 3 and fus.config["val"]["n_synthetic"] == 3
    assert card["metrics"]["unit"] == "clip" and card["metrics"]["n_real"] == 2 and "verdicts" in card["metrics"]
    files = {f.name for f in (video_fusion["dir"] / "fusion_video").iterdir()}
    assert {"model.safetensors", "config.json", "card.json"} <= files and not any(f.endswith(".pkl") for f in files)
    monkeypatch.setattr(detect, "_FUSION", {"fusion_video": fus})
    c = Corpus(tiny_video_corpus)
    clip = c.path(c.select(split="test", label="synthetic")[0])
    r = detect.detect_file(clip, dets)
    assert r["fusion"]["model"] == "fusion_video" and r["fusion"]["method"] == "logistic"
    assert r["threshold"] == pytest.approx(fus.threshold, abs=1e-4) and "fusion_video" in r["models"]
    m = detect.load_media(clip)
    ev = {n: d.score(m if n == "temporal" else detect.per_frame_subset(m)) for n, d in dets.items()}
    assert r["p_synthetic"] == pytest.approx(fus.combine({n: e.p_synthetic for n, e in ev.items()}), abs=1e-4)
    # images never take the video fusion
    assert detect.fuse({"frequency": ev["frequency"]}, dets, "image")[2]["model"] != "fusion_video"


def test_video_fusion_falls_back_when_detectors_differ(video_fusion, tiny_video_corpus, monkeypatch, tmp_path):
    from forensics.detectors import base as dbase

    fus, dets = video_fusion["fusion"], video_fusion["dets"]
    monkeypatch.setattr(detect, "_FUSION", {"fusion_video": fus})
    c = Corpus(tiny_video_corpus)
    clip = c.path(c.select(split="test", label="synthetic")[0])
    m = detect.load_media(clip)
    ev = {n: d.score(m if n == "temporal" else detect.per_frame_subset(m)) for n, d in dets.items()}
    # a detector missing
    r = detect.detect_file(clip, {"frequency": dets["frequency"]})
    assert r["fusion"]["model"] != "fusion_video" and "fusion_video" not in r["models"]
    assert "fusion_video needs temporal" in r["fusion"]["note"]
    # the same detector names, but a temporal checkpoint other than the one fitted on
    (tmp_path / "t").mkdir()
    for f in (video_fusion["dir"] / "temporal").iterdir():
        (tmp_path / "t" / f.name).write_bytes(f.read_bytes() + (b"\n" if f.name == "config.json" else b""))
    other = dict(dets, temporal=dbase.load(tmp_path / "t"))
    p, thr, info = detect.fuse(ev, other, "video")
    assert info["model"] != "fusion_video" and "differs" in info["note"]
    # ...which is what videos got before a video fusion existed
    assert (p, thr) == detect.fuse(ev, other)[:2]
    # evidence missing (e.g. temporal has nothing to say on a one-frame clip)
    p, thr, info = detect.fuse({"frequency": ev["frequency"]}, dets, "video")
    assert info["model"] != "fusion_video" and "fusion_video needs" in info["note"]


def test_temporal_detector_fit_score_save_load(fitted_temporal, tiny_video_corpus, tmp_path, cam_clip):
    det = fitted_temporal
    assert 0.5 <= det.threshold < 1 and det.config["val"]["n_real"] == 3
    ev = det.score(Media("x.mp4", "video", list(cam_clip), 8.0, len(cam_clip)))
    assert 0 <= ev.p_synthetic <= 1
    assert len(ev.per_frame) == len(cam_clip) - 2  # two runs of 8 frames: 7 + 7 pairs
    j = ev.to_json()
    assert len(j["per_pair"]) == len(j["pairs"]) == 14 and "warp_residual_gray_levels" in j["measures"]
    assert det.score(Media("one.mp4", "video", [cam_clip[0]], 8.0, 1)) is None
    det.save(tmp_path / "t")
    again = T.TemporalDetector.load(tmp_path / "t")
    assert again.score(Media("x.mp4", "video", list(cam_clip), 8.0, 16)).p_synthetic == pytest.approx(ev.p_synthetic)
    m = det.evaluate(Corpus(tiny_video_corpus), "test")
    assert m["n_real"] == 2 and m["n_synthetic"] == 2


def test_detect_mp4_includes_temporal_evidence(fitted_temporal, tmp_path, cam_clip):
    clip = media.write_mp4(tmp_path / "cam.mp4", np.repeat(np.repeat(cam_clip, 2, 1), 2, 2), fps=8)
    fitted_temporal.save(tmp_path / "temporal")
    fitted_temporal.directory = tmp_path / "temporal"
    out = detect.detect_file(clip, {"temporal": fitted_temporal}, max_frames=16)
    t = out["detectors"]["temporal"]
    assert out["modality"] == "video" and out["frames_scored"] == 16
    assert len(t["per_pair"]) == 14 and 0 <= t["p_synthetic"] <= 1
    assert out["verdict"] in ("real", "synthetic", "uncertain")
    json.dumps(out)


def test_shipped_temporal_checkpoint_scores_a_clip(tmp_path, cam_clip):
    from forensics.detectors import base as dbase

    if not (dbase.CHECKPOINT_ROOT / "temporal" / "config.json").is_file():
        pytest.skip("no shipped temporal checkpoint")
    det = dbase.load("temporal")
    clip = media.write_mp4(tmp_path / "cam.mp4", cam_clip, fps=8)
    out = detect.detect_file(clip, {"temporal": det})
    assert len(out["detectors"]["temporal"]["per_pair"]) == 14


def test_per_frame_detectors_get_a_spread_subset_of_large_frames():
    big = Media("x.mp4", "video", [np.zeros((720, 1280, 3), np.uint8)] * 32, 30.0, 300,
                frame_index=list(range(0, 128, 4)), pair_gap=4)
    sub = detect.per_frame_subset(big)
    assert len(sub.frames) == detect.PER_FRAME_MIN and sub.frame_index[0] == 0 and sub.frame_index[-1] == 124
    small = Media("y.mp4", "video", [np.zeros((32, 32, 3), np.uint8)] * 16, 8.0, 16)
    assert detect.per_frame_subset(small) is small


def test_temporal_evidence_outside_its_calibrated_spacing_is_left_out_of_the_verdict(fitted_temporal, cam_clip):
    from forensics.detectors import base as dbase

    freq = dbase.load("frequency")
    dets = {"temporal": fitted_temporal, "frequency": freq}
    frames = [np.repeat(np.repeat(f, 2, 0), 2, 1) for f in cam_clip]
    # The same frames as pairs 1/8 s apart (in range) and as a 2 fps clip (pairs 0.5 s apart).
    ev_in = fitted_temporal.score(Media("a.mp4", "video", frames, 8.0, 16))
    ev_out = fitted_temporal.score(Media("b.mp4", "video", frames, 2.0, 16))
    assert ev_in.calibrated and "calibrated" not in ev_in.to_json()
    assert not ev_out.calibrated and ev_out.to_json()["calibrated"] is False
    assert any("calibration may not hold" in n for n in ev_out.notes)
    # A clip of fewer pairs than one run gives (under a second): a noisier mean than calibrated
    short = fitted_temporal.score(Media("c.mp4", "video", frames[:5], 8.0, 5))
    assert not short.calibrated and any(n.startswith("only 4 frame pairs") for n in short.notes)
    still = freq.score(Media("b.mp4", "video", frames[:4], 2.0, 16))
    p, thr, info = detect.fuse({"frequency": still, "temporal": ev_out}, dets, "video")
    assert info["left_out"] == ["temporal"] and info["inputs"] == ["frequency"]
    assert (p, thr) == detect.fuse({"frequency": still}, dets, "image")[:2]   # as if temporal were absent
    # Out-of-range temporal evidence that flags the clip makes "real" at most "uncertain"...
    loud = T.TemporalEvidence("temporal", 0.99, 5.0, calibrated=False)
    p, thr, info = detect.fuse({"frequency": still, "temporal": loud}, dets, "video")
    assert info["left_out_flags"] == ["temporal"]
    assert detect.verdict(0.001, thr, info) == "uncertain" and detect.verdict(0.001, thr) == "real"
    assert detect.verdict(0.999, thr, info) == "synthetic"
    # ...and alone it is still used (with its note), there being nothing else.
    p, _, info = detect.fuse({"temporal": loud}, dets, "video")
    assert p == pytest.approx(0.99) and "left_out" not in info
