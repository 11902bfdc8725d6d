"""Glow (Kingma & Dhariwal 2018), a multi-scale normalizing flow built on RealNVP (Dinh et al. 2017).

- Exact likelihood by change of variables: log p(x) = log N(eps; 0, I) + log|det d eps/d x|.
- Each flow step = ActNorm → invertible 1x1 convolution → affine coupling:
  * ActNorm: per-channel affine y = (x + b) * exp(s), initialized from the first training batch so
    that its output has zero mean and unit variance per channel (data-dependent init).
  * Invertible 1x1 conv in LU form, W = P L (U + diag(sign * exp(log_s))): log|det| = H W sum log_s.
  * Affine coupling (RealNVP): x = [x_a, x_b]; (t, s') = NN(x_a); y_b = (x_b + t) * sigmoid(s' + 2);
    NN's last conv starts at zero, so every step starts as the identity.
- Multi-scale: L levels; each squeezes 2x2 space into channels, runs K steps, then (except the
  last) splits off half the channels as latent z_l with a learned conditional prior
  N(mu(h), sigma(h)) from the kept half (a zero-initialized conv); the top latent has a learned
  per-position prior. `encode` returns the standardized latents eps_l = (z_l - mu) / sigma, so
  x ↦ (eps_1..eps_L) is one invertible map with log-det `logdet` and log p(x) = log N(eps) + logdet.
- Uniform dequantization (Theis et al. 2016): x_tilde = x + u * (2/255), u ~ U(-1/2, 1/2). Then
  bits/dim = (-log p(x_tilde) / D + log(255/2)) / log 2 is an upper bound on the discrete 8-bit
  negative log-likelihood (`evaluate`, on the real test split).
- Sampling: eps_l ~ N(0, T^2 I) at temperature T = `sample_temperature` (Glow's reduced
  temperature; 1.0 is the model's own distribution), then the inverse map; values clamped to [-1, 1].
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Config, Generator, GeneratorError, register

BIN = 2.0 / 255.0                      # width of one 8-bit level in [-1, 1]


@dataclasses.dataclass
class GlowConfig(Config):
    levels: int = 3
    steps_per_level: int = 6           # K
    hidden: int = 64                   # width of each coupling network
    sample_temperature: float = 0.8
    PRESETS: ClassVar[dict] = {
        "tiny": {"image_size": 8, "levels": 2, "steps_per_level": 2, "hidden": 8},
        "cpu": {},
        "gpu": {"levels": 3, "steps_per_level": 16, "hidden": 256},
    }


class ActNorm(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def _init(self, x: torch.Tensor) -> None:
        mean = x.mean((0, 2, 3), keepdim=True)
        std = x.std((0, 2, 3), keepdim=True)
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initialized):
            self._init(x)
        h, w = x.shape[2:]
        return (x + self.bias) * self.logs.exp(), h * w * self.logs.sum().expand(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * (-self.logs).exp() - self.bias


class InvConv1x1(nn.Module):
    """1x1 convolution with W = P L (U + diag(sign_s * exp(log_s))), P fixed, L unit lower-triangular."""

    def __init__(self, c: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(c, c))[0]                      # random rotation
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(c, c), -1), persistent=False)
        self.register_buffer("eye", torch.eye(c), persistent=False)
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.t() + torch.diag(self.sign_s * self.log_s.exp())
        return self.p @ lower @ upper                                  # (C, C)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, (h, w) = x.shape[1], x.shape[2:]
        y = F.conv2d(x, self.weight().view(c, c, 1, 1))
        return y, h * w * self.log_s.sum().expand(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        c = y.shape[1]
        w_inv = torch.linalg.inv(self.weight().double()).to(y.dtype)
        return F.conv2d(y, w_inv.view(c, c, 1, 1))


class ZeroConv(nn.Conv2d):
    """3x3 conv initialized at zero, output scaled by exp(3 * logs) (Glow)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        self.logs = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x):
        return super().forward(x) * (3 * self.logs).exp()


class AffineCoupling(nn.Module):
    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.ca = c // 2
        self.nn = nn.Sequential(
            nn.Conv2d(self.ca, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            ZeroConv(hidden, 2 * (c - self.ca)),
        )

    def _ts(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t, s = self.nn(xa).chunk(2, 1)
        return t, torch.sigmoid(s + 2.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x[:, :self.ca], x[:, self.ca:]
        t, scale = self._ts(xa)
        yb = (xb + t) * scale
        return torch.cat([xa, yb], 1), scale.log().flatten(1).sum(1)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y[:, :self.ca], y[:, self.ca:]
        t, scale = self._ts(ya)
        return torch.cat([ya, yb / scale - t], 1)


class FlowStep(nn.Module):
    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(c), InvConv1x1(c), AffineCoupling(c, hidden)])

    def forward(self, x):
        total = 0
        for f in self.layers:
            x, ld = f(x)
            total = total + ld
        return x, total

    def reverse(self, y):
        for f in reversed(self.layers):
            y = f.reverse(y)
        return y


def squeeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)                          # (B, 4C, H/2, W/2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)                           # (B, C/4, 2H, 2W)


LOG2PI = math.log(2 * math.pi)


@register
class Glow(Generator):
    name = "glow"
    family = "flow"
    Config = GlowConfig
    default_sampler = "inverse"
    default_steps = 1

    def __init__(self, config: GlowConfig):
        super().__init__(config)
        s, c = config.image_size, config.channels
        if s % (2 ** config.levels):
            raise GeneratorError(f"Glow with {config.levels} levels needs an image size divisible by "
                                 f"{2 ** config.levels}; got {s}")
        self.levels = nn.ModuleList()
        self.priors = nn.ModuleList()
        self.shapes: list[tuple[int, int, int]] = []                   # latent shape per level
        for lvl in range(config.levels):
            c, s = 4 * c, s // 2
            self.levels.append(nn.ModuleList([FlowStep(c, config.hidden) for _ in range(config.steps_per_level)]))
            if lvl < config.levels - 1:
                self.priors.append(ZeroConv(c // 2, 2 * (c - c // 2)))   # split prior from the kept half
                self.shapes.append((c - c // 2, s, s))
                c = c // 2
            else:
                self.shapes.append((c, s, s))
        self.top_prior = nn.Parameter(torch.zeros(1, 2 * c, s, s))       # learned mean and log-scale

    # -- the bijection x ↔ (eps_1 .. eps_L) -----------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x (B, 3, S, S) → standardized latents and log|det d eps / d x| (B,)."""
        h, logdet, eps = x, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype), []
        for lvl, steps in enumerate(self.levels):
            h = squeeze(h)
            for st in steps:
                h, ld = st(h)
                logdet = logdet + ld
            if lvl < len(self.levels) - 1:
                keep, z = h[:, :h.shape[1] // 2], h[:, h.shape[1] // 2:]
                mu, logs = self.priors[lvl](keep).chunk(2, 1)
            else:
                keep, z = None, h
                mu, logs = self.top_prior.expand(h.shape[0], -1, -1, -1).chunk(2, 1)
            eps.append((z - mu) * (-logs).exp())
            logdet = logdet - logs.flatten(1).sum(1)
            h = keep
        return eps, logdet

    def decode(self, eps: list[torch.Tensor]) -> torch.Tensor:
        h = None
        for lvl in reversed(range(len(self.levels))):
            if lvl == len(self.levels) - 1:
                mu, logs = self.top_prior.expand(eps[lvl].shape[0], -1, -1, -1).chunk(2, 1)
                h = eps[lvl] * logs.exp() + mu
            else:
                mu, logs = self.priors[lvl](h).chunk(2, 1)
                h = torch.cat([h, eps[lvl] * logs.exp() + mu], 1)
            for st in reversed(self.levels[lvl]):
                h = st.reverse(h)
            h = unsqueeze(h)
        return h

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous log density (nats) of x (B, 3, S, S) → (B,)."""
        eps, logdet = self.encode(x)
        lp = sum((-0.5 * (e ** 2 + LOG2PI)).flatten(1).sum(1) for e in eps)
        return lp + logdet

    # -- protocol --------------------------------------------------------------------------------
    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch + (torch.rand_like(batch) - 0.5) * BIN                # uniform dequantization
        return -self.log_prob(x).mean() / batch[0].numel()              # nats per dimension

    def _check(self, steps, sampler) -> None:
        if sampler not in (None, *self.samplers()):
            raise GeneratorError(f"{self.name} samples with {', '.join(self.samplers())}; got sampler {sampler!r}")
        if steps not in (None, self.default_steps):
            raise GeneratorError(f"{self.name} samples in one inverse pass; omit --steps (got {steps})")

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, temperature: float | None = None):
        self._check(steps, sampler)
        t = self.config.sample_temperature if temperature is None else temperature
        eps = [torch.randn(n, *shp, generator=generator).to(self.device) * t for shp in self.shapes]
        return self.decode(eps).clamp(-1, 1)

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor, n: int = 1024) -> dict[str, float]:
        return {"bits_per_dim": bits_per_dim(self, data, n), "sample_temperature": self.config.sample_temperature}


@torch.no_grad()
def bits_per_dim(model, data: torch.Tensor, n: int = 1024, batch: int = 128, seed: int = 0) -> float:
    """Uniformly dequantized bits/dim of up to n evenly spaced items of data (fixed noise seed)."""
    model.eval()
    idx = torch.linspace(0, len(data) - 1, min(n, len(data))).long()
    g = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for i in range(0, len(idx), batch):
        x = data[idx[i:i + batch]].float()
        x = (x + (torch.rand(x.shape, generator=g) - 0.5) * BIN).to(model.device)
        total += -model.log_prob(x).sum().item()
        count += x.shape[0]
    dims = data[0].numel()
    return (total / (count * dims) + math.log(1 / BIN)) / math.log(2)
