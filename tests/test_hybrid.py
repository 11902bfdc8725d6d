"""The diffusion + autoregressive hybrid (generators/hybrid.py) on tiny random parents."""

from __future__ import annotations

import ast
import json

import pytest
import torch
import torch.nn.functional as F

from generators import base
from generators.hybrid import Hybrid, combined_sha256

from conftest import ROOT


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int, seed: int, size: int = 8) -> torch.Tensor:
    """Smooth random images in [-1, 1]."""
    low = torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = base.create("hybrid", "tiny").eval()
    with torch.no_grad():  # the codebook's data-dependent init (training's first step), so codes vary
        m.prior.vq(m.prior.enc(_images(64, 0)), update=True)
    return m


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", ["ddim+rows", "ddim+lowlik", "ddpm+rows"])
def test_shape_range_and_seed_determinism(tiny, sampler):
    s = tiny.config.image_size
    a = tiny.sample(3, generator=_g(0), sampler=sampler)
    assert a.shape == (3, 3, s, s)
    assert a.min() >= -1 and a.max() <= 1 and torch.isfinite(a).all()
    assert torch.equal(a, tiny.sample(3, generator=_g(0), sampler=sampler))
    assert not torch.equal(a, tiny.sample(3, generator=_g(1), sampler=sampler))


def test_registered_with_its_own_family_and_samplers(tiny):
    assert "hybrid" in base.architectures() and base.ARCHITECTURES["hybrid"] == ("hybrid", None)
    assert tiny.family == "hybrid" and tiny.default_sampler in tiny.samplers()
    assert tiny.steps_for(None) == tiny.config.draft_steps
    with pytest.raises(base.GeneratorError, match="ddim\\+rows"):
        tiny.sample(1, generator=_g(), sampler="euler")
    with pytest.raises(base.GeneratorError, match="no weights of its own"):
        tiny.loss(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("how", ["rows", "lowlik"])
def test_the_draft_conditions_the_output(tiny, how):
    a, b = _images(4, 1), _images(4, 2)
    k = tiny.config.keep_rows * tiny.prior.grid if how == "rows" else None
    assert not torch.equal(tiny.prior.encode(a)[:, :k], tiny.prior.encode(b)[:, :k])   # premise: other codes
    ya = tiny.refine(a, generator=_g(0), how=how)
    assert torch.equal(ya, tiny.refine(a, generator=_g(0), how=how))
    assert not torch.equal(ya, tiny.refine(b, generator=_g(0), how=how))


def test_rows_keeps_the_draft_prefix_and_lowlik_keeps_likely_codes(tiny):
    g = tiny.prior.grid
    codes = torch.randint(0, tiny.prior.config.codebook, (4, g * g), generator=_g(3))
    out = tiny.refine_codes(codes, generator=_g(0), how="rows")
    k = tiny.config.keep_rows * g
    assert torch.equal(out[:, :k], codes[:, :k])
    old = tiny.config.min_prob
    try:
        tiny.config.min_prob = 0.0                                   # every code is likely enough
        assert torch.equal(tiny.refine_codes(codes, generator=_g(0), how="lowlik"), codes)
        assert tiny.last_kept == 1.0
        tiny.config.min_prob = 1.1                                   # no code is
        tiny.refine_codes(codes, generator=_g(0), how="lowlik")
        assert tiny.last_kept == 0.0
    finally:
        tiny.config.min_prob = old


def test_composite_checkpoint_and_corpus_rows(tiny, tmp_path):
    ck = tiny.save(tmp_path / "hybrid")
    assert not (ck / "model.safetensors").exists()                   # no weights of its own
    parents = {"ddpm": base.checkpoint_sha256(ck / "draft"), "vq_transformer": base.checkpoint_sha256(ck / "prior")}
    loaded = base.load(ck)
    assert isinstance(loaded, Hybrid) and loaded.parent_checkpoints() == parents
    assert torch.equal(loaded.sample(2, generator=_g(5)), tiny.sample(2, generator=_g(5)))

    from forensics.generate import generate

    out = tmp_path / "corpus"
    assert generate(["hybrid"], 8, out, checkpoint=str(ck), device="cpu", progress=False)["made"] == 8
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    for row in rows:
        assert row["family"] == "hybrid" and row["architecture"] == "hybrid" and row["label"] == "synthetic"
        assert row["sampler"] == "ddim+rows" and row["steps"] == tiny.config.draft_steps
        assert row["parent_checkpoints"] == parents
        assert row["checkpoint_sha256"] == combined_sha256(parents)
        assert "vq_transformer encoder" in row["sampler_detail"]


def test_bank_lists_the_parents_and_refuses_to_train_it():
    from forensics import bank
    from forensics.errors import UsageError

    row = next(r for r in bank.bank_list() if r["architecture"] == "hybrid")
    assert row["checkpoint"] is None and row["family"] == "hybrid"
    assert {p["model"] for p in row["composes"].values()} == {"ddpm", "vq_transformer"}
    with pytest.raises(UsageError, match="no weights of its own"):
        bank.train_architecture("hybrid", steps=1, progress=False)


def test_generators_do_not_import_forensics():
    for path in (ROOT / "generators").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "forensics" for n in names), f"{path.name} imports forensics"
