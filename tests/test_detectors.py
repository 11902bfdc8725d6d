"""Detectors and evaluation: metrics against scikit-learn, attacks, the artifact CNN (a few steps)
and its heatmap, fusion and its calibration, `forensics evaluate` outputs, leave-one-out."""

from __future__ import annotations

import contextlib
import json
import shutil

import numpy as np
import pytest

from forensics import attacks, metrics
from forensics.corpus import Corpus
from forensics.detectors import base as dbase
from forensics.detectors import calibration as cal


@contextlib.contextmanager
def one_thread():
    """Two busy cores: OpenMP spin-waiting makes multi-threaded torch slower than one thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# metrics and attacks


def test_metrics_match_sklearn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    for trial in range(5):
        y = rng.integers(0, 2, 300)
        s = rng.normal(size=300) + 1.2 * y
        if trial % 2:
            s = np.round(s, 1)  # ties
        assert metrics.auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        assert metrics.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
        fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
        f2, t2, _ = metrics.roc_curve(y, s)
        assert np.allclose(f2, fpr) and np.allclose(t2, tpr)
        e = metrics.eer(y, s)
        fnr = 1 - tpr
        k = np.argmin(np.abs(fpr - fnr))
        assert abs(e - (fpr[k] + fnr[k]) / 2) < 0.02
    p = np.array([0.05, 0.15, 0.85, 0.95, 0.55])
    yy = np.array([0, 0, 1, 1, 0])
    # bins: [0.0,0.1): p .05 y 0; [0.1,0.2): .15/0; [0.5,0.6): .55/0; [0.8,0.9): .85/1; [0.9,1]: .95/1
    assert metrics.ece(yy, p) == pytest.approx((0.05 + 0.15 + 0.55 + 0.15 + 0.05) / 5)
    yy = np.r_[np.zeros(100), np.ones(10)]
    ss = np.r_[np.arange(100), [97.5] * 5 + [200] * 5]
    assert metrics.tpr_at_fpr(yy, ss, 0.01) == pytest.approx(0.5)   # threshold = 99th pct of real ≈ 98.01
    m = metrics.binary_metrics(yy, ss, np.clip(ss / 200, 0, 1), 0.5)
    assert m["fpr_at_threshold"] == 0 and m["tpr_at_threshold"] == 0.5 and m["auc"] == pytest.approx(skm.roc_auc_score(yy, ss))


def test_attacks_change_pixels_as_specified(photo):
    img = photo[:64, :96]
    assert attacks.parse("resize:0.5")(img).shape == (32, 48, 3)
    assert attacks.parse("resize:2")(img).shape == (128, 192, 3)
    c = attacks.parse("crop:0.25")(img)
    assert c.shape == (32, 48, 3)
    j = attacks.parse("jpeg:30")(img)
    assert j.shape == img.shape and 1 < np.abs(j.astype(int) - img).mean() < 30
    b = attacks.parse("blur:2")(img)
    assert np.abs(np.diff(b.astype(float), axis=1)).mean() < np.abs(np.diff(img.astype(float), axis=1)).mean()
    n = attacks.parse("noise:5")(np.full((64, 64, 3), 128, np.uint8))
    assert 4.0 < n.astype(float).std() < 6.0
    both = attacks.parse("resize:0.5+jpeg:75")(img)
    assert both.shape == (32, 48, 3)


# ---------------------------------------------------------------------------------------------
# artifact detector, fusion, evaluate


@pytest.fixture(scope="module")
def fitted(tiny_pipeline, tmp_path_factory):
    """The tiny pipeline's frequency detector + an artifact detector fitted for a few steps + fusion."""
    from forensics.detectors.artifact import ArtifactDetector
    from forensics.detectors.fusion import FusionDetector
    from forensics.fit import train_detector

    d = tmp_path_factory.mktemp("detectors")
    c = Corpus(tiny_pipeline["corpus"])
    with one_thread():
        art = ArtifactDetector().fit(c, steps=60, batch=32, lr=3e-3, minutes=1.0)
        art.save(d / "artifact")
        freq = dbase.load(tiny_pipeline["detector"])
        art = dbase.load(d / "artifact")
        card = train_detector("fusion", tiny_pipeline["corpus"], d / "fusion",
                              detectors={"artifact": art, "frequency": freq})
    return {"dir": d, "corpus": c, "artifact": art, "frequency": freq,
            "fusion": FusionDetector.load(d / "fusion"), "fusion_card": card}


def test_artifact_learns_and_heatmap_has_frame_aspect(fitted, photo):
    art, c = fitted["artifact"], fitted["corpus"]
    assert art.config["parameters"] < 1_000_000 and (fitted["dir"] / "artifact" / "model.safetensors").is_file()
    assert art.config["steps"] > 0 and 0.5 <= art.threshold < 1
    ev = art.evaluate(c, "test")
    assert ev["auc"] > 0.9, ev   # a 4-step VAE is an easy synthetic set
    from forensics.detectors.base import Media

    for h, w in ((96, 160), (64, 64), (20, 30)):
        e = art.score(Media("x", "image", [photo[:h, :w]]))
        gh, gw = e.heatmap.shape
        assert 0 <= e.p_synthetic <= 1 and ((gh, gw) == (1, 1) or abs(gw / gh - w / h) < 0.35 * w / h)
    e = art.score(Media("x", "image", [photo[:96, :160]]))
    assert e.heatmap.shape == (2, 4) or e.heatmap.shape[1] > e.heatmap.shape[0]
    clip = art.score(Media("c", "video", [photo[:64, :64]] * 3, fps=8.0, declared_frames=3))
    assert len(clip.per_frame) == 3


def test_fusion_is_calibrated_and_used_by_detect(fitted, tmp_path, monkeypatch, tiny_pipeline):
    fus, card = fitted["fusion"], fitted["fusion_card"]
    assert fus.inputs == ["artifact", "frequency"] and len(fus.config["weights"]) == 2
    assert 0.5 <= fus.threshold < 1 and fus.config["threshold_fpr"] == 0.05
    assert card["metrics"]["auc"] is not None and "weights" in card["metrics"]
    assert (fitted["dir"] / "fusion" / "card.json").is_file()
    p = fus.combine({"artifact": 0.99, "frequency": 0.99})
    q = fus.combine({"artifact": 0.01, "frequency": 0.01})
    assert 0 <= q < p <= 1
    # detect: the fusion applies when its detectors are the loaded ones
    from forensics import detect

    monkeypatch.setattr(detect, "_FUSION", {"model": fus})
    syn = fitted["corpus"].select(label="synthetic")[0]
    dets = {"artifact": fitted["artifact"], "frequency": fitted["frequency"]}
    r = detect.detect_file(fitted["corpus"].path(syn), dets)
    assert r["fusion"]["method"] == "logistic" and r["threshold"] == pytest.approx(fus.threshold, abs=1e-4)
    assert r["verdict"] in ("synthetic", "real", "uncertain") and "fusion" in r["models"]
    r = detect.detect_file(fitted["corpus"].path(syn), {"frequency": fitted["frequency"]})
    assert r["fusion"]["method"] == "mean_logit" and "note" in r["fusion"]


def test_evaluate_writes_every_output_and_leave_one_out(fitted, tmp_path, tiny_pipeline):
    from forensics.evaluate import evaluate

    # A second synthetic "family" for leave-one-out: half of the VAE items relabeled.
    src = tiny_pipeline["corpus"]
    dst = tmp_path / "corpus2"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    rows = [json.loads(line) for line in (dst / "metadata.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        if r["label"] == "synthetic" and r["seed"] % 2:
            r["architecture"], r["family"] = "vae_b", "gan"
    (dst / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "eval"
    with one_thread():
        res = evaluate(dst, out, detectors={"artifact": fitted["artifact"], "frequency": fitted["frequency"]},
                       fusion=fitted["fusion"], attacks="jpeg:75,resize:0.5", leave_one_out="family",
                       loo_opts={"artifact": {"steps": 8, "batch": 16, "minutes": 0.5}}, progress=False)
    for f in ("results.json", "index.html", "roc.png", "roc_by_architecture.png", "reliability.png",
              "auc_by_architecture.png", "spectra.png", "sweep_jpeg.png", "sweep_resize.png",
              "leave_one_out_frequency.png", "leave_one_out_fused.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    j = json.loads((out / "results.json").read_text())
    assert set(j["metrics"]) == {"artifact", "frequency", "fused"}
    m = j["metrics"]["fused"]
    assert set(m["by_architecture"]) == {"vae", "vae_b"} and set(m["by_family"]) == {"vae", "gan"}
    for k in ("auc", "ap", "eer", "accuracy_at_threshold", "tpr_at_fpr_1pct", "tpr_at_fpr_5pct", "ece"):
        assert k in m["overall"]
    assert set(j["robustness"]) == {"jpeg:75", "resize:0.5"}
    loo = j["leave_one_out"]
    assert set(loo["rows"]) == {"vae", "gan"} and "fused" in loo["mean_held_out_auc"]
    assert loo["rows"]["gan"]["frequency"]["gan"] is not None
    assert "whole_photos" in j["full_resolution_real"] and "goals" in j
    html = (out / "index.html").read_text()
    assert "Leave one family out" in html and "roc.png" in html
    assert res["files"]["json"].endswith("results.json")


def test_evaluate_and_train_usage_errors(tiny_pipeline, tmp_path):
    from conftest import run_cli
    from forensics.errors import UsageError
    from forensics.evaluate import evaluate
    from forensics.fit import train_detector

    with pytest.raises(UsageError, match="unknown attack"):
        evaluate(tiny_pipeline["corpus"], tmp_path / "e", detectors={"frequency": tiny_pipeline["detector"]},
                 attacks="nonsense:3", progress=False)
    with pytest.raises(UsageError, match="takes no --steps"):
        train_detector("frequency", tiny_pipeline["corpus"], tmp_path / "f", steps=3)
    # through the command: a family the corpus lacks is a usage error (exit 2, one line)
    r = run_cli("evaluate", "--corpus", tiny_pipeline["corpus"], "--out", tmp_path / "e",
                "--leave-one-out", "gan", "--attacks", "none", "--detectors", "frequency")
    assert r.returncode == 2 and "not in the corpus" in r.stderr and r.stderr.count("\n") == 1, r.stderr
