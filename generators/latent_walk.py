"""Frame-wise synthetic clips: walks through the latent or noise space of the bank's image models.

The cheapest "AI video" in the wild is a morph: keyframe latents of an image generator,
interpolated, every frame decoded on its own (GAN latent walks, Radford et al. 2016 §6.1; the
"latent space walks" of White 2016, who showed slerp keeps Gaussian latents on their typical
shell). Nothing ties one frame's pixels to the next but the latent path, so the temporal signature
differs from camera footage and from a video model: no rigid motion, texture that re-forms rather
than moves.

- Keyframes z_0, z_1, … ~ N(0, I) (times the model's sampling temperature), one every L frames,
  L drawn per clip in [segment_min, segment_max]; frame t uses slerp(z_k, z_{k+1}, u) with
  k = ⌊t/L⌋, u = (t mod L)/L, optionally eased (smoothstep) so the morph pauses on keyframes.
- Latent models decode z directly: VAE decoder, GAN generator, Glow / TARFlow inverse.
- Noise models walk x_T and run their deterministic sampler per frame: DDIM (η = 0) for DDPM and
  latent diffusion (the "DDIM noise interpolation" of Song et al. 2021 §5.3), the Euler ODE for
  rectified flow.

An architecture `<base>_interp` of the bank is the base model's checkpoint + this walk: its corpus
rows carry the base's family and checkpoint hash, architecture `<base>_interp` and sampler
`latent_walk` (or `<sampler>_noise_walk`). `wrap(arch, model)` turns a loaded image model into the
video generator; `forensics generate --arch vae_interp` does that.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar

import torch

from .base import Config, Generator, GeneratorError, register_architecture

# architecture -> (base model name, kind, sampler label). kind: "latent" decodes z, "noise" samples from x_T.
WALKS: dict[str, tuple[str, str, str]] = {
    "vae_interp": ("vae", "latent", "latent_walk"),
    "gan_interp": ("gan", "latent", "latent_walk"),
    "glow_interp": ("glow", "latent", "latent_walk"),
    "tarflow_interp": ("tarflow", "latent", "latent_walk"),
    "ddim_interp": ("ddpm", "noise", "ddim_noise_walk"),
    "ldm_interp": ("ldm", "noise", "ddim_noise_walk"),
    "rf_interp": ("rectified_flow", "noise", "euler_noise_walk"),
}
for _arch, (_model, _kind, _sampler) in WALKS.items():
    register_architecture(_arch, _model, _sampler)


@dataclasses.dataclass
class WalkConfig(Config):
    frames: int = 16
    fps: float = 8.0
    segment_min: int = 4       # frames between keyframes (per clip, uniform in [min, max])
    segment_max: int = 10
    p_ease: float = 0.5        # probability that a clip eases in/out of each keyframe
    noise_steps: int = 20      # sampler steps per frame for noise walks (DDIM / Euler)
    batch: int = 32            # frames rendered per network call
    PRESETS: ClassVar[dict] = {"tiny": {"frames": 6, "segment_min": 2, "segment_max": 3, "noise_steps": 2}}


def slerp(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of rows a, b (N, D) at u (N,) in [0, 1]; linear when a ∥ b."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    cos = ((a / na.clamp(min=1e-12)) * (b / nb.clamp(min=1e-12))).sum(1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)                                                # (N, 1)
    s = torch.sin(omega)
    u = u[:, None]
    lin = (1 - u) * a + u * b
    sl = (torch.sin((1 - u) * omega) * a + torch.sin(u * omega) * b) / s.clamp(min=1e-6)
    return torch.where(s > 1e-4, sl, lin)


class LatentWalk(Generator):
    """A video generator made of an image generator and a path through its latent space."""

    modality = "video"
    Config = WalkConfig

    def __init__(self, arch: str, base_model: Generator, config: WalkConfig | None = None):
        super().__init__(config or WalkConfig())
        if arch not in WALKS:
            raise GeneratorError(f"unknown latent walk {arch!r}; choose from {', '.join(WALKS)}")
        want = WALKS[arch][0]
        if base_model.name != want:
            raise GeneratorError(f"{arch} walks a {want!r} model; the checkpoint holds {base_model.name!r}")
        self.name, self.arch, self.base = arch, arch, base_model
        self.family = base_model.family
        self.kind, self.walk_sampler = WALKS[arch][1], WALKS[arch][2]
        self.default_sampler = self.walk_sampler
        self.config.image_size = base_model.config.image_size
        self._draw, self._render = _spec(base_model, self.kind, self.config)

    def samplers(self) -> list[str]:
        return [self.walk_sampler]

    def steps_for(self, sampler: str | None = None) -> int | None:
        return self.config.noise_steps if self.kind == "noise" else None

    def loss(self, batch):
        raise GeneratorError(f"{self.name} is not trained: it walks the {self.base.name} checkpoint "
                             f"(train that with `forensics bank train {self.base.name}`)")

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, frames: int | None = None) -> torch.Tensor:
        if sampler not in (None, self.walk_sampler):
            raise GeneratorError(f"{self.name} samples with {self.walk_sampler}; got sampler {sampler!r}")
        if steps is not None and self.kind == "latent":
            raise GeneratorError(f"{self.name} decodes each frame in one pass; omit --steps (got {steps})")
        if steps is not None and steps < 1:
            raise GeneratorError(f"--steps must be ≥ 1; got {steps}")
        c = self.config
        T = c.frames if frames is None else int(frames)
        if T < 1:
            raise GeneratorError(f"--frames must be ≥ 1; got {T}")
        clips = []
        for _ in range(n):
            L = int(torch.randint(c.segment_min, c.segment_max + 1, (1,), generator=generator))
            ease = bool(torch.rand(1, generator=generator) < c.p_ease)
            keys = self._draw((T - 1) // L + 2, generator)                    # (K, D): frame T-1 needs k+1
            t = torch.arange(T, dtype=torch.float32)
            k = (t // L).long()
            u = (t - k * L) / L                                               # (T,) in [0, 1)
            if ease:
                u = u * u * (3 - 2 * u)                                       # smoothstep
            z = slerp(keys[k], keys[k + 1], u)                                # (T, D)
            out = [self._render(z[i:i + c.batch], steps) for i in range(0, T, c.batch)]
            clips.append(torch.cat(out).clamp(-1, 1))                         # (T, 3, S, S)
        return torch.stack(clips)                                             # (n, T, 3, S, S)


def _spec(m: Generator, kind: str, cfg: WalkConfig) -> tuple[Callable, Callable]:
    """(draw(K, generator) → (K, D) keyframes, render((N, D), steps) → (N, 3, S, S)) for a model."""
    dev = m.device
    name = m.name
    if name in ("vae", "gan"):
        shapes = [(m.config.z_dim,)]
        temp = 1.0
        dec = m.decode if name == "vae" else m.G
    elif name == "glow":
        shapes = list(m.shapes)
        temp = m.config.sample_temperature
        dec = lambda eps: m.decode(eps)                                      # noqa: E731
    elif name == "tarflow":
        shapes = [(m.n, m.d)]
        temp = m.config.sample_temperature

        def dec(z):
            x = m.decode(z[0])
            return m.denoise(x) if m.config.noise_std > 0 else x
    elif kind == "noise" and name in ("ddpm", "ldm", "rectified_flow"):
        s = m.latent_size if name == "ldm" else m.config.image_size
        ch = m.config.latent_ch if name == "ldm" else m.config.channels
        shapes = [(ch, s, s)]
        temp = 1.0
        sampler = "euler" if name == "rectified_flow" else "ddim"
        dummy = torch.Generator().manual_seed(0)                             # deterministic samplers ignore it
        dec = None

        def render(z, steps):
            noise = z.view(len(z), *shapes[0]).to(dev)
            return m.sample(len(z), generator=dummy, steps=steps or cfg.noise_steps, sampler=sampler, noise=noise)
    else:
        raise GeneratorError(f"no latent walk for a {name!r} model")
    sizes = [math.prod(s) for s in shapes]

    def draw(k: int, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([torch.randn(k, d, generator=generator) for d in sizes], 1) * temp

    if dec is not None:
        def render(z, steps):                                                # noqa: F811
            parts = torch.split(z.to(dev), sizes, dim=1)
            lat = [p.reshape(len(z), *s) for p, s in zip(parts, shapes)]
            return dec(lat) if name in ("glow", "tarflow") else dec(lat[0])
    return draw, render


def wrap(arch: str, model: Generator, **overrides) -> Generator:
    """The video generator of architecture `arch` over a loaded model (unchanged when `arch` is
    not a latent walk)."""
    if arch not in WALKS:
        return model
    return LatentWalk(arch, model, WalkConfig(**overrides)).eval()
