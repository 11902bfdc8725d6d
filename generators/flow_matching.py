"""Rectified flow / flow matching (Liu et al. 2023, "Flow Straight and Fast"; Lipman et al.
2023, "Flow Matching for Generative Modeling") on a small DiT (Peebles & Xie 2023).

- Straight path between data and noise: x_t = (1 - t) x_0 + t ε, t ∈ [0, 1] (t = 1 noise).
  The network v_θ(x_t, t) regresses the path's constant velocity ε - x_0 (conditional flow
  matching loss, MSE).
- Timesteps: logit-normal, t = sigmoid(m + s·n), n ~ N(0, 1) (Esser et al. 2024, §3.1: puts the
  training effort on the middle of the path, where the velocity is hardest), or uniform.
- Backbone: DiT over 4x4 patches with adaLN-zero (generators.nn.DiT), t scaled by 1000 for the
  sinusoidal embedding.
- Sampling: the ODE dx/dt = v_θ from t = 1 to 0 with Euler (default, 32 steps) or Heun (16 steps,
  the same 32 evaluations). `invert(x)` runs the same ODE from t = 0 to 1 (image → noise).
- Optional reflow (Liu et al. 2023, §2.2): `reflow_pairs` draws (ε, x̂_0 = ODE(ε)) couplings
  from the current model; `loss` on such pairs (`set_reflow_pairs`) straightens the flow so
  that few Euler steps suffice.
- `evaluate`: the flow-matching loss on the real test split at fixed t (seeded), and the
  straightness of the learned flow: the mean squared gap between one Euler step and the
  32-step solution from the same noise (0 for perfectly straight paths).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from . import samplers as S
from .base import Config, Generator, GeneratorError, register, register_architecture
from .nn import DiT


@dataclasses.dataclass
class FlowConfig(Config):
    patch: int = 4
    dim: int = 96
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    t_sampling: str = "logit_normal"   # or "uniform"
    ln_mean: float = 0.0
    ln_std: float = 1.0
    euler_steps: int = 32
    heun_steps: int = 16
    shift: float = 1.0
    PRESETS: ClassVar[dict] = {
        "tiny": {"dim": 32, "depth": 2, "heads": 2, "euler_steps": 8, "heun_steps": 4},
        "cpu": {},
        "gpu": {"patch": 2, "dim": 384, "depth": 12, "heads": 6},
    }


@register
class RectifiedFlow(Generator):
    name = "rectified_flow"
    family = "flow_matching"
    Config = FlowConfig
    default_sampler = "euler"

    def __init__(self, config: FlowConfig):
        super().__init__(config)
        c = config
        if c.t_sampling not in ("logit_normal", "uniform"):
            raise GeneratorError(f"unknown t_sampling {c.t_sampling!r}; use logit_normal or uniform")
        self.net = DiT(c.channels, c.channels, image_size=c.image_size, patch=c.patch, dim=c.dim,
                       depth=c.depth, heads=c.heads, mlp_ratio=c.mlp_ratio, t_scale=1000.0)
        self._pairs: tuple[torch.Tensor, torch.Tensor] | None = None

    # the flow-model protocol of generators.samplers
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, t)

    def draw_t(self, n: int, device) -> torch.Tensor:
        if self.config.t_sampling == "uniform":
            return torch.rand(n, device=device)
        return torch.sigmoid(self.config.ln_mean + self.config.ln_std * torch.randn(n, device=device))

    def loss_at(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.view(-1, *[1] * (x0.dim() - 1))
        x_t = (1 - tt) * x0 + tt * eps                                          # (B, C, H, W)
        return F.mse_loss(self.velocity(x_t, t).float(), eps - x0)              # target: ε - x_0

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        if self._pairs is not None:                                             # reflow: fixed couplings
            eps_all, x0_all = self._pairs
            idx = torch.randint(0, len(x0_all), (batch.shape[0],))
            eps, x0 = eps_all[idx].to(batch.device), x0_all[idx].to(batch.device)
        else:
            x0, eps = batch, torch.randn_like(batch)                           # independent coupling
        return self.loss_at(x0, eps, self.draw_t(x0.shape[0], x0.device))

    # -- reflow ----------------------------------------------------------------------------------
    @torch.no_grad()
    def reflow_pairs(self, n: int, *, generator: torch.Generator, steps: int = 32, batch: int = 256):
        """(ε, ODE(ε)) pairs from the current model: the couplings of one reflow round."""
        eps = torch.randn(n, self.config.channels, self.config.image_size, self.config.image_size, generator=generator)
        x0 = torch.cat([S.heun_sample(self, noise=eps[i:i + batch], steps=max(1, steps // 2)).cpu()
                        for i in range(0, n, batch)])
        return eps, x0

    def set_reflow_pairs(self, pairs: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self._pairs = pairs

    # -- sampling --------------------------------------------------------------------------------
    def samplers(self) -> list[str]:
        return ["euler", "heun"]

    def steps_for(self, sampler: str | None) -> int:
        return self.config.heun_steps if sampler == "heun" else self.config.euler_steps

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, noise=None, shift=None):
        sampler = sampler or self.default_sampler
        if sampler not in ("euler", "heun"):
            raise GeneratorError(f"unknown sampler {sampler!r} for rectified_flow; use euler or heun")
        steps = steps or self.steps_for(sampler)
        if steps < 1:
            raise GeneratorError(f"--steps must be ≥ 1 for {sampler}; got {steps}")
        s = self.config.image_size
        fn = S.euler_sample if sampler == "euler" else S.heun_sample
        x = fn(self, (n, self.config.channels, s, s), generator=generator, steps=steps, noise=noise,
               shift=self.config.shift if shift is None else shift)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def invert(self, x: torch.Tensor, steps: int | None = None, *, method: str = "heun") -> torch.Tensor:
        """Images → noise x_1 by the reverse ODE (t: 0 → 1)."""
        steps = steps or self.steps_for(method)
        return S.flow_invert(self, x.to(self.device), steps, method=method, shift=self.config.shift)

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor) -> dict[str, float]:
        self.eval()
        data = data[torch.linspace(0, len(data) - 1, min(512, len(data))).long()]   # spread over the test photos
        g = torch.Generator().manual_seed(0)
        ts = torch.linspace(0.05, 0.95, 10)
        tot = 0.0
        for i in range(0, len(data), 256):
            x = data[i:i + 256].to(self.device)
            for t in ts:
                eps = torch.randn(x.shape, generator=g).to(self.device)
                tot += self.loss_at(x, eps, torch.full((len(x),), float(t), device=self.device)).item() * len(x)
        noise = torch.randn(64, self.config.channels, self.config.image_size, self.config.image_size, generator=g)
        one = S.euler_sample(self, noise=noise, steps=1)
        many = S.euler_sample(self, noise=noise, steps=32)
        return {"test_loss": tot / (len(data) * len(ts)), "test_items": len(data),
                "straightness_gap_1_vs_32_steps": (one - many).pow(2).mean().item(),
                "t_sampling": self.config.t_sampling}


@register
class Reflow(RectifiedFlow):
    """2-rectified flow (Liu et al. 2023, §2.2): the shipped rectified flow, fine-tuned on its own
    (ε, ODE(ε)) couplings (`forensics bank train reflow`, which starts from the teacher's weights
    and draws the pairs with `teacher.reflow_pairs`). The paths it learns cross less, so they are
    straighter and a few Euler steps land where the teacher's 32 do (see the card's
    `straightness_gap_1_vs_32_steps`); 8 Euler steps by default."""

    name = "reflow"
    teacher: ClassVar[str] = "rectified_flow"

    def steps_for(self, sampler: str | None) -> int:
        return 4 if sampler == "heun" else 8


register_architecture("rectified_flow", "rectified_flow", "euler")
register_architecture("reflow", "reflow", "euler")
