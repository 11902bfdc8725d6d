"""Variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes").

- Encoder q(z|x) = N(mu(x), diag sigma^2(x)); decoder p(x|z) = N(x_hat(z), s^2 I) with one learned
  global log-scale s (the "sigma-VAE" of Rybkin et al. 2021), which balances reconstruction and
  KL without a hand-tuned weight.
- Against posterior (KL) collapse: linear KL warm-up (beta 0 -> 1) and free bits per latent
  dimension (Kingma et al. 2016): each dimension's KL is floored at `free_bits` nats.
- `evaluate` reports the negative ELBO in bits/dim and the active units
  (Burda et al. 2016: dimension d is active when Cov_x(E_q[z_d|x]) > 0.01).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Config, Generator, register


@dataclasses.dataclass
class VAEConfig(Config):
    ch: int = 32
    z_dim: int = 64
    free_bits: float = 0.05
    warmup_steps: int = 500
    PRESETS: ClassVar[dict] = {
        "tiny": {"ch": 8, "z_dim": 8, "warmup_steps": 2},
        "cpu": {},
        "gpu": {"ch": 64, "z_dim": 128, "warmup_steps": 2000},
    }


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


@register
class VAE(Generator):
    name = "vae"
    family = "vae"
    Config = VAEConfig
    default_sampler = "prior"

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c, s = config.ch, config.image_size
        self.feat = s // 8
        self.enc = nn.Sequential(
            _block(config.channels, c),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.SiLU(), _block(2 * c, 2 * c),          # s/2
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.SiLU(), _block(4 * c, 4 * c),      # s/4
            nn.Conv2d(4 * c, 4 * c, 4, 2, 1), nn.SiLU(),                            # s/8
        )
        flat = 4 * c * self.feat * self.feat
        self.to_stats = nn.Linear(flat, 2 * config.z_dim)
        self.from_z = nn.Linear(config.z_dim, flat)
        self.dec = nn.Sequential(
            _block(4 * c, 4 * c),
            nn.Upsample(scale_factor=2, mode="nearest"), _block(4 * c, 2 * c),      # s/4
            nn.Upsample(scale_factor=2, mode="nearest"), _block(2 * c, c),          # s/2
            nn.Upsample(scale_factor=2, mode="nearest"), _block(c, c),              # s
            nn.Conv2d(c, config.channels, 3, padding=1),
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(0.1)))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x).flatten(1)                                   # (B, 4c * f * f)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)                # (B, z), (B, z)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = 4 * self.config.ch
        h = self.from_z(z).view(-1, c, self.feat, self.feat)
        return torch.tanh(self.dec(h))                               # (B, 3, s, s) in [-1, 1]

    def _terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_hat = self.decode(z)
        log_s = self.log_scale.clamp(math.log(1e-3), 1.0)
        # Gaussian negative log-likelihood per image, in nats (bins of width 2/255).
        nll = (0.5 * ((x - x_hat) / log_s.exp()) ** 2 + log_s + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)           # (B, z) nats per dimension
        return nll, kl, mu

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        nll, kl, _ = self._terms(batch)
        beta = min(1.0, float(self.step) / max(1, self.config.warmup_steps))
        kl_fb = torch.clamp(kl.mean(0), min=self.config.free_bits).sum()  # free bits per dimension
        return (nll.mean() + beta * kl_fb) / batch[0].numel()

    def after_step(self, step: int) -> None:
        self.step += 1

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, temperature: float = 1.0):
        z = torch.randn(n, self.config.z_dim, generator=generator).to(self.device) * temperature
        return self.decode(z).clamp(-1, 1)

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor) -> dict[str, float]:
        self.eval()
        nlls, kls, mus = [], [], []
        for i in range(0, len(data), 256):
            x = data[i:i + 256].to(self.device)
            nll, kl, mu = self._terms(x)
            nlls.append(nll)
            kls.append(kl)
            mus.append(mu)
        nll, kl, mu = torch.cat(nlls), torch.cat(kls), torch.cat(mus)
        dims = data[0].numel()
        # Continuous density on [-1, 1] -> probability of an 8-bit bin of width 2/255:
        # -log P = -log p - log(2/255) per dimension.
        nelbo = (nll + kl.sum(1)).mean().item() / dims - math.log(2 / 255)
        active = (mu.var(0) > 0.01).sum().item()
        return {
            "neg_elbo_bits_per_dim": nelbo / math.log(2),
            "kl_nats_per_image": kl.sum(1).mean().item(),
            "active_units": int(active),
            "latent_dims": self.config.z_dim,
            "decoder_scale": self.log_scale.exp().item(),
        }
