"""bench/sampling_speed.py's model matching, and the fast inference path keeping the outputs."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
import torch.nn.functional as F

from generators import base
from generators import samplers as S
from generators.diffusion import DDPMConfig
from generators.nn import Attention2d

from conftest import ROOT


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sampling_speed", ROOT / "bench" / "sampling_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
@pytest.mark.parametrize("unshuffle", [True, False])
def test_diffusers_unet_matches_parameter_count(bench, preset, unshuffle):
    pytest.importorskip("diffusers")
    cfg = DDPMConfig.preset(preset)
    ours = base.create("ddpm", preset)
    theirs = bench.build_diffusers_unet(cfg, unshuffle=unshuffle)
    rel = bench.check_matched(bench.count_params(ours), bench.count_params(theirs))
    assert rel <= bench.PARAM_TOLERANCE
    x = torch.randn(2, cfg.channels, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        assert theirs(x, torch.tensor([10, 20])).shape == x.shape


def test_check_matched_refuses_a_mismatch(bench):
    assert bench.check_matched(1000, 1050) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="differ by"):
        bench.check_matched(1000, 1200)


def test_bench_prints_a_skip_reason_without_diffusers(bench, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)                 # import diffusers → ImportError
    monkeypatch.setattr(sys, "argv", ["sampling_speed.py"])
    n = torch.get_num_threads()
    try:
        assert bench.main() == 0
    finally:
        torch.set_num_threads(n)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["skipped"] is True and "diffusers" in out["reason"] and out["torch_threads"] >= 1


def test_attention_matches_the_convolutional_form():
    """The token-layout attention computes what the 1x1-convolution form did (same weights)."""
    torch.manual_seed(0)
    att = Attention2d(32, heads=4)
    torch.nn.init.normal_(att.proj.weight, std=0.1)                  # zero-initialized by design
    x = torch.randn(3, 32, 8, 8)
    b, c, h, w = x.shape
    qkv = att.qkv(att.norm(x)).reshape(b, 3, att.heads, c // att.heads, h * w)
    q, k, v = qkv.transpose(-1, -2).unbind(1)
    ref = x + att.proj(F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w))
    with torch.no_grad():
        assert torch.allclose(att(x), ref, atol=1e-5)
    assert set(att.state_dict()) == {"norm.weight", "norm.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}


def test_channels_last_sampling_keeps_the_outputs():
    torch.manual_seed(0)
    m = base.create("ddpm", "tiny").eval()
    for p in m.parameters():                                          # zero-initialized layers would hide differences
        p.data.add_(0.05 * torch.randn_like(p))
    keys = set(m.state_dict())
    shape = (2, 3, m.config.image_size, m.config.image_size)
    ref = S.ddim_sample(m.diffusion, shape, generator=torch.Generator().manual_seed(1), steps=5).clamp(-1, 1)
    out = m.sample(2, generator=torch.Generator().manual_seed(1), steps=5, sampler="ddim")
    assert m.diffusion.net.inp.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, atol=1e-5) and set(m.state_dict()) == keys
