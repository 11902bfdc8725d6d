"""TARFlow: a transformer autoregressive flow over image patches (Zhai et al. 2024, "Normalizing
Flows are Capable Generative Models"; the STARFlow line builds on it).

- The image is cut into p x p patches: a sequence of N = (S/p)^2 tokens x_1..x_N of dimension
  d = 3 p^2 (raster order).
- T flow blocks. Block t reads its tokens in raster order (t even) or reversed order (t odd), and is
  an affine autoregressive transform (a MAF/IAF-style layer) whose parameters come from a causal
  transformer:
      z_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)),      mu_1 = alpha_1 = 0,
  log|det dz/dx| = -sum_i alpha_i. The transformer output at position i-1 gives (mu_i, alpha_i)
  (a right shift by one); its output layer starts at zero, so each block starts as the identity;
  alpha is soft-clamped to [-a_max, a_max] (a_max * tanh(alpha / a_max)) for stability.
- Training: maximum likelihood on noise-augmented data x_tilde = x + sigma * n, n ~ N(0, I)
  (`noise_std` sigma), with the prior N(0, I) on the final z.
- Sampling: z ~ N(0, T^2 I), then each block inverted position by position, newest block first:
  x_i = z_i * exp(alpha_i) + mu_i, N sequential transformer steps per block with a key/value cache.
  The sample is a draw of the *noisy* distribution; the denoising step then applies Tweedie's
  formula with the flow's own score: x = x_tilde + sigma^2 * grad log p(x_tilde) (sampler
  `inverse+denoise`, the default; `inverse` skips it).
- Likelihood: the reported `bits_per_dim_noisy` is -log2 p(x + sigma n) per dimension plus
  log2(255/2), i.e. the dequantized bits/dim of the sigma-noised test data. It is a likelihood of
  the noise-augmented data (sigma >> one 8-bit level), so it is not directly comparable with the
  uniformly dequantized bits/dim of Glow or PixelCNN; the card says so, and gives the floor that
  the noise alone sets, h(sigma n) in the same units (about 4.7 bits/dim for sigma = 0.05).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import nn

from .base import Config, Generator, GeneratorError, register
from .transformer import CausalTransformer

LOG2PI = math.log(2 * math.pi)
BIN = 2.0 / 255.0


@dataclasses.dataclass
class TARFlowConfig(Config):
    patch: int = 4
    dim: int = 96              # transformer width
    depth: int = 2             # transformer layers per flow block
    blocks: int = 4            # flow blocks (alternating direction)
    heads: int = 4
    noise_std: float = 0.05    # sigma of the Gaussian noise augmentation, data in [-1, 1]
    alpha_max: float = 4.0
    sample_temperature: float = 1.0
    PRESETS: ClassVar[dict] = {
        "tiny": {"image_size": 8, "patch": 2, "dim": 16, "depth": 1, "blocks": 2, "heads": 2},
        "cpu": {},
        "gpu": {"patch": 2, "dim": 384, "depth": 4, "blocks": 8, "heads": 6},
    }


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)                 # (B, N, d)


def unpatchify(t: torch.Tensor, p: int, c: int) -> torch.Tensor:
    b, n, _ = t.shape
    g = int(round(math.sqrt(n)))
    x = t.view(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, g * p, g * p)                                 # (B, C, S, S)


class FlowBlock(nn.Module):
    """One affine autoregressive transform x → z over a token sequence, causal transformer inside."""

    def __init__(self, d: int, n: int, cfg: TARFlowConfig, reverse_order: bool):
        super().__init__()
        self.reverse_order = reverse_order
        self.alpha_max = cfg.alpha_max
        self.proj_in = nn.Linear(d, cfg.dim)
        self.pos = nn.Parameter(torch.randn(1, n, cfg.dim) * 0.02)
        self.tf = CausalTransformer(cfg.dim, cfg.depth, cfg.heads)
        self.proj_out = nn.Linear(cfg.dim, 2 * d)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, a = self.proj_out(h).chunk(2, -1)
        return mu, self.alpha_max * torch.tanh(a / self.alpha_max)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reverse_order:
            x = x.flip(1)
        b, n, d = x.shape
        h = self.tf(self.proj_in(x[:, :-1]) + self.pos[:, :n - 1])       # outputs 0..N-2 → params 1..N-1
        mu, alpha = self._params(h)                                       # (B, N-1, d) x2
        z = torch.cat([x[:, :1], (x[:, 1:] - mu) * (-alpha).exp()], 1)    # (B, N, d)
        logdet = -alpha.flatten(1).sum(1)
        return (z.flip(1) if self.reverse_order else z), logdet

    def reverse(self, z: torch.Tensor) -> torch.Tensor:
        if self.reverse_order:
            z = z.flip(1)
        b, n, d = z.shape
        cache = self.tf.new_cache()
        xs = [z[:, :1]]
        for i in range(1, n):
            h = self.tf(self.proj_in(xs[-1]) + self.pos[:, i - 1:i], cache)   # output at position i-1
            mu, alpha = self._params(h)                                       # (B, 1, d)
            xs.append(z[:, i:i + 1] * alpha.exp() + mu)
        x = torch.cat(xs, 1)
        return x.flip(1) if self.reverse_order else x


@register
class TARFlow(Generator):
    name = "tarflow"
    family = "flow"
    Config = TARFlowConfig
    default_sampler = "inverse+denoise"

    def __init__(self, config: TARFlowConfig):
        super().__init__(config)
        if config.image_size % config.patch:
            raise GeneratorError(f"TARFlow image size {config.image_size} is not divisible by the patch {config.patch}")
        self.n = (config.image_size // config.patch) ** 2
        self.d = config.channels * config.patch ** 2
        self.flow = nn.ModuleList([FlowBlock(self.d, self.n, config, t % 2 == 1) for t in range(config.blocks)])

    @property
    def default_steps(self) -> int:
        return self.config.blocks * self.n          # sequential transformer steps of one sample

    def samplers(self):
        return ["inverse+denoise", "inverse"]

    # -- the bijection ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, S, S) → z tokens (B, N, d) and log|det dz/dx| (B,)."""
        z = patchify(x, self.config.patch)
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for blk in self.flow:
            z, ld = blk(z)
            logdet = logdet + ld
        return z, logdet

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for blk in reversed(self.flow):
            z = blk.reverse(z)
        return unpatchify(z, self.config.patch, self.config.channels)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, logdet = self.encode(x)
        return (-0.5 * (z ** 2 + LOG2PI)).flatten(1).sum(1) + logdet    # (B,) nats

    # -- protocol ----------------------------------------------------------------------------
    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch + self.config.noise_std * torch.randn_like(batch)     # noise augmentation
        return -self.log_prob(x).mean() / batch[0].numel()

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, temperature: float | None = None):
        if sampler not in (None, *self.samplers()):
            raise GeneratorError(f"tarflow samples with {', '.join(self.samplers())}; got sampler {sampler!r}")
        if steps not in (None, self.default_steps):
            raise GeneratorError(f"tarflow takes a fixed {self.default_steps} sequential steps; omit --steps (got {steps})")
        t = self.config.sample_temperature if temperature is None else temperature
        z = torch.randn(n, self.n, self.d, generator=generator).to(self.device) * t
        x = self.decode(z)                                               # a draw of the noisy data
        if (sampler or self.default_sampler) == "inverse+denoise" and self.config.noise_std > 0:
            x = self.denoise(x)
        return x.clamp(-1, 1)

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """Tweedie: E[x | x_tilde] = x_tilde + sigma^2 * grad log p_sigma(x_tilde)."""
        with torch.enable_grad():
            xt = x.detach().requires_grad_(True)
            (score,) = torch.autograd.grad(self.log_prob(xt).sum(), xt)
        return (x + self.config.noise_std ** 2 * score).detach()

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor, n: int = 1024, batch: int = 128, seed: int = 0) -> dict[str, float]:
        self.eval()
        idx = torch.linspace(0, len(data) - 1, min(n, len(data))).long()
        g = torch.Generator().manual_seed(seed)
        total, count = 0.0, 0
        for i in range(0, len(idx), batch):
            x = data[idx[i:i + batch]].float()
            x = (x + self.config.noise_std * torch.randn(x.shape, generator=g)).to(self.device)
            total += -self.log_prob(x).sum().item()
            count += x.shape[0]
        bpd = (total / (count * data[0].numel()) + math.log(1 / BIN)) / math.log(2)
        sigma = self.config.noise_std
        # h(x + sigma n) >= h(sigma n): the noise alone costs this many bits/dim on the same scale
        floor = (0.5 * math.log(2 * math.pi * math.e * sigma ** 2) + math.log(1 / BIN)) / math.log(2) if sigma > 0 else 0.0
        return {"bits_per_dim_noisy": bpd, "noise_std": sigma, "noise_floor_bits_per_dim": floor}
