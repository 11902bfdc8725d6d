import json

import numpy as np

from forensics import corpus, media
from forensics.detect import detect_file
from forensics.detectors import base as dbase
from generators import base as gbase

from conftest import run_cli


def test_vae_card_reports_active_units(tiny_pipeline):
    card = tiny_pipeline["vae_card"]
    for k in ("config", "data", "steps", "seed", "metrics", "command", "sha256"):
        assert k in card
    assert "active_units" in card["metrics"] and card["steps"] == 4
    assert (tiny_pipeline["vae"] / "grid.png").is_file()
    model = gbase.load(tiny_pipeline["vae"])
    g1, g2 = (gbase.to_uint8(model.sample(2, generator=__import__("torch").Generator().manual_seed(3))) for _ in range(2))
    assert np.array_equal(g1, g2)


def test_corpus_has_every_field_and_split_by_source(tiny_pipeline):
    c = corpus.Corpus(tiny_pipeline["corpus"])
    assert corpus.verify(tiny_pipeline["corpus"])["ok"]
    real = c.select(label="real")
    syn = c.select(label="synthetic")
    assert len(syn) == 48 and len(real) > 100
    for r in syn:
        assert r["architecture"] == "vae" and r["family"] == "vae" and len(r["checkpoint_sha256"]) == 64
        assert r["seed"] is not None and r["sampler"] == "prior"
    splits_of = {}
    for r in real:
        splits_of.setdefault(r["source"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())


def test_detect_both_classes(tiny_pipeline, tmp_path, photo):
    det = dbase.load(tiny_pipeline["detector"])
    c = corpus.Corpus(tiny_pipeline["corpus"])
    syn = c.path(c.select(label="synthetic")[0])
    real = media.write_png(tmp_path / "real.png", photo)
    clip = media.write_mp4(tmp_path / "clip.mp4", np.stack([photo[:64, :64]] * 6), fps=8)
    for f, modality in ((syn, "image"), (real, "image"), (clip, "video")):
        r = detect_file(f, {"frequency": det}, report_dir=tmp_path / "rep")
        assert r["modality"] == modality and r["verdict"] in ("real", "synthetic", "uncertain")
        assert 0 <= r["p_synthetic"] <= 1 and "frequency" in r["detectors"]
        json.dumps(r)
    assert r["detectors"]["frequency"]["per_frame"] and (tmp_path / "rep").is_dir()
    metrics = tiny_pipeline["detector_card"]["metrics"]
    assert 0.0 <= metrics["auc"] <= 1.0


def test_cli_end_to_end(tiny_pipeline, tmp_path):
    r = run_cli("bank", "list", "--json")
    assert r.returncode == 0 and any(x["architecture"] == "vae" for x in json.loads(r.stdout))
    r = run_cli("corpus", "info", tiny_pipeline["corpus"])
    assert r.returncode == 0 and json.loads(r.stdout)["counts"]["total"] > 0
    r = run_cli("corpus", "verify", tiny_pipeline["corpus"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"]
    r = run_cli("bank", "grid", "vae", "--checkpoint", tiny_pipeline["vae"], "--out", tmp_path / "g.png")
    assert r.returncode == 0 and (tmp_path / "g.png").is_file()
    for sub in ("detect", "generate", "bank", "corpus", "train"):
        assert run_cli(sub, "--help").returncode == 0
