"""Video diffusion: a space-time factorized UNet denoising whole clips, extended autoregressively.

- Clips x_0 (B, T, 3, H, W) in [-1, 1] (default 8 frames of 32x32 at 8 fps); the forward process
  of `diffusion.py` (x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, cosine schedule, v-prediction, Salimans & Ho
  2022), one t per clip; the loss is Min-SNR-γ weighted (Hang et al. 2023), which converges
  several times faster than the plain MSE, and CPU training runs are short.
- Network: the factorized ("pseudo-3D") UNet of Video Diffusion Models (Ho et al. 2022, §3:
  space-only 2-D blocks per frame, then attention over time at each spatial position) and of
  Make-A-Video (Singer et al. 2022, §3.2: a 1-D temporal convolution after each 2-D spatial
  convolution). Each block here: ResBlock per frame (nn.ResBlock) → temporal conv (kernel 3 over
  T at each pixel) → spatial attention per frame and temporal attention per pixel at the low
  resolutions. The temporal layers are zero-initialized residuals, so the network starts as a
  per-frame image denoiser and learns motion on top.
- Conditioning on given frames (for extension): input channels are [x_t, c ⊙ m, m] per frame,
  with m = 1 on the frames that are given and c their clean pixels (the "reconstruction-guided"
  alternative of Ho et al. 2022 §3.1 would need gradients; conditioning by concatenation is what
  their follow-ups and Imagen Video's frame-conditioned models do). Training drops the condition
  half the time (m = 0), so one network samples clips from scratch and continues clips; the loss
  counts only the frames that were not given.
- Autoregressive extension: sample T frames, then repeatedly condition on the last `context`
  frames and keep the T - context new ones, until `frames` are made (so `--frames 32` works with
  a T = 8 model). Sampling uses the shared DDPM / DDIM samplers (generators/samplers.py).
- Second stage, temporal super-resolution (the cascades of Imagen Video §2.1 and Make-A-Video's
  frame interpolation network §3.3: a low-frame-rate clip first, then frames in between): the
  same network, conditioned on frames given at the even slots of a window, denoises the odd
  slots. Training draws that mask for a `p_interp` share of the conditioned clips. Samplers
  `ddim+tsr` / `ddpm+tsr` (architecture `video_diffusion_tsr`) make a base clip of ⌈(F+1)/2⌉
  frames, then fill in between its frames: F frames at twice the frame rate.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import samplers as S
from .base import Config, Generator, GeneratorError, register, register_architecture
from .diffusion import check_steps
from .nn import Attention2d, Downsample, ResBlock, TimestepEmbedder, Upsample, _groups, timestep_embedding, zero_init


# -- temporal layers ---------------------------------------------------------------------------
def _to_time(h: torch.Tensor, T: int) -> torch.Tensor:
    """(B*T, C, H, W) → (B*H*W, C, T): one sequence over time per spatial position."""
    bt, c, hh, ww = h.shape
    return h.view(bt // T, T, c, hh, ww).permute(0, 3, 4, 2, 1).reshape(-1, c, T)


def _from_time(x: torch.Tensor, T: int, hh: int, ww: int) -> torch.Tensor:
    """(B*H*W, C, T) → (B*T, C, H, W)."""
    n, c, _ = x.shape
    b = n // (hh * ww)
    return x.view(b, hh, ww, c, T).permute(0, 4, 3, 1, 2).reshape(b * T, c, hh, ww)


class TemporalConv(nn.Module):
    """h + Conv1d_k3(SiLU(GN(h))) along time at every pixel (Make-A-Video's pseudo-3D conv)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.conv = zero_init(nn.Conv1d(ch, ch, 3, padding=1, padding_mode="replicate"))

    def forward(self, h: torch.Tensor, T: int) -> torch.Tensor:
        x = _to_time(h, T)                                                  # (B*H*W, C, T)
        y = self.conv(F.silu(self.norm(x)))
        return h + _from_time(y, T, h.shape[2], h.shape[3])


class TemporalAttention(nn.Module):
    """Self-attention over the T frames at each pixel, with sinusoidal frame positions."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention width {ch} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv1d(ch, ch, 1))

    def forward(self, h: torch.Tensor, T: int) -> torch.Tensor:
        x = _to_time(h, T)                                                  # (N, C, T)
        n, c, _ = x.shape
        pos = timestep_embedding(torch.arange(T, device=x.device), c).T     # (C, T)
        qkv = self.qkv(self.norm(x) + pos[None].to(x.dtype)).reshape(n, 3, self.heads, c // self.heads, T)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                           # (N, heads, T, d) x3
        a = F.scaled_dot_product_attention(q, k, v)                         # (N, heads, T, d)
        y = self.proj(a.transpose(-1, -2).reshape(n, c, T))
        return h + _from_time(y, T, h.shape[2], h.shape[3])


class STBlock(nn.Module):
    """Spatial ResBlock (per frame) → temporal conv → [spatial attention → temporal attention]."""

    def __init__(self, cin: int, cout: int, emb_dim: int, attn: bool, heads: int, dropout: float):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, dropout)
        self.tconv = TemporalConv(cout)
        self.sattn = Attention2d(cout, heads) if attn else None
        self.tattn = TemporalAttention(cout, heads) if attn else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor, T: int) -> torch.Tensor:
        h = self.tconv(self.res(h, emb), T)
        if self.sattn is not None:
            h = self.tattn(self.sattn(h), T)
        return h


class SpaceTimeUNet(nn.Module):
    """(x (B, T, C_in, S, S), t (B,)) → (B, T, C_out, S, S); frames are folded into the batch for
    the 2-D layers and unfolded for the temporal ones."""

    def __init__(self, in_ch: int, out_ch: int, ch: int = 32, mults=(1, 2), num_res: int = 1,
                 attn_res=(8,), image_size: int = 32, heads: int = 4, dropout: float = 0.0, unshuffle: int = 2):
        super().__init__()
        if image_size % unshuffle:
            raise ValueError(f"image size {image_size} is not divisible by unshuffle={unshuffle}")
        emb_dim = 4 * ch
        self.r = unshuffle
        self.t_embed = TimestepEmbedder(emb_dim, freq_dim=ch)
        self.inp = nn.Conv2d(in_ch * unshuffle ** 2, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c, res = [ch], ch, image_size // unshuffle
        for i, m in enumerate(mults):
            for _ in range(num_res):
                self.down.append(STBlock(c, ch * m, emb_dim, res in attn_res, heads, dropout))
                c = ch * m
                skips.append(c)
            if i < len(mults) - 1:
                self.down.append(Downsample(c))
                skips.append(c)
                res //= 2
        self.mid1 = STBlock(c, c, emb_dim, True, heads, dropout)
        self.mid2 = STBlock(c, c, emb_dim, False, heads, dropout)
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(num_res + 1):
                self.up.append(STBlock(c + skips.pop(), ch * m, emb_dim, res in attn_res, heads, dropout))
                c = ch * m
            if i > 0:
                self.up.append(Upsample(c))
                res *= 2
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(),
                                 zero_init(nn.Conv2d(c, out_ch * unshuffle ** 2, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, T = x.shape[:2]
        emb = self.t_embed(t).repeat_interleave(T, dim=0)                   # (B*T, E): one t per clip
        h = x.reshape(b * T, *x.shape[2:])                                  # (B*T, C_in, S, S)
        if self.r > 1:
            h = F.pixel_unshuffle(h, self.r)                                # (B*T, C_in r², S/r, S/r)
        h = self.inp(h)
        hs = [h]
        for blk in self.down:
            h = blk(h, emb) if isinstance(blk, Downsample) else blk(h, emb, T)
            hs.append(h)
        h = self.mid2(self.mid1(h, emb, T), emb, T)
        for blk in self.up:
            h = blk(h, emb) if isinstance(blk, Upsample) else blk(torch.cat([h, hs.pop()], 1), emb, T)
        h = self.out(h)
        if self.r > 1:
            h = F.pixel_shuffle(h, self.r)
        return h.view(b, T, *h.shape[1:])                                   # (B, T, C_out, S, S)


# -- the model ---------------------------------------------------------------------------------
@dataclasses.dataclass
class VideoDiffusionConfig(Config):
    frames: int = 8            # T of one denoised chunk
    fps: float = 8.0
    context: int = 4           # frames conditioned on when extending a clip
    p_cond: float = 0.5        # training: probability that a clip is conditioned on given frames
    p_interp: float = 0.5      # of those, the share given its even frames (temporal super-resolution)
                               # rather than its first `context` frames (extension)
    ch: int = 32
    mults: list = dataclasses.field(default_factory=lambda: [1, 2])
    num_res: int = 1
    attn_res: list = dataclasses.field(default_factory=lambda: [8])
    unshuffle: int = 2
    heads: int = 4
    dropout: float = 0.0
    schedule: str = "cosine"
    timesteps: int = 1000
    ancestral_steps: int = 100
    ddim_steps: int = 50
    min_snr_gamma: float | None = 5.0   # loss weight min(SNR, γ)/(SNR + 1) (Hang et al. 2023); None: plain MSE
    PRESETS: ClassVar[dict] = {
        "tiny": {"frames": 4, "context": 2, "ch": 8, "mults": [1, 2], "attn_res": [8], "heads": 2,
                 "timesteps": 50, "ancestral_steps": 5, "ddim_steps": 4},
        "cpu": {},
        "gpu": {"frames": 16, "context": 8, "ch": 96, "mults": [1, 2, 2], "num_res": 2, "attn_res": [16, 8],
                "unshuffle": 1, "dropout": 0.1, "ancestral_steps": 250},
    }


class _Denoiser:
    """The diffusion-denoiser protocol of generators.samplers for one conditioning (c, m)."""

    def __init__(self, model: "VideoDiffusion", cond: torch.Tensor, mask: torch.Tensor):
        self.model, self.cond, self.mask = model, cond, mask
        self.alphas_cumprod = model.alphas_cumprod
        self.clip_x0 = 1.0

    def parameters(self):
        return self.model.parameters()

    def predict_eps_x0(self, x_t: torch.Tensor, t: torch.Tensor):
        return self.model.predict_eps_x0(x_t, t, self.cond, self.mask)


@register
class VideoDiffusion(Generator):
    name = "video_diffusion"
    family = "video_diffusion"
    modality = "video"
    Config = VideoDiffusionConfig
    default_sampler = "ddim"

    def __init__(self, config: VideoDiffusionConfig):
        super().__init__(config)
        c = config
        if not 1 <= c.context < c.frames:
            raise GeneratorError(f"context must be between 1 and frames-1 ({c.frames - 1}); got {c.context}")
        self.net = SpaceTimeUNet(2 * c.channels + 1, c.channels, ch=c.ch, mults=c.mults, num_res=c.num_res,
                                 attn_res=c.attn_res, image_size=c.image_size, heads=c.heads,
                                 dropout=c.dropout, unshuffle=c.unshuffle)
        self.register_buffer("alphas_cumprod", S.alphas_cumprod(c.schedule, c.timesteps).float(), persistent=False)

    # -- denoiser ----------------------------------------------------------------------------
    def _coefs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        return ab.sqrt(), (1 - ab).sqrt()                                   # √ᾱ_t, √(1-ᾱ_t)

    def _v(self, x_t, t, cond, mask) -> torch.Tensor:
        m = mask.to(x_t.dtype).expand(*x_t.shape[:2], 1, *x_t.shape[3:])     # (B, T, 1, S, S)
        return self.net(torch.cat([x_t, cond * m, m], 2), t).float()        # v̂ (B, T, 3, S, S)

    def predict_eps_x0(self, x_t, t, cond, mask):
        a, s = self._coefs(t)
        v = self._v(x_t, t, cond, mask)
        return s * x_t + a * v, a * x_t - s * v                             # ε̂, x̂_0 from v̂

    def _cond_mask(self, x0: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, 1, 1, 1): for the clips drawn to be conditioned, 1 on the first `context`
        frames (extension) or, for a `p_interp` share of them, on the even frames (in-betweening)."""
        b, T = x0.shape[:2]
        use = (torch.rand(b, generator=gen) < self.config.p_cond).to(x0.device)
        interp = (torch.rand(b, generator=gen) < self.config.p_interp).to(x0.device)
        slots = torch.arange(T, device=x0.device)
        given = torch.where(interp[:, None], (slots % 2 == 0)[None], (slots < self.config.context)[None])
        return (use[:, None] & given).float().view(b, T, 1, 1, 1)

    def loss_at(self, x0, t, eps, mask, weighted: bool = True) -> torch.Tensor:
        a, s = self._coefs(t)
        x_t = a * x0 + s * eps                                              # (B, T, 3, S, S)
        target = a * eps - s * x0                                           # v
        err = (self._v(x_t, t, x0, mask) - target).pow(2) * (1 - mask)      # given frames do not count
        if weighted and self.config.min_snr_gamma:
            # Min-SNR-γ for v-prediction: the v-MSE equals (SNR + 1) x the x0-MSE, so weighting it by
            # min(SNR, γ)/(SNR + 1) gives x0-MSE weights min(SNR, γ): low-noise steps, which are
            # easy and pull against the others, stop dominating (Hang et al. 2023, eq. 8).
            snr = (a / s).pow(2)
            err = err * (snr.clamp(max=self.config.min_snr_gamma) / (snr + 1))
        return err.sum() / ((1 - mask).sum() * x0[0, 0].numel()).clamp(min=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() != 5:
            raise GeneratorError(f"video_diffusion trains on clips (B, T, 3, H, W); got shape {tuple(batch.shape)}")
        batch = batch[:, :self.config.frames]
        t = torch.randint(0, self.config.timesteps, (batch.shape[0],), device=batch.device)
        eps = torch.randn_like(batch)
        return self.loss_at(batch, t, eps, self._cond_mask(batch))

    # -- sampling ----------------------------------------------------------------------------
    def samplers(self) -> list[str]:
        return ["ddim", "ddpm", "ddim+tsr", "ddpm+tsr"]

    @staticmethod
    def _split(sampler: str) -> tuple[str, bool]:
        """`ddim+tsr` → ("ddim", True): the diffusion sampler and whether the clip is upsampled in time."""
        base, _, stage = sampler.partition("+")
        if base not in ("ddim", "ddpm") or stage not in ("", "tsr"):
            raise GeneratorError(f"unknown sampler {sampler!r} for video_diffusion; use ddim, ddpm, ddim+tsr or ddpm+tsr")
        return base, stage == "tsr"

    def steps_for(self, sampler: str | None) -> int:
        base, _ = self._split(sampler or self.default_sampler)
        return self.config.ancestral_steps if base == "ddpm" else self.config.ddim_steps

    def fps_for(self, sampler: str | None) -> float:
        """Frame rate of the clips a sampler makes (temporal super-resolution doubles it)."""
        _, tsr = self._split(sampler or self.default_sampler)
        return self.config.fps * (2 if tsr else 1)

    def _denoise(self, full: torch.Tensor, mask: torch.Tensor, *, generator, sampler, steps, eta) -> torch.Tensor:
        """One window (n, T, 3, S, S): frames where mask = 1 are given (their pixels in `full`) and
        kept; the others are sampled."""
        den = _Denoiser(self, full, mask)
        if sampler == "ddpm":
            x = S.ddpm_sample(den, full.shape, generator=generator, steps=steps)
        elif sampler == "ddim":
            x = S.ddim_sample(den, full.shape, generator=generator, steps=steps, eta=eta or 0.0)
        else:
            raise GeneratorError(f"unknown sampler {sampler!r} for video_diffusion; use ddim or ddpm")
        keep = mask.bool().expand_as(x)
        return torch.where(keep, full, x.clamp(-1, 1))

    def _chunk(self, n, cond, k, *, generator, sampler, steps, eta):
        c, T, s = self.config, self.config.frames, self.config.image_size
        full = torch.zeros((n, T, c.channels, s, s), device=self.device)
        mask = torch.zeros(n, T, 1, 1, 1, device=self.device)
        if k:
            full[:, :k] = cond
            mask[:, :k] = 1
        return self._denoise(full, mask, generator=generator, sampler=sampler, steps=steps, eta=eta)

    @torch.no_grad()
    def interpolate(self, clip: torch.Tensor, *, generator, steps=None, sampler=None,
                    eta: float | None = None) -> torch.Tensor:
        """Temporal super-resolution: clips (n, t ≥ 2, 3, S, S) → (n, 2t - 1, …), a new frame
        sampled between every two given ones. Windows of T slots hold ⌈T/2⌉ given frames at the
        even slots; consecutive windows share a given frame, so every gap is filled once, with
        both of its neighbours (and more context around them) in view."""
        sampler = sampler or self.default_sampler
        steps = steps or self.steps_for(sampler)
        check_steps(sampler, steps, self.config.timesteps)
        n, t = clip.shape[:2]
        if t < 2:
            raise GeneratorError(f"a clip to upsample in time needs at least 2 frames; got {t}")
        c, T, s = self.config, self.config.frames, self.config.image_size
        g = (T + 1) // 2                                                    # given frames per window
        clip = clip.to(self.device).float()
        out = torch.zeros((n, 2 * t - 1, c.channels, s, s), device=self.device)
        out[:, ::2] = clip
        j = 0
        while True:
            j = max(0, min(j, t - g))
            k = min(g, t - j)                                               # given frames in this window
            full = torch.zeros((n, T, c.channels, s, s), device=self.device)
            mask = torch.zeros(n, T, 1, 1, 1, device=self.device)
            full[:, 0:2 * k:2] = clip[:, j:j + k]
            mask[:, 0:2 * k:2] = 1
            x = self._denoise(full, mask, generator=generator, sampler=sampler, steps=steps, eta=eta)
            out[:, 2 * j + 1:2 * (j + k) - 1:2] = x[:, 1:2 * k - 1:2]        # the gaps between given frames
            if j + k >= t:
                return out
            j += g - 1

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, frames: int | None = None,
               eta: float | None = None, context: int | None = None) -> torch.Tensor:
        """n clips (n, frames, 3, S, S): one chunk of T frames, then chunks conditioned on the
        last `context` frames, each adding T - context new frames. With a `+tsr` sampler, a clip
        of ⌈(frames+1)/2⌉ frames made so, then upsampled in time (default frames: 2T)."""
        base, tsr = self._split(sampler or self.default_sampler)
        steps = steps or self.steps_for(base)
        check_steps(base, steps, self.config.timesteps)
        T = self.config.frames
        frames = (2 * T if tsr else T) if frames is None else int(frames)
        k = self.config.context if context is None else int(context)
        if frames < 1:
            raise GeneratorError(f"--frames must be ≥ 1; got {frames}")
        if not 1 <= k < T:
            raise GeneratorError(f"context must be between 1 and {T - 1}; got {k}")
        want = max(2, (frames + 2) // 2) if tsr else frames                  # 2·want - 1 ≥ frames
        clip = self._chunk(n, None, 0, generator=generator, sampler=base, steps=steps, eta=eta)
        while clip.shape[1] < want:
            nxt = self._chunk(n, clip[:, -k:], k, generator=generator, sampler=base, steps=steps, eta=eta)
            clip = torch.cat([clip, nxt[:, k:]], 1)
        clip = clip[:, :want]
        if tsr:
            clip = self.interpolate(clip, generator=generator, steps=steps, sampler=base, eta=eta)
        return clip[:, :frames]

    def extend(self, clip: torch.Tensor, frames: int, *, generator, steps=None, sampler=None) -> torch.Tensor:
        """Continue given clips (n, t ≥ context, 3, S, S) to `frames` frames in total."""
        sampler = sampler or self.default_sampler
        steps = steps or self.steps_for(sampler)
        k = self.config.context
        if clip.shape[1] < k:
            raise GeneratorError(f"a clip to extend needs at least {k} frames; got {clip.shape[1]}")
        clip = clip.to(self.device).float()
        while clip.shape[1] < frames:
            nxt = self._chunk(clip.shape[0], clip[:, -k:], k, generator=generator, sampler=sampler,
                              steps=steps, eta=None)
            clip = torch.cat([clip, nxt[:, k:]], 1)
        return clip[:, :frames]

    # -- card metrics ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: torch.Tensor, levels: int = 6, seed: int = 0, batch: int = 16) -> dict:
        """v-MSE on real test clips at `levels` evenly spaced t (seeded), unconditioned and with
        the first `context` frames given, and the ε-MSE of the former."""
        self.eval()
        data = data[torch.linspace(0, len(data) - 1, min(48, len(data))).long()][:, :self.config.frames]
        g = torch.Generator().manual_seed(seed)
        ts = torch.linspace(0, self.config.timesteps - 1, levels).round().long()
        tot = {"test_loss": 0.0, "test_loss_conditioned": 0.0, "test_loss_interp": 0.0, "test_eps_mse": 0.0}
        count = 0
        for i in range(0, len(data), batch):
            x = data[i:i + batch].to(self.device).float()
            b, T = x.shape[:2]
            for t in ts:
                tt = torch.full((b,), int(t), device=x.device)
                eps = torch.randn(x.shape, generator=g).to(x.device)
                none = torch.zeros(b, T, 1, 1, 1, device=x.device)
                given = (torch.arange(T, device=x.device) < self.config.context).float().view(1, T, 1, 1, 1).expand(b, -1, -1, -1, -1)
                tot["test_loss"] += self.loss_at(x, tt, eps, none, weighted=False).item() * b
                tot["test_loss_conditioned"] += self.loss_at(x, tt, eps, given, weighted=False).item() * b
                even = (torch.arange(T, device=x.device) % 2 == 0).float().view(1, T, 1, 1, 1).expand(b, -1, -1, -1, -1)
                tot["test_loss_interp"] += self.loss_at(x, tt, eps, even, weighted=False).item() * b
                a, s = self._coefs(tt)
                eps_hat, _ = self.predict_eps_x0(a * x + s * eps, tt, x, none)
                tot["test_eps_mse"] += F.mse_loss(eps_hat, eps).item() * b
                count += b
        out = {k: v / max(1, count) for k, v in tot.items()}
        out.update({"test_clips": len(data), "frames": self.config.frames, "timesteps": self.config.timesteps})
        return out


register_architecture("video_diffusion", "video_diffusion", "ddim")
register_architecture("video_diffusion_tsr", "video_diffusion", "ddim+tsr")
