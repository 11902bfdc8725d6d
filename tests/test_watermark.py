"""Post-hoc watermark: round trips, robustness, the false-positive test, video, keys and CLI."""

from __future__ import annotations

import json
import math
import stat

import cv2
import numpy as np
import pytest
from PIL import Image

import cli
from forensics import attacks, media, realdata
from forensics.watermark import posthoc as ph

PAYLOAD = bytes.fromhex("c0ffee42")
KEY = ph.WatermarkKey(bytes(range(32)))
OTHER = ph.WatermarkKey(bytes(range(1, 33)))


def _photo(name: str) -> np.ndarray:
    return next(s for s in realdata.bundled_sources() if s.name == name).load()


@pytest.fixture(scope="module")
def marked256():
    im = np.ascontiguousarray(_photo("skimage:chelsea")[20:276, 100:356])
    return im, ph.embed(im, KEY, PAYLOAD)


# --- error correction and the null distribution ------------------------------------------------


def test_code_corrects_errors():
    rng = np.random.default_rng(0)
    msg = ph._message(PAYLOAD, 0x12345678)
    coded = ph.conv_encode(msg)
    assert len(coded) == ph.n_coded()
    soft = (1.0 - 2.0 * coded) + rng.normal(0, 0.6, len(coded))
    flip = rng.choice(len(coded), 8, replace=False)
    soft[flip] = -soft[flip]
    assert np.array_equal(ph.viterbi_decode(soft), msg)


def test_chernoff_bound_covers_the_null():
    rng = np.random.default_rng(1)
    m = 64
    sums = np.cos(rng.uniform(0, 2 * np.pi, (20000, m))).sum(1)
    for t in (8.0, 14.0, 20.0):
        assert np.mean(sums >= t) <= ph.chernoff_tail(t, m) + 3e-3
    assert ph.chernoff_tail(40.0, m) < 1e-12


def _viterbi_reference(soft: np.ndarray) -> np.ndarray:
    """Textbook soft Viterbi over the encoder's shift register (newest input in the top bit)."""
    k, gens = 7, (0o171, 0o133)
    steps = len(soft) // 2
    metric = {0: 0.0}
    paths = {0: []}
    for t in range(steps):
        new_metric, new_paths = {}, {}
        for state, m in sorted(metric.items()):
            for b in (0, 1):
                full = (b << (k - 1)) | state
                out = [bin(full & g).count("1") % 2 for g in gens]
                cand = m + sum((1 - 2 * o) * soft[2 * t + j] for j, o in enumerate(out))
                nxt = full >> 1
                if nxt not in new_metric or cand > new_metric[nxt]:
                    new_metric[nxt], new_paths[nxt] = cand, paths[state] + [b]
        metric, paths = new_metric, new_paths
    return np.array(paths[0][: steps - (k - 1)], np.int8)


def test_batched_viterbi_matches_a_textbook_decoder():
    rng = np.random.default_rng(2)
    msgs = [ph._message(bytes(rng.integers(0, 256, 4, dtype=np.uint8)), 0x5A5A5A5A) for _ in range(6)]
    for m in msgs:  # the generator-matrix encoder against the shift register
        assert np.array_equal(ph.conv_encode(m), ph._conv_encode(m))
    soft = np.stack([(1.0 - 2.0 * ph.conv_encode(m)) + rng.normal(0, s, ph.n_coded())
                     for m, s in zip(msgs, (0.3, 0.6, 0.9, 1.2, 2.0, 5.0))])
    batch = ph.viterbi_decode_batch(soft)
    for row, s in zip(batch, soft):
        assert np.array_equal(row, _viterbi_reference(s))
        assert np.array_equal(row, ph.viterbi_decode(s))
    assert all(np.array_equal(batch[i], msgs[i]) for i in range(2))  # light noise: decoded


# --- fast paths agree with the plain formulas -------------------------------------------------------


@pytest.mark.parametrize("h, w", [(21, 45), (64, 96), (100, 77)])
def test_fold_by_reshaping_matches_the_scatter_add(h, w):
    y = np.random.default_rng(3).normal(size=(h, w)).astype(np.float32)
    fold = ph._Fold(np.eye(2) / ph.G, h, w)
    assert fold.grid
    fold.add(y)
    want = np.zeros((ph.G, ph.G))
    np.add.at(want, ((np.arange(h) % ph.G)[:, None], (np.arange(w) % ph.G)[None, :]), y.astype(np.float64))
    assert np.allclose(fold.sums.reshape(ph.G, ph.G), want, atol=1e-9)
    cnt = np.zeros((ph.G, ph.G))
    np.add.at(cnt, ((np.arange(h) % ph.G)[:, None], (np.arange(w) % ph.G)[None, :]), 1.0)
    assert np.array_equal(fold.counts.reshape(ph.G, ph.G), cnt)


def test_axis_aligned_fold_counts_every_pixel_once():
    h, w = 70, 91
    fold = ph._Fold(np.eye(2) / 45.25, h, w)
    assert not fold.grid
    assert np.array_equal(fold.counts, np.bincount(fold.index, minlength=ph.G * ph.G))
    ux, uy = (np.arange(w) + 0.5) / 45.25, (np.arange(h) + 0.5) / 45.25
    want = np.floor((uy % 1) * ph.G)[:, None] * ph.G + np.floor((ux % 1) * ph.G)[None, :]
    assert np.array_equal(fold.index, want.ravel().astype(np.intp))


def test_rotated_fold_bins_every_pixel_by_its_tile_position():
    a = ph._map(37.3, math.radians(3.0))
    h, w = 50, 70
    fold = ph._Fold(a, h, w)
    px, py = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ux, uy = a[0, 0] * px + a[1, 0] * py, a[0, 1] * px + a[1, 1] * py
    want = (np.floor((uy % 1) * ph.G) % ph.G) * ph.G + np.floor((ux % 1) * ph.G) % ph.G
    assert np.mean(fold.index == want.ravel()) > 0.999  # float32 rounding at bin edges aside


def test_luma_lookup_matches_the_float_formula():
    x = np.random.default_rng(4).integers(0, 256, (33, 47, 4), dtype=np.uint8)
    for v in (x[..., :3], x, x[2:30, 5:40, :3], x[:, ::-1, :3]):
        a = v.astype(np.float32)
        assert np.array_equal(ph.luma(v), 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2])


def test_tiled_render_matches_the_direct_sum():
    lay = ph.layout_for(KEY.secret)
    c = ph.coefficients(lay, PAYLOAD)
    for period, h, w in ((64.0, 150, 201), (32.0, 40, 33), (64.0, 50, 60)):
        assert np.allclose(ph.render(c, lay.k, period, h, w), ph._render(c, lay.k, period, h, w), atol=1e-4)


def test_ring_median_matches_numpy():
    rng = np.random.default_rng(5)
    x, ring = rng.normal(size=200), rng.integers(3, 12, 200)
    out = ph._ring_median(x, ring)
    for r in np.unique(ring):
        assert np.all(out[ring == r] == np.median(x[ring == r]))


def test_comb_spectrum_matches_a_double_precision_fft():
    y = ph.luma(np.ascontiguousarray(_photo("skimage:coffee")[:200, :300]))
    q, s = ph.comb_spectrum([y])
    n = q.shape[0]
    c = ph.prefilter(np.ascontiguousarray(y[:s, 50:50 + s]), 48.0).astype(np.float64)
    power = np.abs(np.fft.fft2(c - c.mean(), s=(n, n))) ** 2
    f = np.fft.fftfreq(n)
    ring = np.round(np.hypot(f[None, :], f[:, None]) * s).astype(np.int64)
    logp = np.log(power + 1e-12)
    mean = np.bincount(ring.ravel(), logp.ravel()) / np.maximum(np.bincount(ring.ravel()), 1)
    want = np.exp(logp - mean[ring])
    # ring 0 is the DC bin's neighbourhood, ≈ 0 power (rounding noise) and never read by the
    # comb score (|k|/P ≥ 12/s); elsewhere single precision is ample
    big = (want > 1e-3) & (ring > 0)
    assert np.allclose(q[big], want[big], rtol=1e-3)


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 256])
def test_round_trip_through_png(size, tmp_path):
    photo = _photo("skimage:coffee")
    im = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA) if size < 256 else \
        np.ascontiguousarray(photo[100:100 + size, 150:150 + size])
    wm = ph.embed(im, KEY, PAYLOAD)
    assert ph.psnr(im, wm) >= 40.0
    media.write_png(tmp_path / "m.png", wm)
    d = ph.detect(media.read_image(tmp_path / "m.png"), KEY)
    assert d.detected and d.payload == PAYLOAD.hex() and d.p_value <= 1e-6


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba_inputs(mode, tmp_path):
    rgb = np.ascontiguousarray(_photo("skimage:chelsea")[50:178, 150:278])
    img = Image.fromarray(rgb).convert(mode)
    if mode == "RGBA":
        a = np.full(rgb.shape[:2], 255, np.uint8)
        a[:20, :20] = 0  # a transparent corner
        img.putalpha(Image.fromarray(a))
    src = tmp_path / f"in_{mode}.png"
    img.save(src)
    out = tmp_path / "out.png"
    r = ph.embed_file(src, out, KEY, PAYLOAD)
    assert r["psnr_db"] >= 40.0
    d = ph.detect_file(out, KEY)
    assert d["detected"] and d["payload"] == PAYLOAD.hex()


def test_psnr_at_default_strength_and_strength_option():
    im = np.ascontiguousarray(_photo("sklearn:flower.jpg")[100:356, 200:456])
    assert ph.psnr(im, ph.embed(im, KEY, PAYLOAD)) >= 40.0
    assert ph.psnr(im, ph.embed(im, KEY, PAYLOAD, strength=2.0)) < 38.0


@pytest.mark.parametrize("spec", ["jpeg:75", "resize:0.5", "crop:0.9", "blur:1"])
def test_survives_attacks_at_256(marked256, spec):
    _, wm = marked256
    d = ph.detect(attacks.parse(spec)(wm, np.random.default_rng(3)), KEY)
    assert d.detected and d.payload == PAYLOAD.hex(), (spec, d)


def test_shift_search_refines_a_half_bin_offset():
    # pilot-only spectrum of a tile shifted by a half bin on both axes, as an odd-pixel crop
    # leaves a 64 px period folded at 2 px per bin; the integer peak is a corner of the true shift
    lay = ph.layout_for(KEY.secret)
    true = (3.5, 7.5)
    k = lay.k
    f = np.exp(1j * lay.phase + 2j * np.pi * (k[:, 0] * true[1] + k[:, 1] * true[0]) / ph.G)
    surf = ph._pilot_surface(f, lay)
    d = ph._peaks(surf, 1)[0]
    assert max(abs(d[0] - true[0]), abs(d[1] - true[1])) == 0.5
    dy, dx = ph._subbin(f, d, lay)
    assert abs(dy - true[0]) < 1 / 16 and abs(dx - true[1]) < 1 / 16


def test_crop_to_half_area_at_odd_offsets_decodes_at_256():
    # 181×181 of a 256 px marked photo, offsets odd on both axes: the 64 px tile lands half a
    # bin off the fold's grid (this crop lost its payload when the shift was read by a parabola)
    im = np.ascontiguousarray(_photo("skimage:chelsea")[20:276, 20:276])
    wm = ph.embed(im, KEY, PAYLOAD)
    d = ph.detect(wm[35:35 + 181, 37:37 + 181], KEY)
    assert d.detected and d.payload == PAYLOAD.hex(), d


def test_wrong_key_and_unmarked_are_rejected(marked256):
    im, wm = marked256
    for d in (ph.detect(wm, OTHER), ph.detect(im, KEY)):
        assert not d.detected and d.payload is None and d.p_value > ph.DEFAULT_THRESHOLD


def test_marked_with_another_key_is_not_read_as_ours():
    im = np.ascontiguousarray(_photo("skimage:coffee")[0:128, 0:128])
    d = ph.detect(ph.embed(im, OTHER, PAYLOAD), KEY)
    assert not d.detected and d.payload is None


# --- video ---------------------------------------------------------------------------------------


def test_mp4_survives_h264_crf28_and_frame_drop(tmp_path):
    rng = np.random.default_rng(0)
    base = _photo("skimage:chelsea")[60:188, 160:288].astype(np.float32)
    clip = np.stack([np.clip(np.round(base + rng.normal(0, 1.5, base.shape)), 0, 255).astype(np.uint8)
                     for _ in range(10)])
    src = media.write_mp4(tmp_path / "clip.mp4", clip, fps=8.0)
    marked = tmp_path / "marked.mp4"
    r = ph.embed_file(src, marked, KEY, PAYLOAD)
    assert r["frames"] == 10 and r["psnr_db"] >= 40.0
    frames, _ = media.read_video(marked)
    dropped = attacks.frame_drop(frames, 0.2, rng=np.random.default_rng(1))
    attacked = media.write_mp4(tmp_path / "attacked.mp4", dropped, fps=8.0, crf=28)
    d = ph.detect_file(attacked, KEY)
    assert d["detected"] and d["payload"] == PAYLOAD.hex() and d["frames_used"] == 8
    assert not ph.detect_file(src, KEY)["detected"]


def _clip(camera: str, n: int = 12, side: int = 256) -> np.ndarray:
    """A noisy clip of a real photo: a fixed camera, or one panning 2 px right and 1 px down per
    frame (the bench's clips, shorter)."""
    photo = _photo("skimage:coffee")
    rng = np.random.default_rng(0)
    frames = []
    for t in range(n):
        dx = 0.0 if camera == "static" else 2.0 * t
        m = np.array([[1, 0, 40 + dx], [0, 1, 60 + 0.5 * dx]], np.float64)
        fr = cv2.warpAffine(photo, m, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        frames.append(np.clip(np.round(fr + rng.normal(0, 1.5, fr.shape)), 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.mark.parametrize("camera, spec", [("pan", "h264:28"), ("static", "resize:0.5+h264:28"),
                                          ("pan", "h264:28+framedrop:0.2")])
def test_video_survives_crf28_resize_and_drop(camera, spec):
    clip = _clip(camera)
    wm = ph.embed_frames(clip, KEY, PAYLOAD)
    assert min(ph.psnr(a, b) for a, b in zip(clip, wm)) >= 40.0  # every frame, not the mean
    x = attacks.parse(spec)(attacks.h264(wm, crf=18), np.random.default_rng(1))
    d = ph.detect_frames(x, KEY)
    assert d.detected and d.payload == PAYLOAD.hex() and d.p_value <= ph.DEFAULT_THRESHOLD, (spec, d)


def test_unmarked_reencoded_clip_is_rejected():
    plain = attacks.h264(_clip("pan"), crf=18)
    for x in (plain, attacks.h264(plain, crf=28)):
        d = ph.detect_frames(x, KEY)
        assert not d.detected and d.payload is None and d.p_value > ph.DEFAULT_THRESHOLD


def test_global_motion_is_stable_over_many_frames():
    """A pan of 2 px/frame read back over 24 frames (OpenCV 5 windows phaseCorrelate's inputs in
    place: a reused reference frame used to turn the late shifts into noise)."""
    clip = _clip("pan", n=24)
    motion = ph.global_motion([ph.luma(f) for f in clip])
    t = np.arange(24)
    assert np.allclose(motion[:, 0], -2.0 * t, atol=0.3) and np.allclose(motion[:, 1], -1.0 * t, atol=0.3)


# --- keys and CLI --------------------------------------------------------------------------------


def test_key_file_made_on_first_use_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    path = ph.default_key_path()
    assert path == tmp_path / "cfg" / "forensics" / "watermark.key"
    with pytest.raises(ph.UsageError):
        ph.load_key()
    k1 = ph.load_key(create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ph.load_key().secret == k1.secret and len(k1.secret) == 32
    assert json.loads(path.read_text())["key"] == k1.secret.hex()


def test_payload_parsing():
    assert ph.parse_payload("0x2a") == bytes.fromhex("0000002a")
    assert ph.parse_payload("C0FFEE42") == PAYLOAD
    for bad in ("", "xyz", "123456789"):
        with pytest.raises(ph.UsageError):
            ph.parse_payload(bad)


def test_cli_embed_detect_round_trip(tmp_path, capsys):
    src = tmp_path / "in.png"
    media.write_png(src, np.ascontiguousarray(_photo("skimage:coffee")[100:292, 100:292]))
    key = tmp_path / "wm.key"
    out = tmp_path / "out.png"
    assert cli.main(["watermark", "embed", str(src), str(out), "--payload", "c0ffee42", "--key", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    capsys.readouterr()
    assert cli.main(["watermark", "detect", str(out), str(src), "--json", "--key", str(key)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1] == {"summary": {"files": 2, "tested": 2, "marked": 1, "failed": 0}}
    lines = lines[:-1]
    assert [r["detected"] for r in lines] == [True, False]
    r = lines[0]
    assert {"path", "method", "detected", "payload", "p_value", "bit_accuracy", "frames_used"} <= set(r)
    assert r["method"] == "posthoc" and r["payload"] == "c0ffee42" and r["p_value"] <= 1e-6
    assert r["frames_used"] == 1 and r["bit_accuracy"] > 0.9
    assert lines[1]["payload"] is None and lines[1]["p_value"] > 1e-6


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    key = tmp_path / "k.key"
    ph.save_key(KEY, key)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    tiny = tmp_path / "tiny.png"
    media.write_png(tiny, np.zeros((16, 16, 3), np.uint8))
    ok = tmp_path / "ok.png"
    media.write_png(ok, np.zeros((64, 64, 3), np.uint8))
    cases = [
        ["watermark", "detect", str(tmp_path / "missing.png"), "--key", str(key)],
        ["watermark", "detect", str(junk), "--key", str(key)],
        ["watermark", "detect", str(tiny), "--key", str(key)],
        ["watermark", "detect", str(ok), "--key", str(tmp_path / "no.key")],
        ["watermark", "embed", str(ok), str(tmp_path / "o.png"), "--payload", "nothex", "--key", str(key)],
        ["watermark", "embed", str(ok), str(tmp_path / "o.gif"), "--key", str(key)],
        ["watermark", "embed", str(tiny), str(tmp_path / "o.png"), "--key", str(key)],
    ]
    for argv in cases:
        capsys.readouterr()
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)


def test_p_value_is_honest_on_many_unmarked_patches():
    """120 unmarked real patches: no detection, and p-values not concentrated near 0."""
    rng = np.random.default_rng(5)
    ps = []
    for src in realdata.bundled_sources()[:8]:
        photo = src.load()
        for _ in range(15):
            h, w = photo.shape[:2]
            y, x = rng.integers(0, h - 48), rng.integers(0, w - 48)
            d = ph.detect_lumas([ph.luma(photo[y:y + 48, x:x + 48])], KEY)
            assert not d.detected
            ps.append(d.p_value)
    assert np.mean(np.array(ps) < 0.01) < 0.05 and math.isfinite(sum(ps))
