"""A DCGAN-style generative adversarial network with the stabilizers small data needs.

- G (Radford et al. 2016, "DCGAN"): z ~ N(0, I) → linear → 4x4 → (nearest upsample, 3x3 conv,
  GroupNorm, LeakyReLU) x 3 → 32x32 → 3x3 conv → tanh. GroupNorm rather than BatchNorm, so a
  sample does not depend on the other samples of its batch (items are generated one at a time).
- D: 3x3 / 4x4-stride-2 convolutions with spectral normalization on every layer (Miyato et al.
  2018; one power iteration per training step), LeakyReLU, a linear critic.
- Losses: hinge (Lim & Ye 2017; default) or non-saturating (Goodfellow et al. 2014), with the R1
  penalty on real data (Mescheder et al. 2018), applied lazily every `r1_every` steps with the
  weight scaled up accordingly (Karras et al. 2020, StyleGAN2).
- DiffAugment (Zhao et al. 2020): differentiable random colour / translation / cutout, drawn
  independently per image, on *both* real and fake images before D (so G is not taught the
  augmentations, and D cannot memorize a small training set).
- EMA of G: the shared training loop keeps an EMA of the whole module and saves it; `sample`
  uses `self.G` of that EMA copy. The shipped checkpoint holds G only (D is a training-time
  critic; the full state, D included, stays in the resumable `train_state/`); a loaded model has
  a freshly initialized D.

One optimizer, one backward pass (the shared loop calls `loss(batch)` once per step). With
L_D(d_real, d_fake) the discriminator loss and L_G(d_fake) the generator loss, `loss` returns

    total = L_D(D(real), D(sg(fake))) + R1 + L_G(D(fake)) - L_G(D(sg(fake)))        sg = stop-gradient

D is evaluated once on the concatenation [real, sg(fake), fake] (D has no batch-coupled layer and
one spectral-norm power iteration per call, so the last two thirds give identical numbers). Then
  * grad wrt theta_G: only L_G(D(fake)) reaches G (every other term is stopped), = grad L_G;
  * grad wrt theta_D: the two L_G terms have equal values and equal theta_D-gradients and cancel
    exactly, leaving grad (L_D + R1).
So a single AdamW step is a simultaneous gradient step of both players on their own losses, with
no second optimizer and no gradient-reversal layer. The logged loss value is L_D + R1 (the G terms
cancel in value too). Turn off global gradient clipping for this model (it would couple G and D);
TRAIN_DEFAULTS does.

`evaluate` reports sample diversity against real data (a mode-collapse check): the mean pairwise
distance between samples divided by the same for real test crops, in pixels and in a fixed
random-feature space (seeded random conv net, no download); ~1 means real-like spread, << 1 means
collapse. `coverage_nn_ratio`: mean distance from a real test crop to its nearest sample over the
distance to its nearest other real crop (features; lower is better, large means modes missed).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Config, Generator, GeneratorError, register


@dataclasses.dataclass
class GANConfig(Config):
    z_dim: int = 128
    g_ch: int = 32            # G width at 32x32 is g_ch, at 4x4 and 8x8 4*g_ch
    d_ch: int = 32            # D width at 32x32 is d_ch, at 4x4 8*d_ch
    loss: str = "hinge"       # "hinge" | "ns"
    r1_gamma: float = 0.5
    r1_every: int = 4
    diffaug: str = "color,translation,cutout"
    PRESETS: ClassVar[dict] = {
        "tiny": {"z_dim": 16, "g_ch": 8, "d_ch": 8, "r1_every": 2},
        "cpu": {},
        "gpu": {"z_dim": 128, "g_ch": 128, "d_ch": 128, "r1_gamma": 0.2},
    }


# -- DiffAugment --------------------------------------------------------------------------------
def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Differentiable augmentations of (B, 3, H, W) in [-1, 1], random per sample (Zhao et al. 2020)."""
    b = x.shape[0]
    for p in [s for s in policy.split(",") if s]:
        if p == "color":
            r = lambda: torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
            x = x + (r() - 0.5)                                                   # brightness
            m = x.mean(1, keepdim=True)
            x = (x - m) * (r() * 2) + m                                           # saturation
            m = x.mean((1, 2, 3), keepdim=True)
            x = (x - m) * (r() + 0.5) + m                                         # contrast
        elif p == "translation":
            _, _, h, w = x.shape
            ph, pw = h // 8, w // 8
            sy = torch.randint(-ph, ph + 1, (b, 1), device=x.device)
            sx = torch.randint(-pw, pw + 1, (b, 1), device=x.device)
            iy = torch.arange(h, device=x.device)[None] + ph + sy                 # (B, H)
            ix = torch.arange(w, device=x.device)[None] + pw + sx                 # (B, W)
            pad = F.pad(x, [pw, pw, ph, ph])
            bi = torch.arange(b, device=x.device)[:, None, None]
            x = pad[bi, :, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)    # (B, 3, H, W)
        elif p == "cutout":
            _, _, h, w = x.shape
            ch, cw = h // 2, w // 2                                               # a half-size square
            cy = torch.randint(0, h, (b, 1, 1), device=x.device)                  # centre, may hang over
            cx = torch.randint(0, w, (b, 1, 1), device=x.device)
            yy = torch.arange(h, device=x.device)[None, :, None]
            xx = torch.arange(w, device=x.device)[None, None, :]
            hole = (yy >= cy - ch // 2) & (yy < cy + ch - ch // 2) & (xx >= cx - cw // 2) & (xx < cx + cw - cw // 2)
            x = x * (~hole)[:, None].to(x.dtype)                                  # (B, 3, H, W)
        else:
            raise GeneratorError(f"unknown DiffAugment policy {p!r}; use color, translation, cutout")
    return x


# -- spectral normalization -------------------------------------------------------------------
class _SN(nn.Module):
    """W / sigma(W) with sigma estimated by one power iteration per training forward (Miyato 2018)."""

    def _sn_init(self, out_features: int) -> None:
        u = torch.randn(out_features)
        self.register_buffer("u", u / u.norm())

    def sn_weight(self) -> torch.Tensor:
        w = self.weight.flatten(1)                                # (out, in*k*k)
        if self.training:
            with torch.no_grad():
                v = F.normalize(w.t() @ self.u, dim=0, eps=1e-12)
                self.u.copy_(F.normalize(w @ v, dim=0, eps=1e-12))
        v = F.normalize(w.t() @ self.u, dim=0, eps=1e-12).detach()
        sigma = self.u @ w @ v                                    # gradient flows through w
        return self.weight / sigma


class SNConv2d(nn.Conv2d, _SN):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._sn_init(self.out_channels)

    def forward(self, x):
        return self._conv_forward(x, self.sn_weight(), self.bias)


class SNLinear(nn.Linear, _SN):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._sn_init(self.out_features)

    def forward(self, x):
        return F.linear(x, self.sn_weight(), self.bias)


# -- networks -----------------------------------------------------------------------------------
def _groups(c: int) -> int:
    g = min(8, c)
    while c % g:
        g -= 1
    return g


class G(nn.Module):
    def __init__(self, z_dim: int, ch: int, image_size: int, channels: int):
        super().__init__()
        self.base = image_size // 8
        self.c0 = 4 * ch
        self.fc = nn.Linear(z_dim, self.c0 * self.base * self.base)
        layers: list[nn.Module] = []
        c = self.c0
        for cout in (4 * ch, 2 * ch, ch):                        # s/8 → s/4 → s/2 → s
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c, cout, 3, padding=1), nn.GroupNorm(_groups(cout), cout), nn.LeakyReLU(0.2)]
            c = cout
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, self.base, self.base)   # (B, 4ch, s/8, s/8)
        return torch.tanh(self.out(self.body(h)))                 # (B, 3, s, s)


class D(nn.Module):
    def __init__(self, ch: int, image_size: int, channels: int):
        super().__init__()
        layers: list[nn.Module] = [SNConv2d(channels, ch, 3, padding=1), nn.LeakyReLU(0.2)]
        c = ch
        for i, cout in enumerate((2 * ch, 4 * ch, 8 * ch)):        # s → s/2 → s/4 → s/8
            if i:
                layers += [SNConv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2)]
            layers += [SNConv2d(c, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = cout
        self.body = nn.Sequential(*layers)
        self.fc = SNLinear(c * (image_size // 8) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1)).squeeze(1)       # (B,)


def _loss_d(d_real: torch.Tensor, d_fake: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def _loss_g(d_fake: torch.Tensor, kind: str) -> torch.Tensor:
    return -d_fake.mean() if kind == "hinge" else F.softplus(-d_fake).mean()


@register
class GAN(Generator):
    name = "gan"
    family = "gan"
    Config = GANConfig
    default_sampler = "latent"
    default_steps = 1
    # the discriminator only matters while training (its state lives in train_state/): the
    # shipped checkpoint holds G alone, a third of the size
    training_only = ("D.",)

    def __init__(self, config: GANConfig):
        super().__init__(config)
        if config.loss not in ("hinge", "ns"):
            raise GeneratorError(f"GAN loss must be 'hinge' or 'ns'; got {config.loss!r}")
        if config.image_size % 8:
            raise GeneratorError(f"GAN image size must be a multiple of 8; got {config.image_size}")
        self.G = G(config.z_dim, config.g_ch, config.image_size, config.channels)
        self.D = D(config.d_ch, config.image_size, config.channels)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last: dict[str, float] = {}

    def loss_terms(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        b = real.shape[0]
        z = torch.randn(b, cfg.z_dim, device=real.device)
        fake = self.G(z)                                                   # (B, 3, s, s)
        x_real = diff_augment(real, cfg.diffaug)
        x_fake = diff_augment(fake, cfg.diffaug)
        do_r1 = cfg.r1_gamma > 0 and int(self.step) % max(1, cfg.r1_every) == 0
        if do_r1:
            x_real = x_real.detach().requires_grad_(True)
        d = self.D(torch.cat([x_real, x_fake.detach(), x_fake]))            # (3B,)
        d_real, d_fake_sg, d_fake = d[:b], d[b:2 * b], d[2 * b:]
        l_d = _loss_d(d_real, d_fake_sg, cfg.loss)
        l_g = _loss_g(d_fake, cfg.loss)
        l_g_sg = _loss_g(d_fake_sg, cfg.loss)
        r1 = torch.zeros((), device=real.device)
        if do_r1:
            (g,) = torch.autograd.grad(d_real.sum(), x_real, create_graph=True)
            r1 = 0.5 * cfg.r1_gamma * max(1, cfg.r1_every) * g.pow(2).flatten(1).sum(1).mean()
        return {"d": l_d, "g": l_g, "g_sg": l_g_sg, "r1": r1,
                "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        t = self.loss_terms(batch)
        self.last = {k: float(v.detach()) for k, v in t.items()}
        return t["d"] + t["r1"] + t["g"] - t["g_sg"]

    def after_step(self, step: int) -> None:
        self.step += 1

    def _check(self, steps, sampler) -> None:
        if sampler not in (None, *self.samplers()):
            raise GeneratorError(f"{self.name} samples with {', '.join(self.samplers())}; got sampler {sampler!r}")
        if steps not in (None, self.default_steps):
            raise GeneratorError(f"{self.name} samples in one network pass; omit --steps (got {steps})")

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, temperature: float = 1.0):
        self._check(steps, sampler)
        z = torch.randn(n, self.config.z_dim, generator=generator).to(self.device) * temperature
        return self.G(z).clamp(-1, 1)

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor, n: int = 512) -> dict[str, float]:
        self.eval()
        real = data[torch.linspace(0, len(data) - 1, min(n, len(data))).long()].to(self.device)
        fake = torch.cat([self.sample(min(128, n - i), generator=torch.Generator().manual_seed(10_000 + i))
                          for i in range(0, n, 128)])
        feat = random_features(self.config.channels).to(self.device)
        out = {}
        for space, f in (("pixel", lambda x: x.flatten(1)), ("feature", feat)):
            fr, ff = f(real), f(fake)
            dr, df = _mean_pairwise(fr), _mean_pairwise(ff)
            out[f"diversity_{space}_samples"] = df
            out[f"diversity_{space}_real"] = dr
            out[f"diversity_{space}_ratio"] = df / max(dr, 1e-12)
        # coverage: mean distance from a real crop to its nearest sample vs to its nearest other real
        fr, ff = feat(real), feat(fake)
        nn_fake = torch.cdist(fr, ff).min(1).values.mean().item()
        drr = torch.cdist(fr, fr) + torch.eye(len(fr), device=fr.device) * 1e9
        nn_real = drr.min(1).values.mean().item()
        out["coverage_nn_ratio"] = nn_fake / max(nn_real, 1e-12)
        out["samples"] = n
        return out


def _mean_pairwise(f: torch.Tensor) -> float:
    d = torch.cdist(f, f)
    k = len(f)
    return (d.sum() / (k * (k - 1))).item()


def random_features(channels: int = 3, seed: int = 0) -> nn.Module:
    """A fixed random conv net (seeded; nothing downloaded): (B, 3, s, s) → (B, 512) features,
    L2-normalized. Used only to compare spreads of samples and real images."""
    g = torch.Generator().manual_seed(seed)
    convs = []
    c = channels
    for cout in (32, 64, 128):
        conv = nn.Conv2d(c, cout, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2 / (c * 9)))
            conv.bias.zero_()
        convs += [conv, nn.LeakyReLU(0.2)]
        c = cout
    net = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(2), nn.Flatten())   # (B, 128*4)
    for p in net.parameters():
        p.requires_grad_(False)

    class _F(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return F.normalize(self.net(x), dim=1)

    return _F().eval()
