"""Diffusion, latent diffusion and rectified flow of the bank, and their samplers (tiny presets)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from generators import base
from generators import samplers as S
from generators.train import TrainConfig, train

from conftest import run_cli

NAMES = ("ddpm", "ldm", "rectified_flow")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1] (low-resolution noise, upsampled)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(low, size=32, mode="bilinear", align_corners=False)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4.0 / max((a - b).pow(2).mean().item(), 1e-12))


def _fixed_loss(m, x: torch.Tensor) -> float:
    """The model's objective at fixed noise levels and noise (no randomness)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if m.name == "rectified_flow":
            return sum(m.loss_at(x, torch.randn(x.shape, generator=g), torch.full((len(x),), t)).item()
                       for t in (0.2, 0.5, 0.8)) / 3
        return m.diffusion.test_losses(x, levels=5)["test_loss"]


@pytest.fixture(scope="module")
def trained():
    """Each tiny model trained for a few steps (the trained weights, not the EMA)."""
    torch.manual_seed(0)
    data = _data()
    out = {}
    for name in NAMES:
        m = base.create(name, "tiny")
        before = _fixed_loss(m, data[:16]) if name != "ldm" else None
        _, res = train(m, data, TrainConfig(steps=15, batch_size=16, lr=3e-3, warmup=1, seed=0, hflip=False),
                       progress=False)
        m.eval()
        out[name] = {"model": m, "result": res, "before": before, "after": _fixed_loss(m, data[:16]) if name != "ldm" else None}
    return out


def test_parameter_budget_and_registry():
    assert {"ddpm", "ddim", "ldm", "rectified_flow"} <= set(base.architectures())
    assert base.ARCHITECTURES["ddim"] == ("ddpm", "ddim") and base.ARCHITECTURES["ddpm"] == ("ddpm", "ddpm")
    assert base.get_class("rectified_flow").family == "flow_matching"
    assert base.get_class("ldm").family == "latent_diffusion"
    for name in NAMES:
        assert base.create(name, "cpu").num_parameters() <= 2_100_000


@pytest.mark.parametrize("name", NAMES)
def test_training_is_finite_and_learns(trained, name):
    t = trained[name]
    assert t["result"].steps == 15 and all(math.isfinite(v) for v in t["result"].losses)
    if t["before"] is not None:
        assert t["after"] < t["before"]
    m = t["model"]
    for p in m.parameters():
        p.grad = None
    m.loss(_data(4, seed=3)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_ldm_two_phases_and_latent_scale(trained):
    m = trained["ldm"]["model"]
    assert m.phase() == "denoiser" and int(m.scale_ready) == 1
    assert float(m.latent_scale) > 0 and float(m.latent_scale) != 1.0
    # phase 2 trains the denoiser only: the autoencoder gets no gradient
    for p in m.parameters():
        p.grad = None
    m.loss(_data(4)).backward()
    assert all(p.grad is None for p in m.ae.parameters())
    assert any(p.grad is not None for p in m.diffusion.parameters())
    z = m.to_latent(_data(8))
    assert z.shape == (8, 4, 8, 8)
    metrics = m.evaluate(_data(16, seed=5))
    assert {"ae_psnr_db", "latent_scale", "latent_test_loss"} <= set(metrics)


@pytest.mark.parametrize("name,sampler", [("ddpm", "ddpm"), ("ddpm", "ddim"), ("ldm", "ddim"), ("ldm", "ddpm"),
                                          ("rectified_flow", "euler"), ("rectified_flow", "heun")])
def test_samples_shape_range_and_seeds(trained, name, sampler):
    m = trained[name]["model"]
    a = m.sample(3, generator=torch.Generator().manual_seed(7), steps=4, sampler=sampler)
    b = m.sample(3, generator=torch.Generator().manual_seed(7), steps=4, sampler=sampler)
    c = m.sample(3, generator=torch.Generator().manual_seed(8), steps=4, sampler=sampler)
    assert a.shape == (3, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name,sampler,steps,expected", [
    ("ddpm", "ddpm", 7, 7), ("ddpm", "ddim", 5, 5), ("ddpm", "ddim", 100, 100), ("ldm", "ddim", 3, 3),
    ("rectified_flow", "euler", 6, 6), ("rectified_flow", "heun", 4, 8)])
def test_step_counts_are_honoured(trained, name, sampler, steps, expected):
    m = trained[name]["model"]
    net = m.net if name == "rectified_flow" else m.diffusion.net
    calls = []
    h = net.register_forward_hook(lambda *a: calls.append(1))
    try:
        m.sample(1, generator=torch.Generator().manual_seed(0), steps=steps, sampler=sampler)
    finally:
        h.remove()
    assert len(calls) == expected == S.nfe(sampler, steps)


def test_bad_steps_and_samplers_are_refused(trained):
    m = trained["ddpm"]["model"]
    g = torch.Generator().manual_seed(0)
    for kw in ({"steps": 101, "sampler": "ddim"}, {"sampler": "euler"}, {"steps": 5, "sampler": "ddpm", "eta": 0.5}):
        with pytest.raises(base.GeneratorError):
            m.sample(1, generator=g, **kw)
    with pytest.raises(base.GeneratorError):
        trained["rectified_flow"]["model"].sample(1, generator=g, sampler="ddim")
    with pytest.raises(ValueError):
        S.timesteps_for(1000, 0)


def test_ddim_eta0_is_deterministic_and_noise_argument(trained):
    m = trained["ddpm"]["model"]
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = m.sample(2, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=6, noise=noise)
    b = m.sample(2, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=6, noise=noise)
    assert torch.equal(a, b)                              # η = 0: the noise alone decides
    c = m.sample(2, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=6, noise=noise, eta=1.0)
    d = m.sample(2, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=6, noise=noise, eta=1.0)
    assert not torch.equal(c, d)                          # η = 1 draws fresh noise per step
    e = m.sample(2, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=6)
    assert torch.equal(a, e)                              # default noise = the generator's first draw
    assert S.timesteps_for(1000, 10)[0] == 999 and S.timesteps_for(1000, 10)[-1] == 99
    assert S.timesteps_for(1000, 1000) == list(range(999, -1, -1))


def test_ddim_inversion_reconstructs(trained):
    m = trained["ddpm"]["model"]
    x = _data(4, seed=9) * 0.9
    x_T = m.invert(x, steps=50, refine=0)
    assert x_T.shape == x.shape and torch.isfinite(x_T).all()
    rec = S.ddim_sample(m, noise=x_T, steps=50, clip_x0=False)
    assert _psnr(rec, x) > 30
    # fixed-point refinement makes each inversion step agree with the sampler's step
    rec0 = S.ddim_sample(m, noise=m.invert(x, steps=10, refine=0), steps=10, clip_x0=False)
    rec3 = S.ddim_sample(m, noise=m.invert(x, steps=10, refine=3), steps=10, clip_x0=False)
    assert _psnr(rec3, x) > _psnr(rec0, x) + 2
    # the Anderson-accelerated solve drives each step's implicit equation to convergence
    rec10 = S.ddim_sample(m, noise=m.invert(x, steps=10, refine=10), steps=10, clip_x0=False)
    assert _psnr(rec10, x) > max(_psnr(rec3, x), 45)


class _NarrowDataDenoiser:
    """The exact denoiser of narrow data (std 0.01 about a slightly nonlinear mean): the DDIM
    inversion map is then barely contractive at the low-noise steps, the regime where plain
    fixed-point iteration stalls on real models."""
    sd = 0.01

    def __init__(self):
        self.alphas_cumprod = S.alphas_cumprod("cosine", 100).float()

    def predict_eps(self, x, t):
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        mu = 0.3 + 0.05 * torch.sin(2 * x)
        x0 = mu + ab.sqrt() * self.sd ** 2 / (ab * self.sd ** 2 + 1 - ab) * (x - ab.sqrt() * mu)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()


def test_ddim_inversion_solver_converges_where_fixed_point_stalls():
    model = _NarrowDataDenoiser()
    x = 0.3 + 0.01 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def round_trip(**kw):
        return _psnr(S.ddim_sample(model, noise=S.ddim_invert(model, x, 10, **kw), steps=10, clip_x0=False), x)

    plain = round_trip(refine=12, history=1)              # history 1 = plain fixed-point iteration
    anderson = round_trip(refine=12)
    assert anderson > 90 and anderson > plain + 30, (plain, anderson)


def test_ldm_inversion_roundtrip_in_latent_space(trained):
    m = trained["ldm"]["model"]
    x = _data(2, seed=4)
    z = m.to_latent(x)
    zT = m.invert(x, steps=50, refine=0)
    z_rec = S.ddim_sample(m.diffusion, noise=zT, steps=50)
    assert _psnr(z_rec / 4, z / 4) > 25


def test_flow_reverse_ode_then_forward_reconstructs(trained):
    m = trained["rectified_flow"]["model"]
    x = _data(4, seed=11) * 0.9
    x1 = m.invert(x, steps=16, method="heun")
    assert x1.shape == x.shape
    rec = S.heun_sample(m, noise=x1, steps=16)
    assert _psnr(rec, x) > 35
    assert set(m.evaluate(_data(8))) >= {"test_loss", "straightness_gap_1_vs_32_steps"}


def test_reflow_pairs_train(trained):
    m = base.create("rectified_flow", "tiny")
    m.load_state_dict(trained["rectified_flow"]["model"].state_dict())
    eps, x0 = m.reflow_pairs(8, generator=torch.Generator().manual_seed(0), steps=4)
    assert eps.shape == x0.shape == (8, 3, 32, 32)
    m.set_reflow_pairs((eps, x0))
    loss = m.loss(_data(4))
    loss.backward()
    assert math.isfinite(loss.item())


def test_bank_train_reflow_starts_from_teacher_and_keeps_its_pairs(trained, tmp_path):
    from forensics import bank
    from forensics.errors import UsageError
    from safetensors.torch import load_file

    teacher = trained["rectified_flow"]["model"]
    tdir = teacher.save(tmp_path / "teacher")
    out = tmp_path / "reflow"
    card = bank.train_architecture("reflow", out=out, preset="tiny", steps=2, per_source=3, progress=False,
                                   device="cpu", teacher_dir=tdir, pairs=12, fid_n=0)
    assert card["model"] == "reflow" and card["family"] == "flow_matching" and card["steps"] == 2
    assert card["data"]["reflow"]["pairs"] == 12
    assert card["data"]["reflow"]["teacher_sha256"] == base.checkpoint_sha256(tdir)
    assert card["config"] == teacher.config.to_dict()
    pairs = load_file(str(out / "train_state" / "pairs.safetensors"))
    assert pairs["eps"].shape == pairs["x0"].shape == (12, 3, 32, 32)
    student = base.load(out)
    assert type(student).__name__ == "Reflow" and student.steps_for("euler") == 8
    # two steps at lr 2e-4 from the teacher's weights: still close to them (not a fresh init)
    drift = max((a - b).abs().max().item() for a, b in zip(student.state_dict().values(), teacher.state_dict().values()))
    assert drift < 0.05
    # resuming trains on the same stored pairs
    card2 = bank.train_architecture("reflow", out=out, preset="tiny", steps=3, per_source=3, progress=False,
                                    device="cpu", teacher_dir=tdir, pairs=99, fid_n=0)
    assert card2["steps"] == 3 and card2["data"]["reflow"]["pairs"] == 12
    card3 = bank.train_architecture("reflow", out=out, preset="tiny", steps=1, per_source=3, progress=False,
                                    device="cpu", teacher_dir=tdir, pairs=8, fid_n=0, resume=False)
    assert card3["steps"] == 1 and card3["data"]["reflow"]["pairs"] == 8     # --fresh draws new couplings
    with pytest.raises(UsageError, match="rectified_flow"):
        bank.train_architecture("reflow", out=tmp_path / "x", preset="tiny", steps=1, per_source=3,
                                progress=False, device="cpu", teacher_dir=tmp_path / "missing")


@pytest.mark.parametrize("name", NAMES)
def test_save_load_roundtrip(trained, tmp_path, name):
    m = trained[name]["model"]
    m.save(tmp_path / name)
    m2 = base.load(tmp_path / name)
    assert type(m2) is type(m)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.allclose(m.sample(2, generator=g(), steps=3), m2.sample(2, generator=g(), steps=3), atol=1e-6)
    if name == "ldm":
        assert float(m2.latent_scale) == float(m.latent_scale) and int(m2.step) == int(m.step)


def test_cli_generate_ddim_and_ddpm_rows(trained, tmp_path):
    from forensics.generate import generate

    ck = trained["ddpm"]["model"].save(tmp_path / "ckpt")
    out = tmp_path / "corpus"
    r = run_cli("generate", "--arch", "ddim", "--n", "2", "--steps", "5", "--checkpoint", ck, "--out", out,
                "--quiet", "--device", "cpu", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    generate(["ddpm"], 1, out, checkpoint=str(ck), device="cpu", progress=False)   # default steps
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines() if line.strip()]
    ddim = [r for r in rows if r["architecture"] == "ddim"]
    ddpm = [r for r in rows if r["architecture"] == "ddpm"]
    assert len(ddim) == 2 and all(r["sampler"] == "ddim" and r["steps"] == 5 for r in ddim)
    assert all(r["family"] == "diffusion" and r["label"] == "synthetic" for r in ddim)
    assert len(ddpm) == 1 and ddpm[0]["sampler"] == "ddpm" and ddpm[0]["steps"] == 20  # tiny preset default
    # a sampler that another architecture of the same model stands for is refused, not mislabeled
    bad = run_cli("generate", "--arch", "ddim", "--sampler", "ddpm", "--n", "1", "--checkpoint", ck, "--out", out,
                  "--quiet", "--device", "cpu")
    assert bad.returncode == 2 and "use --arch ddpm" in bad.stderr and "Traceback" not in bad.stderr
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 3
