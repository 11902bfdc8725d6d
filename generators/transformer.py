"""A small causal (decoder-only) transformer with a key/value cache, shared by the sequence models
of the bank (TARFlow's autoregressive flow blocks, the VQ-VAE's code prior).

- Pre-LayerNorm blocks (Xiong et al. 2020): x += Attn(LN(x)); x += MLP(LN(x)), GELU MLP.
- Causal multi-head self-attention (Vaswani et al. 2017): position i attends to positions <= i.
- Incremental decoding: pass a `KVCache` and feed the new tokens only; keys and values of the
  earlier tokens are kept, so generating N tokens costs O(N) block evaluations, not O(N^2).
  `forward(x)` on a whole sequence and token-by-token decoding give the same outputs.

Positions are the caller's business (learned embeddings added before the call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Per-layer keys and values of the tokens seen so far: a list of (k, v), each (B, heads, t, d)."""

    def __init__(self, depth: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * depth

    @property
    def length(self) -> int:
        kv = self.layers[0]
        return 0 if kv is None else kv[0].shape[2]


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, n, dh) x3
        past = 0
        if cache is not None:
            prev = cache.layers[layer]
            if prev is not None:
                past = prev[0].shape[2]
                k, v = torch.cat([prev[0], k], 2), torch.cat([prev[1], v], 2)        # (B, h, past+n, dh)
            cache.layers[layer] = (k, v)
        if past == 0:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif n == 1:
            a = F.scaled_dot_product_attention(q, k, v)                              # sees every cached key
        else:
            # query i (absolute position past + i) may see keys j <= past + i
            mask = torch.ones(n, past + n, dtype=torch.bool, device=x.device).tril(past)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(a.transpose(1, 2).reshape(b, n, d))                         # (B, n, D)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class CausalTransformer(nn.Module):
    """(B, n, D) → (B, n, D); output i depends on inputs 0..i only (plus the cache's tokens)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.depth = depth
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        for blk in self.blocks:
            for lin in (blk.attn.qkv, blk.attn.proj, blk.mlp[0], blk.mlp[2]):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
            # GPT-2: scale the residual projections by depth
            nn.init.normal_(blk.attn.proj.weight, std=0.02 / (2 * depth) ** 0.5)
            nn.init.normal_(blk.mlp[2].weight, std=0.02 / (2 * depth) ** 0.5)

    def new_cache(self) -> KVCache:
        return KVCache(self.depth)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        for i, blk in enumerate(self.blocks):
            x = blk(x, cache, i)
        return self.ln_f(x)
