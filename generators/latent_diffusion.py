"""Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models"): a KL-regularized autoencoder compresses 32x32x3 images to 4x8x8 latents (12x fewer
numbers), and a diffusion model (the DDPM/DDIM machinery of `diffusion.py`, v-prediction,
cosine schedule) learns the distribution of the latents.

- Autoencoder: conv encoder → (μ, log σ²) per latent element; z = μ + σ ε; conv decoder. Loss:
  L1 reconstruction + `kl_weight` · KL(q(z|x) ‖ N(0, I)) per latent element (a light KL, as
  the paper's "KL-reg" first stage, without its perceptual and adversarial terms).
- Latent normalization: after the autoencoder is trained, z' = (z - shift) · scale with shift
  and scale (= 1/std) measured on the first denoiser batch, so the denoiser sees latents of unit
  variance (the paper's "rescaling", §4.3.2 / App. G). Both are buffers of the checkpoint.
- One `loss` schedule, two phases, one `forensics bank train ldm` run:
  steps [0, ae_steps): the autoencoder alone; steps ≥ ae_steps: the latent denoiser alone on
  posterior samples of the (now frozen: it gets no gradient) encoder. The training loop's EMA
  then converges to the frozen autoencoder while the denoiser trains.
- Sampling: DDIM (50 steps, default) or ancestral DDPM in latent space, then decode.
  `invert(x)` encodes then runs DDIM inversion in latent space (for Tree-Ring).
- `evaluate`: reconstruction PSNR of the autoencoder (from μ), the latent statistics and the
  latent denoising loss, all on the real test split.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import samplers as S
from .base import Config, Generator, GeneratorError, register, register_architecture
from .diffusion import DiffusionProcess, check_steps, run_diffusion_sampler
from .nn import ResBlock, UNet, _groups


class AutoEncoder(nn.Module):
    """(B, 3, S, S) ⇄ (B, latent_ch, S/2^d, S/2^d), KL-regularized (Gaussian posterior)."""

    def __init__(self, channels: int = 3, ch: int = 32, latent_ch: int = 4, downsample: int = 2):
        super().__init__()
        w = [ch * min(2 ** i, 2) for i in range(downsample + 1)]             # e.g. 32, 64, 64
        enc: list[nn.Module] = [nn.Conv2d(channels, w[0], 3, padding=1)]
        for i in range(downsample):                                          # widen after each stride-2 conv
            enc += [ResBlock(w[i], w[i], None), nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1)]
        enc += [ResBlock(w[-1], w[-1], None), nn.GroupNorm(_groups(w[-1]), w[-1]), nn.SiLU(),
                nn.Conv2d(w[-1], 2 * latent_ch, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_ch, w[-1], 3, padding=1), ResBlock(w[-1], w[-1], None)]
        for i in reversed(range(downsample)):
            dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(w[i + 1], w[i], 3, padding=1),
                    ResBlock(w[i], w[i], None)]
        dec += [nn.GroupNorm(_groups(w[0]), w[0]), nn.SiLU(), nn.Conv2d(w[0], channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)                          # (B, zc, s, s) x2
        return mu, logvar.clamp(-20, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)                                                # (B, 3, S, S), unclipped


@dataclasses.dataclass
class LDMConfig(Config):
    # first stage
    ae_ch: int = 32
    latent_ch: int = 4
    downsample: int = 2
    kl_weight: float = 1e-3
    ae_steps: int = 300
    # latent denoiser
    ch: int = 40
    mults: list = dataclasses.field(default_factory=lambda: [1, 2])
    num_res: int = 1
    attn_res: list = dataclasses.field(default_factory=lambda: [8, 4])
    heads: int = 4
    dropout: float = 0.0
    prediction: str = "v"
    schedule: str = "cosine"
    timesteps: int = 1000
    ancestral_steps: int = 250
    ddim_steps: int = 50
    PRESETS: ClassVar[dict] = {
        "tiny": {"ae_ch": 8, "ae_steps": 3, "ch": 16, "mults": [1], "attn_res": [], "timesteps": 100,
                 "ancestral_steps": 20, "ddim_steps": 10},
        "cpu": {},
        "gpu": {"ae_ch": 64, "ae_steps": 20000, "ch": 128, "mults": [1, 2], "num_res": 2, "dropout": 0.1},
    }


@register
class LatentDiffusion(Generator):
    name = "ldm"
    family = "latent_diffusion"
    Config = LDMConfig
    default_sampler = "ddim"

    def __init__(self, config: LDMConfig):
        super().__init__(config)
        c = config
        if c.image_size % (2 ** c.downsample):
            raise GeneratorError(f"image size {c.image_size} is not divisible by 2^downsample = {2 ** c.downsample}")
        self.latent_size = c.image_size // 2 ** c.downsample
        self.ae = AutoEncoder(c.channels, c.ae_ch, c.latent_ch, c.downsample)
        net = UNet(c.latent_ch, c.latent_ch, ch=c.ch, mults=c.mults, num_res=c.num_res, attn_res=c.attn_res,
                   image_size=self.latent_size, heads=c.heads, dropout=c.dropout)
        self.diffusion = DiffusionProcess(net, prediction=c.prediction, schedule=c.schedule,
                                          timesteps=c.timesteps, clip_x0=None)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("latent_shift", torch.zeros(()))
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("scale_ready", torch.zeros((), dtype=torch.long))

    # -- latents --------------------------------------------------------------------------------
    def to_latent(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Images → normalized latents z' = (z - shift) · scale (z = μ, or a posterior sample)."""
        mu, logvar = self.ae.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return (z - self.latent_shift) * self.latent_scale

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(z / self.latent_scale + self.latent_shift)

    # -- training ------------------------------------------------------------------------------
    def phase(self) -> str:
        return "autoencoder" if int(self.step) < self.config.ae_steps else "denoiser"

    def ae_loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.ae.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = F.l1_loss(self.ae.decode(z), x)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()             # nats per latent element
        return rec + self.config.kl_weight * kl

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        if self.phase() == "autoencoder":
            return self.ae_loss(batch)
        with torch.no_grad():
            mu, logvar = self.ae.encode(batch)
            z = (mu + torch.randn_like(mu) * (0.5 * logvar).exp()).float()
            if not bool(self.scale_ready):
                # 1. the first denoiser batch fixes the normalization (kept in the checkpoint)
                self.latent_shift.fill_(z.mean().item())
                self.latent_scale.fill_(1.0 / max(z.std().item(), 1e-6))
                self.scale_ready.fill_(1)
            z = (z - self.latent_shift) * self.latent_scale                  # 2. unit-variance latents
        return self.diffusion.loss(z)                                        # 3. diffusion loss on them

    def after_step(self, step: int) -> None:
        self.step += 1

    # -- sampling ------------------------------------------------------------------------------
    def samplers(self) -> list[str]:
        return ["ddim", "ddpm"]

    def steps_for(self, sampler: str | None) -> int:
        return self.config.ancestral_steps if sampler == "ddpm" else self.config.ddim_steps

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, noise=None, eta=None):
        sampler = sampler or self.default_sampler
        steps = steps or self.steps_for(sampler)
        check_steps(sampler, steps, self.config.timesteps)
        s = self.latent_size
        z = run_diffusion_sampler(self.diffusion, (n, self.config.latent_ch, s, s), generator=generator,
                                  sampler=sampler, steps=steps, noise=noise, eta=eta)
        return self.from_latent(z).clamp(-1, 1)

    @torch.no_grad()
    def invert(self, x: torch.Tensor, steps: int | None = None, *, refine: int = 10) -> torch.Tensor:
        """Images → latent x_T (encode with μ, then DDIM inversion in latent space; `refine` as in
        DDPM.invert)."""
        steps = steps or self.config.ddim_steps
        check_steps("ddim", steps, self.config.timesteps)
        return S.ddim_invert(self.diffusion, self.to_latent(x.to(self.device)), steps, refine=refine)

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor) -> dict[str, float]:
        self.eval()
        data = data[torch.linspace(0, len(data) - 1, min(1024, len(data))).long()]   # spread over the test photos
        mses, lat = [], []
        for i in range(0, len(data), 256):
            x = data[i:i + 256].to(self.device)
            mu, _ = self.ae.encode(x)
            mses.append((self.ae.decode(mu).clamp(-1, 1) - x).pow(2).flatten(1).mean(1))
            lat.append((mu - self.latent_shift) * self.latent_scale)
        mse = torch.cat(mses)
        z = torch.cat(lat)
        # PSNR on [-1, 1] images: peak-to-peak 2 → 10 log10(4 / MSE), per image then averaged
        psnr = (10 * torch.log10(4.0 / mse.clamp_min(1e-10))).mean().item()
        out = {"ae_psnr_db": psnr, "latent_shift": float(self.latent_shift), "latent_scale": float(self.latent_scale),
               "normalized_latent_std": z.std().item(), "latent_shape": [self.config.latent_ch, self.latent_size, self.latent_size],
               "trained_phase": self.phase(), "train_steps_seen": int(self.step),
               "autoencoder_parameters": sum(p.numel() for p in self.ae.parameters()),
               "denoiser_parameters": sum(p.numel() for p in self.diffusion.parameters())}
        out.update({f"latent_{k}": v for k, v in self.diffusion.test_losses(z[::2]).items()})
        return out


register_architecture("ldm", "ldm", "ddim")
