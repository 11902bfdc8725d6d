"""Generator bank, part 1 (issue 3): GAN, Glow, TARFlow, gated PixelCNN, VQ-VAE + transformer prior.

Tiny presets only; every test is CPU-cheap."""

from __future__ import annotations

import json

import pytest
import torch

from generators import autoregressive as ar
from generators import base, flows, gan, tarflow
from generators.transformer import CausalTransformer

MODELS = ["gan", "glow", "tarflow", "pixelcnn", "vq_transformer"]
FAMILY = {"gan": "gan", "glow": "flow", "tarflow": "flow", "pixelcnn": "autoregressive",
          "vq_transformer": "autoregressive"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(name: str, **kw) -> base.Generator:
    torch.manual_seed(0)
    return base.create(name, "tiny", **kw)


def _batch(model, b: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = model.config.image_size
    x = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    return ((x + 1) * 127.5).round() / 127.5 - 1                        # on the 8-bit grid


def _perturb(model, scale: float = 0.1) -> None:
    """Move every parameter off its (often zero) initialization so the checks are not trivial."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# -- registry ---------------------------------------------------------------------------------
def test_registered_with_families():
    for name in MODELS:
        assert name in base.names() and name in base.architectures()
        assert base.get_class(name).family == FAMILY[name]


@pytest.mark.parametrize("name", MODELS)
def test_presets_sizes(name):
    cls = base.get_class(name)
    for preset in ("tiny", "cpu", "gpu"):
        cls.Config.preset(preset)
    assert cls(cls.Config.preset("cpu")).num_parameters() <= 2_100_000


# -- loss and training --------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_loss_finite_and_backprop(name):
    m = _tiny(name).train()
    loss = m.loss(_batch(m))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["glow", "tarflow", "pixelcnn", "vq_transformer"])
def test_likelihood_loss_decreases(name):
    m = _tiny(name).train()
    x = _batch(m, 16)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        torch.manual_seed(step)
        loss = m.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if hasattr(m, "after_step"):
            m.after_step(step)
        losses.append(loss.item())
    assert all(map(lambda v: v == v, losses))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_shared_training_loop_runs_each(tmp_path):
    from generators.train import TrainConfig, train

    for name in MODELS:
        m = _tiny(name)
        data = _batch(m, 12)
        ema, res = train(m, data, TrainConfig(steps=3, batch_size=4, warmup=1, grad_clip=0.0), progress=False)
        assert res.steps == 3 and all(torch.isfinite(torch.tensor(res.losses)))


# -- sampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_sample_shape_range_reproducible(name):
    m = _tiny(name)
    m.train()
    m.loss(_batch(m))                     # data-dependent inits (ActNorm, codebook) happen here
    m.eval()
    s = m.config.image_size
    a = m.sample(3, generator=torch.Generator().manual_seed(7))
    b = m.sample(3, generator=torch.Generator().manual_seed(7))
    c = m.sample(3, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 3, s, s)
    assert a.min() >= -1 and a.max() <= 1 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # an item drawn alone equals itself drawn alone again (corpus items are drawn one at a time)
    one = m.sample(1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(one, m.sample(1, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("name", MODELS)
def test_sampler_and_steps_are_checked(name):
    m = _tiny(name).eval()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(base.GeneratorError):
        m.sample(1, generator=g, sampler="nonsense")
    with pytest.raises(base.GeneratorError):
        m.sample(1, generator=g, steps=m.default_steps + 1)
    m.sample(1, generator=g, steps=m.default_steps, sampler=m.default_sampler)


# -- save / load ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, tmp_path):
    m = _tiny(name).train()
    m.loss(_batch(m))
    if hasattr(m, "after_step"):
        m.after_step(0)
    m.eval()
    m.save(tmp_path / name)
    assert (tmp_path / name / "model.safetensors").is_file()
    meta = json.loads((tmp_path / name / "config.json").read_text())
    assert meta["name"] == name and meta["family"] == FAMILY[name]
    m2 = base.load(tmp_path / name)
    sd1, sd2 = m.state_dict(), m2.state_dict()
    if name == "gan":                    # the GAN checkpoint holds G only (D is training-time)
        sd1 = {k: v for k, v in sd1.items() if not k.startswith("D.")}
        sd2 = {k: v for k, v in sd2.items() if not k.startswith("D.")}
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(m.sample(2, generator=g1), m2.sample(2, generator=g2))


# -- GAN ------------------------------------------------------------------------------------------
def test_gan_one_backward_gives_each_player_its_own_gradient():
    m = _tiny("gan").eval()             # eval: no spectral-norm power iteration between the calls
    x = _batch(m, 4)
    params_g, params_d = list(m.G.parameters()), list(m.D.parameters())

    def terms():
        torch.manual_seed(5)            # same z and same augmentations each time
        return m.loss_terms(x)

    torch.manual_seed(5)
    total = m.loss(x)
    g_all = torch.autograd.grad(total, params_g + params_d)
    t = terms()
    g_d = torch.autograd.grad(t["d"] + t["r1"], params_d)
    t = terms()
    g_g = torch.autograd.grad(t["g"], params_g)
    for a, b in zip(g_all[:len(params_g)], g_g):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for a, b in zip(g_all[len(params_g):], g_d):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert t["r1"] > 0                  # step 0 is an R1 step


def test_gan_sampling_uses_g_only_and_diffaugment_is_differentiable():
    m = _tiny("gan").eval()
    x = _batch(m, 4).requires_grad_(True)
    y = gan.diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    a = m.sample(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in m.D.parameters():
            p.add_(1.0)
    assert torch.equal(a, m.sample(2, generator=torch.Generator().manual_seed(0)))


def test_gan_spectral_norm_bounds_layers():
    m = _tiny("gan").train()
    layer = m.D.body[0]
    for _ in range(30):
        w = layer.sn_weight()
    sigma = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
    assert abs(sigma.item() - 1.0) < 0.05


def test_gan_evaluate_reports_diversity():
    m = _tiny("gan").eval()
    out = m.evaluate(_batch(m, 16), n=16)
    assert {"diversity_pixel_ratio", "diversity_feature_ratio", "coverage_nn_ratio"} <= set(out)
    assert out["diversity_pixel_ratio"] > 0


# -- flows ------------------------------------------------------------------------------------------
def _bruteforce_logdet(fn, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)), x.flatten())
    return torch.linalg.slogdet(jac)[1].item()


def test_glow_inverts_and_logdet_matches_bruteforce():
    m = _tiny("glow", image_size=4)
    m.train()
    m.loss(_batch(m, 8))                 # ActNorm data-dependent init
    assert all(bool(a.initialized) for a in m.modules() if isinstance(a, flows.ActNorm))
    _perturb(m)
    m.eval()
    x = _batch(m, 4, seed=2)
    eps, _ = m.encode(x)
    assert (m.decode(eps) - x).abs().max() < 1e-4
    md = m.double()
    x1 = x[:1].double()
    fn = lambda v: torch.cat([e.flatten() for e in md.encode(v)[0]])  # noqa: E731
    assert abs(_bruteforce_logdet(fn, x1) - md.encode(x1)[1].item()) < 1e-6


def test_glow_actnorm_init_standardizes():
    an = flows.ActNorm(4).train()
    x = torch.randn(64, 4, 5, 5) * 3 + 2
    y, _ = an(x)
    assert y.mean((0, 2, 3)).abs().max() < 1e-4
    assert (y.std((0, 2, 3)) - 1).abs().max() < 1e-3


def test_tarflow_inverts_and_logdet_matches_bruteforce():
    m = _tiny("tarflow", image_size=4)
    _perturb(m)
    m.eval()
    x = _batch(m, 4, seed=2)
    z, _ = m.encode(x)
    assert (m.decode(z) - x).abs().max() < 1e-4
    md = m.double()
    x1 = x[:1].double()
    assert abs(_bruteforce_logdet(lambda v: md.encode(v)[0].flatten(), x1) - md.encode(x1)[1].item()) < 1e-6


def test_tarflow_blocks_are_autoregressive_in_alternating_order():
    m = _tiny("tarflow", image_size=4)
    _perturb(m)
    m.eval().double()
    n, d = m.n, m.d
    x = torch.randn(1, n, d, dtype=torch.float64)
    for t, blk in enumerate(m.flow):
        jac = torch.autograd.functional.jacobian(lambda v: blk(v.view(1, n, d))[0].flatten(), x.flatten())
        dep = jac.view(n, d, n, d).abs().sum((1, 3)) > 0                  # token i depends on token j
        order = torch.arange(n).flip(0) if blk.reverse_order else torch.arange(n)
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(n)
        allowed = rank[:, None] >= rank[None, :]                          # z_i from x_j with j ≤ i in block order
        assert not (dep & ~allowed).any(), f"block {t} is not causal"
        assert dep[order[1], order[0]]                                    # and does use the past
    assert [b.reverse_order for b in m.flow] == [False, True]


def test_tarflow_denoise_step_moves_towards_data():
    m = _tiny("tarflow").eval()
    g = torch.Generator().manual_seed(0)
    a = m.sample(2, generator=g, sampler="inverse")
    b = m.sample(2, generator=torch.Generator().manual_seed(0))           # inverse+denoise (default)
    assert a.shape == b.shape and not torch.equal(a, b)


def test_flow_bits_per_dim_metrics():
    g = _tiny("glow")
    x = _batch(g, 16)
    bpd = g.evaluate(x)["bits_per_dim"]
    with torch.no_grad():
        # the loss is -log p per dim in nats on [-1, 1]; bits/dim adds log(255 / 2) and converts
        ref = (g.loss(x).item() + torch.log(torch.tensor(127.5)).item()) / torch.log(torch.tensor(2.0)).item()
    assert abs(bpd - ref) < 0.05 and 0 < bpd < 16
    t = _tiny("tarflow").evaluate(x)
    assert t["bits_per_dim_noisy"] > t["noise_floor_bits_per_dim"] > 0


def test_causal_transformer_cache_matches_full_pass():
    torch.manual_seed(0)
    tf = CausalTransformer(16, 2, 2).eval()
    x = torch.randn(2, 7, 16)
    full = tf(x)
    cache = tf.new_cache()
    steps = [tf(x[:, i:i + 1], cache) for i in range(7)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    cache = tf.new_cache()
    chunks = torch.cat([tf(x[:, :3], cache), tf(x[:, 3:], cache)], 1)  # multi-token chunk after a cache
    torch.testing.assert_close(chunks, full, atol=1e-5, rtol=1e-5)


# -- autoregressive -----------------------------------------------------------------------------------
def test_pixelcnn_is_causal_without_blind_spot():
    m = _tiny("pixelcnn")
    _perturb(m)
    m.eval()
    s = m.config.image_size
    x = _batch(m, 1).requires_grad_(True)
    out = m(x)
    for r in range(s):
        for c in range(s):
            (g,) = torch.autograd.grad(out[0, :, r, c].sum(), x, retain_graph=True)
            dep = g[0].abs().sum(0).flatten() > 0                          # (S*S,) raster order
            assert not dep[r * s + c:].any(), f"pixel {(r, c)} sees the present or future"
            # no blind spot: the neighbours above (left, centre and right) and to the left are seen
            for rr, cc in ((r - 1, c - 1), (r - 1, c), (r - 1, c + 1), (r - 2, c + 2), (r, c - 1), (r, c - 2)):
                if 0 <= rr and 0 <= cc < s:
                    assert dep[rr * s + cc], f"pixel {(r, c)} does not see {(rr, cc)}"


def test_pixelcnn_incremental_matches_full_forward():
    m = _tiny("pixelcnn")
    _perturb(m)
    m.eval()
    x = _batch(m, 2)
    with torch.no_grad():
        full = m(x)
        for r in range(m.config.image_size):
            vh = m._row_vh(x, r)
            for c in range(m.config.image_size):
                torch.testing.assert_close(m._pixel_params(x, r, c, vh), full[:, :, r, c], atol=1e-5, rtol=1e-5)


def test_pixelcnn_bits_per_dim_matches_loss():
    m = _tiny("pixelcnn").eval()
    x = _batch(m, 4)
    bpd = m.evaluate(x)["bits_per_dim"]
    with torch.no_grad():
        assert abs(bpd - m.loss(x).item() / torch.log(torch.tensor(2.0)).item()) < 1e-4
    assert 0 < bpd < 20


def test_dlmm_is_normalized_over_256_levels():
    # One component with zero coefficients factorizes: p(r, g, b) = pR(r) pG(g) pB(b), so
    # sum_r p(r, g0, b0) * sum_g p(r0, g, b0) * sum_b p(r0, g0, b) = p(r0, g0, b0)^2.
    torch.manual_seed(0)
    out = torch.randn(1, 10, 1, 1)
    out[:, 7:] = 0
    levels = torch.arange(256) / 127.5 - 1
    x0 = torch.tensor([0.2, -0.6, 0.9])
    x0 = ((x0 + 1) * 127.5).round() / 127.5 - 1
    lps = []
    for ch in range(3):
        xs = x0.repeat(256, 1)
        xs[:, ch] = levels
        lps.append(torch.logsumexp(-ar.dlmm_nll(xs.view(256, 3, 1, 1), out.expand(256, -1, -1, -1), 1), 0))
    lp0 = -ar.dlmm_nll(x0.view(1, 3, 1, 1), out, 1)[0]
    assert abs((sum(lps) - 2 * lp0).item()) < 1e-3
    s = ar.dlmm_sample(torch.randn(4, 20), 2, torch.Generator().manual_seed(0))
    assert s.shape == (4, 3) and s.abs().max() <= 1
    assert ((s + 1) * 127.5 - ((s + 1) * 127.5).round()).abs().max() < 1e-4   # on the 8-bit grid


def test_vq_prior_is_causal():
    m = _tiny("vq_transformer").eval()
    _perturb(m, 0.05)
    n = m.grid ** 2
    codes = torch.randint(0, m.config.codebook, (1, n))
    base_logits = m.prior.logits(codes)
    for j in range(n):
        c2 = codes.clone()
        c2[0, j] = (c2[0, j] + 1) % m.config.codebook
        lg = m.prior.logits(c2)
        assert torch.allclose(lg[:, :j + 1], base_logits[:, :j + 1], atol=1e-6)   # positions ≤ j unchanged
        if j + 1 < n:
            assert not torch.allclose(lg[:, j + 1], base_logits[:, j + 1])


def test_vq_dead_code_restart():
    torch.manual_seed(0)
    vq = ar.VectorQuantizer(8, 2, decay=0.9, dead_threshold=0.5)
    z = torch.randn(4, 2, 3, 3)
    vq(z, update=True)                               # first call: codebook from the data
    assert bool(vq.initialized)
    with torch.no_grad():
        vq.embed[:4] = 1e3                          # four entries far from all data
        vq.embed_sum[:4] = 1e3
        vq.cluster_size[:4] = 0.0
    before = int(vq.restarts)
    vq(z, update=True)
    assert int(vq.restarts) - before >= 4
    assert vq.embed[:4].abs().max() < 50             # moved onto encoder outputs
    assert vq.cluster_size[:4].min() >= 0.5
    idx = vq.codes(z)
    assert idx.shape == (4, 3, 3)


def test_vq_phases_freeze_the_autoencoder():
    m = _tiny("vq_transformer").train()              # tiny: vq_steps = 2
    x = _batch(m, 4)
    assert m.phase == 1
    m.loss(x).backward()
    assert m.enc[0].weight.grad is not None
    m.zero_grad()
    m.after_step(0)
    m.after_step(1)
    assert m.phase == 2
    embed = m.vq.embed.clone()
    m.loss(x).backward()
    assert m.enc[0].weight.grad is None and m.dec[0].weight.grad is None
    assert torch.equal(embed, m.vq.embed)
    assert any(p.grad is not None for p in m.prior.parameters())
    ev = m.evaluate(x)
    assert 0 < ev["codebook_usage"] <= 1 and ev["codebook_perplexity"] >= 1 and ev["phase_reached"] == 2


# -- bank and corpus ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_bank_train_card_and_generate_rows(name, tmp_path):
    from forensics import bank
    from forensics.generate import generate

    card = bank.train_architecture(name, out=tmp_path / "ck", preset="tiny", steps=2, per_source=3,
                                   progress=False, device="cpu")
    assert card["family"] == FAMILY[name] and card["steps"] == 2 and card["metrics"]
    assert (tmp_path / "ck" / "grid.png").is_file() and (tmp_path / "ck" / "card.json").is_file()
    r = generate([name], 2, tmp_path / "corpus", checkpoint=str(tmp_path / "ck"), progress=False, device="cpu")
    assert r["made"] == 2
    rows = [json.loads(line) for line in (tmp_path / "corpus" / "metadata.jsonl").read_text().splitlines()]
    m = base.load(tmp_path / "ck")
    for row in rows:
        assert row["label"] == "synthetic" and row["family"] == FAMILY[name] and row["architecture"] == name
        assert row["sampler"] == m.default_sampler and row["steps"] == m.default_steps
        assert row["checkpoint_sha256"] == base.checkpoint_sha256(tmp_path / "ck")
