"""Shared neural-network blocks of the generator bank.

- Timestep embeddings: sinusoidal features (Vaswani et al. 2017, as used by Ho et al. 2020)
  followed by a two-layer MLP.
- A small UNet (Ronneberger et al. 2015, in the DDPM form of Ho et al. 2020 / Nichol & Dhariwal
  2021): residual blocks with GroupNorm and a scale-shift timestep conditioning, self-attention at
  the low resolutions, skip connections between the down and up paths.
- A small DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"): patch
  embedding with fixed 2-D sine-cosine positions, transformer blocks conditioned by adaLN-zero
  (the conditioning regresses shift, scale and a gate per sub-block; the gates start at zero, so
  every block starts as the identity), a final adaLN layer and un-patchify.

Blocks take images (B, C, H, W) or tokens (B, N, D) and a conditioning vector (B, E).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


# -- embeddings ------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (B,) timesteps (any real scale) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]                              # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)          # (B, 2 * half)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedder(nn.Module):
    """t → sinusoidal features of (t * scale) → MLP. Use scale=1 for integer diffusion steps and
    scale=1000 for continuous t in [0, 1]."""

    def __init__(self, dim: int, freq_dim: int = 64, scale: float = 1.0):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t * self.scale, self.freq_dim))   # (B, dim)


def zero_init(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def _groups(c: int, max_groups: int = 8) -> int:
    g = min(max_groups, c)
    while c % g:
        g -= 1
    return g


# -- UNet -------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, then norm modulated by the embedding (h * (1 + s) + b) → SiLU →
    dropout → conv (zero-initialised), plus a 1x1 skip when the width changes. With
    emb_dim=None the block is unconditioned (autoencoders)."""

    def __init__(self, cin: int, cout: int, emb_dim: int | None, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))                       # (B, cout, H, W)
        if self.emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, cout, 1, 1) x2
            h = h * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention2d(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, residual."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention width {ch} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        # The 1x1 convolutions run as matmuls on tokens (same weights, same state-dict keys):
        # q, k, v then have a unit-stride last dimension, which the fused (flash) SDPA kernels
        # need; with the channel-major layout PyTorch fell back to the unfused math path on CPU.
        b, c, h, w = x.shape
        tok = self.norm(x).flatten(2).transpose(1, 2)                        # (B, HW, C)
        qkv = F.linear(tok, self.qkv.weight.view(3 * c, c), self.qkv.bias)   # (B, HW, 3C)
        q, k, v = qkv.view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, heads, HW, d) x3
        a = F.scaled_dot_product_attention(q, k, v)                          # (B, heads, HW, d)
        out = F.linear(a.transpose(1, 2).reshape(b, h * w, c), self.proj.weight.view(c, c), self.proj.bias)
        return x + out.transpose(1, 2).view(b, c, h, w)                      # (B, C, H, W)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)                                                  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class _Stage(nn.Module):
    """A ResBlock optionally followed by attention; both see the embedding."""

    def __init__(self, cin: int, cout: int, emb_dim: int, attn: bool, heads: int, dropout: float):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, dropout)
        self.attn = Attention2d(cout, heads) if attn else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """ε/v/x0 network: (x_t (B, in_ch, S, S), t (B,)) → (B, out_ch, S, S).

    `mults` sets the width of each resolution level (ch * m); `attn_res` lists the resolutions
    (side of the feature map) that get self-attention; the middle always has attention.
    `unshuffle` = r > 1 folds r x r pixels into channels first (space-to-depth stem, as in
    Hoogeboom et al. 2023) and unfolds them at the end: the network then runs at S/r, which
    is what makes a UNet cheap enough to train on two CPU cores.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ch: int = 32, mults: Sequence[int] = (1, 2, 2),
                 num_res: int = 1, attn_res: Sequence[int] = (8,), image_size: int = 32, heads: int = 4,
                 dropout: float = 0.0, t_scale: float = 1.0, unshuffle: int = 1):
        super().__init__()
        if image_size % unshuffle:
            raise ValueError(f"image size {image_size} is not divisible by unshuffle={unshuffle}")
        emb_dim = 4 * ch
        self.unshuffle = unshuffle
        self.t_embed = TimestepEmbedder(emb_dim, freq_dim=ch, scale=t_scale)
        self.inp = nn.Conv2d(in_ch * unshuffle ** 2, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c, res = [ch], ch, image_size // unshuffle
        for i, m in enumerate(mults):
            for _ in range(num_res):
                self.down.append(_Stage(c, ch * m, emb_dim, res in attn_res, heads, dropout))
                c = ch * m
                skips.append(c)
            if i < len(mults) - 1:
                self.down.append(Downsample(c))
                skips.append(c)
                res //= 2
        self.mid1 = ResBlock(c, c, emb_dim, dropout)
        self.mid_attn = Attention2d(c, heads)
        self.mid2 = ResBlock(c, c, emb_dim, dropout)
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(num_res + 1):
                self.up.append(_Stage(c + skips.pop(), ch * m, emb_dim, res in attn_res, heads, dropout))
                c = ch * m
            if i > 0:
                self.up.append(Upsample(c))
                res *= 2
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(),
                                 zero_init(nn.Conv2d(c, out_ch * unshuffle ** 2, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.t_embed(t)                                                # (B, 4ch)
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)                         # (B, C r², S/r, S/r)
        h = self.inp(x)
        hs = [h]
        for blk in self.down:
            h = blk(h, emb)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blk in self.up:
            h = blk(h, emb) if isinstance(blk, Upsample) else blk(torch.cat([h, hs.pop()], dim=1), emb)
        h = self.out(h)
        return F.pixel_shuffle(h, self.unshuffle) if self.unshuffle > 1 else h


# -- DiT --------------------------------------------------------------------------------------
def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions for a grid x grid of tokens → (grid*grid, dim)."""
    if dim % 4:
        raise ValueError(f"DiT width {dim} must be divisible by 4 for 2-D sine-cosine positions")
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float32) / q)        # (dim/4,)
    out = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        a = pos[:, None] * omega[None]                                       # (N, dim/4)
        out += [torch.sin(a), torch.cos(a)]
    return torch.cat(out, dim=1)                                             # (N, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class PatchEmbed(nn.Module):
    """(B, C, S, S) → (B, (S/p)^2, dim) by a p x p stride-p convolution."""

    def __init__(self, in_ch: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DiTBlock(nn.Module):
    """x += g1 * Attn(modulate(LN(x), b1, s1)); x += g2 * MLP(modulate(LN(x), b2, s2)),
    with (b1, s1, g1, b2, s2, g2) = Linear(SiLU(c)) initialised at zero (adaLN-zero)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"DiT width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, 6 * dim)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b1, s1, g1, b2, s2, g2 = self.ada(c).chunk(6, dim=-1)               # (B, dim) x6
        h = modulate(self.norm1(x), b1, s1)                                   # (B, N, dim)
        bsz, n, d = h.shape
        q, k, v = self.qkv(h).reshape(bsz, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bsz, n, d)
        x = x + g1[:, None] * self.proj(a)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), b2, s2))


class DiT(nn.Module):
    """(x (B, C, S, S), t (B,)) → (B, out_ch, S, S) with a transformer over p x p patches."""

    def __init__(self, in_ch: int = 3, out_ch: int | None = None, image_size: int = 32, patch: int = 4,
                 dim: int = 128, depth: int = 6, heads: int = 4, mlp_ratio: float = 4.0, t_scale: float = 1000.0):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not divisible by the patch size {patch}")
        self.out_ch, self.patch, self.grid = out_ch or in_ch, patch, image_size // patch
        self.embed = PatchEmbed(in_ch, dim, patch)
        self.register_buffer("pos", sincos_pos_embed_2d(dim, self.grid)[None], persistent=False)
        self.t_embed = TimestepEmbedder(dim, freq_dim=min(256, dim), scale=t_scale)
        self.blocks = nn.ModuleList([DiTBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, 2 * dim)))
        self.head = zero_init(nn.Linear(dim, patch * patch * self.out_ch))
        self._init()

    def _init(self) -> None:
        for blk in self.blocks:
            for lin in (blk.qkv, blk.proj, blk.mlp[0], blk.mlp[2]):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
        w = self.embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.embed.proj.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, p, g = x.shape[0], self.patch, self.grid
        h = self.embed(x) + self.pos                                          # (B, N, dim)
        c = self.t_embed(t)                                                   # (B, dim)
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.ada(c).chunk(2, dim=-1)
        h = self.head(modulate(self.norm(h), shift, scale))                  # (B, N, p*p*out)
        h = h.reshape(b, g, g, p, p, self.out_ch).permute(0, 5, 1, 3, 2, 4)  # (B, out, g, p, g, p)
        return h.reshape(b, self.out_ch, g * p, g * p)
