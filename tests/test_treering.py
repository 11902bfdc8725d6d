"""Tree-Ring watermark (forensics/watermark/treering.py): the marked noise, the test's null, the
shipped samplers with few steps, and the CLI (`generate --watermark`, `watermark detect --method
treering`)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

import cli
from forensics.watermark import posthoc, treering

KEY = posthoc.WatermarkKey(bytes.fromhex("a1" * 32))
WRONG = posthoc.WatermarkKey(bytes.fromhex("b2" * 32))
SHAPE = (3, 32, 32)


def test_marked_noise_stays_standard_gaussian():
    p = treering.pattern_for(KEY, SHAPE)
    m = treering.marginal_std(p, n=256)
    assert abs(m["std"] - 1) < 0.01 and abs(m["mean"]) < 0.01
    assert abs(m["excess_kurtosis"]) < 0.05
    assert abs(m["per_pixel_std_mean"] - m["per_pixel_std_expected"]) < 0.01
    # the band's energy is unchanged: E|Y_k|² = 1 for marked and plain noise alike
    z = treering.marked_noise(512, p, torch.Generator().manual_seed(1))
    assert abs(float(treering.band_coefficients(z, p).abs().pow(2).mean()) - 1) < 0.03


def test_null_is_conservative_and_the_key_separates():
    p = treering.pattern_for(KEY, SHAPE)
    g = torch.Generator().manual_seed(2)
    plain = treering.score(treering.band_coefficients(torch.randn(400, *SHAPE, generator=g), p), p)
    pv = np.array([r["p_value"] for r in plain])
    assert not any(r["detected"] for r in plain)
    assert np.mean(pv <= 0.05) <= 0.07  # a valid (here conservative) p-value
    marked = treering.band_coefficients(treering.marked_noise(8, p, g), p)
    assert all(r["detected"] and r["statistic"] > 8 for r in treering.score(marked, p))
    q = treering.pattern_for(WRONG, SHAPE)
    assert not any(r["detected"] for r in treering.score(treering.band_coefficients(
        treering.marked_noise(8, p, g), q), q))


def test_chernoff_bound_holds():
    rng = np.random.default_rng(0)
    a = rng.rayleigh(0.7, 60)
    s = (a * np.cos(rng.uniform(0, 2 * math.pi, (40000, 60)))).sum(1)
    sd = math.sqrt(np.sum(a * a) / 2)
    for z in (1.0, 2.0, 3.0):
        bound = math.exp(treering.log_tail(a, z * sd))
        assert np.mean(s >= z * sd) <= bound + 0.005
        assert bound <= math.exp(-z * z / 2) + 1e-12  # at least as tight as the sub-Gaussian bound
    assert treering.log_tail(a, -1.0) == 0.0 and treering.log_tail(a, a.sum() + 1) == -math.inf


@pytest.fixture(scope="module")
def flow_images():
    """Marked and plain samples of the shipped rectified_flow, 4 Euler steps (cheap)."""
    from generators import base

    model = treering.load_model("rectified_flow")
    n = 6
    marked = treering.sample(model, "rectified_flow", n, KEY, generator=torch.Generator().manual_seed(0),
                             steps=4, sampler="euler")
    plain = model.sample(n, generator=torch.Generator().manual_seed(1), steps=4, sampler="euler")
    return base.to_uint8(marked), base.to_uint8(plain)


def test_flow_marked_and_unmarked_separate(flow_images):
    marked, plain = flow_images
    rm = treering.detect_images(list(marked), KEY, "rectified_flow", steps=4)
    ru = treering.detect_images(list(plain), KEY, "rectified_flow", steps=4)
    assert all(r["detected"] for r in rm), [r["statistic"] for r in rm]
    assert not any(r["detected"] for r in ru)
    assert min(r["statistic"] for r in rm) > max(r["statistic"] for r in ru)
    assert min(r["distance"] for r in rm) < min(r["distance"] for r in ru)
    # a wrong key finds nothing in marked images
    assert not any(r["detected"] for r in treering.detect_images(list(marked), WRONG, "rectified_flow", steps=4))


def test_other_sizes_are_resized(flow_images):
    import cv2

    big = cv2.resize(flow_images[0][0], (80, 64), interpolation=cv2.INTER_CUBIC)
    r = treering.detect_images([big], KEY, "rectified_flow", steps=4)[0]
    assert r["resized"] and r["detected"]


def test_bonferroni_combination():
    per = {"ddim": {"p_value": 1e-9, "statistic": 7.0, "log10_p": -9.0, "distance": 1.0, "detected": True},
           "rectified_flow": {"p_value": 0.3, "statistic": 0.5, "log10_p": -0.5, "distance": 1.4, "detected": False}}
    r = treering.combine(per)
    assert r["p_value"] == pytest.approx(2e-9) and r["detected"] and r["statistic"] == 7.0
    assert not treering.combine({"a": {**per["ddim"], "p_value": 8e-7}, "b": per["rectified_flow"]})["detected"]


def test_cli_generate_treering_records_and_detects(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    key = tmp_path / "wm.key"
    rc = cli.main(["generate", "--arch", "ddim", "--n", "1", "--steps", "4", "--watermark", "treering",
                   "--watermark-key", str(key), "--out", str(tmp_path / "c"), "--quiet", "--json"])
    assert rc == 0
    row = json.loads((tmp_path / "c" / "metadata.jsonl").read_text().splitlines()[0])
    fp = posthoc.load_key(key).fingerprint
    assert row["watermark"]["method"] == "treering" and row["watermark"]["key_fingerprint"] == fp
    capsys.readouterr()
    img = tmp_path / "c" / row["file_name"]
    rc = cli.main(["watermark", "detect", str(img), "--method", "treering", "--arch", "ddim",
                   "--inversion-steps", "4", "--key", str(key), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["method"] == "treering" and out["detected"] and out["p_value"] <= 1e-6
    assert out["key_fingerprint"] == fp and out["arch"] == "ddim"


def test_cli_generate_posthoc_records_payload(tmp_path, capsys):
    key = tmp_path / "wm.key"
    rc = cli.main(["generate", "--arch", "vae", "--n", "1", "--watermark", "posthoc", "--watermark-key", str(key),
                   "--out", str(tmp_path / "c"), "--quiet", "--json"])
    assert rc == 0
    row = json.loads((tmp_path / "c" / "metadata.jsonl").read_text().splitlines()[0])
    want = hashlib.sha256(b"vae:0").digest()[:4].hex()
    assert row["watermark"]["method"] == "posthoc" and row["watermark"]["payload"] == want
    r = posthoc.detect_file(tmp_path / "c" / row["file_name"], posthoc.load_key(key))
    assert r["detected"] and r["payload"] == want


def test_cli_generate_unwatermarked_row_has_null(tmp_path):
    assert cli.main(["generate", "--arch", "vae", "--n", "1", "--out", str(tmp_path / "c"), "--quiet"]) == 0
    row = json.loads((tmp_path / "c" / "metadata.jsonl").read_text().splitlines()[0])
    assert "watermark" in row and row["watermark"] is None


@pytest.mark.parametrize("extra", [["--arch", "vae"], ["--arch", "ddpm"], ["--arch", "ddim", "--sampler", "ddpm"]])
def test_cli_generate_treering_refuses_other_samplers(tmp_path, capsys, extra):
    rc = cli.main(["generate", *extra, "--n", "1", "--watermark", "treering",
                   "--watermark-key", str(tmp_path / "k"), "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "treering" in err
    assert not (tmp_path / "c" / "metadata.jsonl").exists() or not (tmp_path / "c" / "metadata.jsonl").read_text()


def test_cli_detect_treering_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    key = tmp_path / "wm.key"
    posthoc.save_key(KEY, key)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    cases = [[str(bad), "--key", str(key)],                          # not an image
             [str(tmp_path / "missing.png"), "--key", str(key)],     # no such file
             [str(bad)]]                                              # no key in the config folder
    for args in cases:
        rc = cli.main(["watermark", "detect", *args, "--method", "treering"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and err.startswith("forensics: "), (args, err)
