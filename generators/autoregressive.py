"""Autoregressive image models: a gated PixelCNN on pixels, and a VQ-VAE with a causal transformer
prior on its codes.

`pixelcnn` — Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"), with the discretized logistic mixture likelihood of PixelCNN++ (Salimans et al. 2017).
- p(x) = prod_i p(x_i | x_<i) over pixels in raster order; each pixel's R, G, B come from one
  mixture of K discretized logistics whose G and B means depend linearly on R (and G) of the same
  pixel, so the network itself only needs pixel-level causality.
- No blind spot: a *vertical* stack (kernels covering the rows above, full width k) and a
  *horizontal* stack (the current row, columns to the left). The vertical stack's features are
  shifted down one row before they enter the horizontal stack, and the first horizontal layer
  sees the input shifted right one column (mask A); later layers may see their own column
  (mask B). Each layer is gated: tanh(W_f * h) ⊙ sigmoid(W_g * h); the horizontal stack is residual.
- Sampling is pixel by pixel (S*S steps). It uses the causality to avoid recomputing the image:
  the vertical stack is run once per row on the rows already drawn, and the horizontal stack on a
  window of the current row just wide enough for its receptive field; `forward` and this
  incremental path give the same numbers (tested).

`vq_transformer` — VQ-VAE (van den Oord et al. 2017) whose code grid is modeled by a small causal
transformer (the VQGAN / LlamaGen recipe, without the adversarial and perceptual losses).
- Encoder (32x32 → 8x8 x code_dim), vector quantizer with an EMA-updated codebook (K entries;
  decay 0.99, Laplace-smoothed counts), commitment loss beta * ||z_e - sg(e)||^2 and the
  straight-through gradient to the encoder; decoder back to pixels; loss = MSE + commitment.
- Codebook initialized from random encoder outputs of the first training batch; dead-code
  restart: an entry whose EMA usage count (assignments per batch) falls below `dead_threshold` is
  moved onto a random encoder output of the current batch (Dhariwal et al. 2020, Jukebox).
- Prior: a causal transformer over the 64 codes in raster order after a BOS token, trained by
  cross-entropy on the codes of the (current) encoder.
- One `forensics bank train vq_transformer` run trains both, in two phases counted by the
  model's own step buffer: phase 1 (step < `vq_steps`) trains the VQ-VAE *and*, on the detached
  codes, the prior (so a run cut short by --minutes still has a usable prior); phase 2 freezes the
  VQ-VAE (no gradients, no codebook updates) and trains the prior alone on its now-fixed codes.
- `evaluate`: reconstruction PSNR, codebook usage (share of entries used on the test split),
  code perplexity, prior bits per code and the prior's code length spread over the pixel
  dimensions (a compression rate of the discrete code, *not* an image likelihood: the decoder
  is deterministic).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Config, Generator, GeneratorError, register
from .transformer import CausalTransformer


def _gumbel_argmax(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw from softmax(logits) (last dim) with uniforms from a CPU torch.Generator."""
    u = torch.rand(logits.shape, generator=generator).to(logits.device).clamp(1e-10, 1 - 1e-10)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


# =================================================================================================
# Discretized logistic mixture (PixelCNN++)
# =================================================================================================
def dlmm_nll(x: torch.Tensor, out: torch.Tensor, k: int) -> torch.Tensor:
    """-log p(x) in nats per image. x (B, 3, H, W) on the 8-bit grid in [-1, 1]; out (B, 10k, H, W)."""
    b, _, h, w = x.shape
    logit = out[:, :k]                                                   # (B, k, H, W)
    mu, log_s, coef = out[:, k:].view(b, 3, 3, k, h, w).unbind(1)        # (B, 3, k, H, W) x3
    log_s = log_s.clamp(min=-7.0)
    coef = torch.tanh(coef)
    xc = x[:, :, None]                                                   # (B, 3, 1, H, W)
    m0 = mu[:, 0]
    m1 = mu[:, 1] + coef[:, 0] * xc[:, 0]
    m2 = mu[:, 2] + coef[:, 1] * xc[:, 0] + coef[:, 2] * xc[:, 1]
    means = torch.stack([m0, m1, m2], 1)                                 # (B, 3, k, H, W)
    centered = xc - means
    inv_s = torch.exp(-log_s)
    plus = inv_s * (centered + 1 / 255)
    minus = inv_s * (centered - 1 / 255)
    log_cdf_plus = plus - F.softplus(plus)                               # log sigmoid(plus): x = -1 edge
    log_one_minus_cdf_min = -F.softplus(minus)                           # x = +1 edge
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centered
    log_pdf_mid = mid - log_s - 2 * F.softplus(mid)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
    lp = torch.where(xc < -0.999, log_cdf_plus, torch.where(xc > 0.999, log_one_minus_cdf_min, inner))
    lp = lp.sum(1) + torch.log_softmax(logit, 1)                         # (B, k, H, W)
    return -torch.logsumexp(lp, 1).flatten(1).sum(1)                     # (B,)


def dlmm_sample(out: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """One pixel from mixture parameters out (B, 10k) → (B, 3) on the 8-bit grid."""
    b = out.shape[0]
    logit = out[:, :k]
    mu, log_s, coef = out[:, k:].view(b, 3, 3, k).unbind(1)              # (B, 3, k) x3
    j = _gumbel_argmax(logit, generator)                                 # (B,)
    pick = lambda t: t.gather(2, j.view(b, 1, 1).expand(b, 3, 1)).squeeze(2)  # noqa: E731  (B, 3)
    mu, log_s, coef = pick(mu), pick(log_s).clamp(min=-7.0), torch.tanh(pick(coef))
    u = torch.rand(b, 3, generator=generator).to(out.device).clamp(1e-5, 1 - 1e-5)
    e = torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))              # logistic noise
    q = lambda v: (((v.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1)   # noqa: E731  onto the grid
    r = q(mu[:, 0] + e[:, 0])
    g = q(mu[:, 1] + coef[:, 0] * r + e[:, 1])
    bl = q(mu[:, 2] + coef[:, 1] * r + coef[:, 2] * g + e[:, 2])
    return torch.stack([r, g, bl], 1)


# =================================================================================================
# Gated PixelCNN
# =================================================================================================
@dataclasses.dataclass
class PixelCNNConfig(Config):
    ch: int = 32
    layers: int = 8
    kernel: int = 3            # odd; vertical kernel (k//2 + 1) x k, horizontal 1 x (k//2 + 1)
    mixtures: int = 5
    PRESETS: ClassVar[dict] = {
        "tiny": {"image_size": 8, "ch": 8, "layers": 3, "mixtures": 2},
        "cpu": {},
        "gpu": {"ch": 128, "layers": 15, "kernel": 5, "mixtures": 10},
    }


def _shift_down(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def _shift_right(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0))[..., :-1]


class GatedLayer(nn.Module):
    def __init__(self, cin: int, ch: int, k: int, first: bool):
        super().__init__()
        self.first, self.k = first, k
        self.v_conv = nn.Conv2d(cin, 2 * ch, (k // 2 + 1, k))            # rows i-k//2..i
        self.v_to_h = nn.Conv2d(2 * ch, 2 * ch, 1)
        self.h_conv = nn.Conv2d(cin, 2 * ch, (1, k // 2 + 1))            # cols j-k//2..j
        self.h_out = nn.Conv2d(ch, ch, 1)

    def vertical(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v (B, cin, R, W) → (gated output (B, ch, R, W), pre-gate features (B, 2ch, R, W))."""
        k = self.k
        f = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))
        a, g = f.chunk(2, 1)
        return torch.tanh(a) * torch.sigmoid(g), f

    def horizontal(self, h: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
        """h (B, cin, R, W'), vh = v_to_h(shifted vertical features) (B, 2ch, R, W') → (B, ch, R, W')."""
        k = self.k
        hin = _shift_right(h) if self.first else h
        f = self.h_conv(F.pad(hin, (k // 2, 0, 0, 0))) + vh
        a, g = f.chunk(2, 1)
        out = self.h_out(torch.tanh(a) * torch.sigmoid(g))
        return out if self.first else h + out


@register
class PixelCNN(Generator):
    name = "pixelcnn"
    family = "autoregressive"
    Config = PixelCNNConfig
    default_sampler = "ancestral"

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        if config.kernel % 2 != 1 or config.kernel < 3:
            raise GeneratorError(f"PixelCNN kernel must be odd and ≥ 3; got {config.kernel}")
        c = config.ch
        self.layers = nn.ModuleList(
            [GatedLayer(config.channels if i == 0 else c, c, config.kernel, i == 0) for i in range(config.layers)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, 10 * config.mixtures, 1))

    @property
    def default_steps(self) -> int:
        return self.config.image_size ** 2           # one network step per pixel

    def _vh(self, x_rows: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, v_to_h(shift_down(vertical features)) for the rows of x_rows: row i uses rows < i."""
        outs, v = [], x_rows
        for layer in self.layers:
            v, f = layer.vertical(v)
            outs.append(layer.v_to_h(_shift_down(f)))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, S, S) → mixture parameters (B, 10K, S, S); position i depends on pixels < i only."""
        h = x
        for layer, vh in zip(self.layers, self._vh(x)):
            h = layer.horizontal(h, vh)
        return self.head(h)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return dlmm_nll(batch, self(batch), self.config.mixtures).mean() / batch[0].numel()

    # -- incremental sampling -------------------------------------------------------------------
    def _row_vh(self, x: torch.Tensor, r: int) -> list[torch.Tensor]:
        """vh of row r (B, 2ch, 1, W) for every layer, from the rows < r of x only."""
        if r == 0:
            return [layer.v_to_h(torch.zeros(x.shape[0], layer.v_to_h.in_channels, 1, x.shape[3],
                                             device=x.device, dtype=x.dtype)) for layer in self.layers]
        rf = len(self.layers) * (self.config.kernel // 2) + 1             # vertical receptive field
        lo = max(0, r - rf)
        outs, v = [], x[:, :, lo:r]
        for layer in self.layers:
            v, f = layer.vertical(v)
            outs.append(layer.v_to_h(f[:, :, -1:]))                       # features of row r-1
        return outs

    def _pixel_params(self, x: torch.Tensor, r: int, c: int, vh: list[torch.Tensor]) -> torch.Tensor:
        """Mixture parameters (B, 10K) at pixel (r, c), from row r's columns < c and vh."""
        lo = max(0, c - len(self.layers) * (self.config.kernel // 2) - 1)  # horizontal receptive field
        h = x[:, :, r:r + 1, lo:c + 1]
        for layer, v in zip(self.layers, vh):
            h = layer.horizontal(h, v[..., lo:c + 1])
        return self.head(h[..., -1:])[:, :, 0, 0]

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None):
        if sampler not in (None, *self.samplers()):
            raise GeneratorError(f"pixelcnn samples with {', '.join(self.samplers())}; got sampler {sampler!r}")
        if steps not in (None, self.default_steps):
            raise GeneratorError(f"pixelcnn draws one pixel per step ({self.default_steps}); omit --steps (got {steps})")
        s = self.config.image_size
        x = torch.zeros(n, self.config.channels, s, s, device=self.device)
        for r in range(s):
            vh = self._row_vh(x, r)
            for c in range(s):
                x[:, :, r, c] = dlmm_sample(self._pixel_params(x, r, c, vh), self.config.mixtures, generator)
        return x

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor, n: int = 1024, batch: int = 128) -> dict[str, float]:
        self.eval()
        idx = torch.linspace(0, len(data) - 1, min(n, len(data))).long()
        total = 0.0
        for i in range(0, len(idx), batch):
            x = data[idx[i:i + batch]].float().to(self.device)
            total += dlmm_nll(x, self(x), self.config.mixtures).sum().item()
        return {"bits_per_dim": total / (len(idx) * data[0].numel() * math.log(2))}


# =================================================================================================
# VQ-VAE + transformer prior
# =================================================================================================
@dataclasses.dataclass
class VQConfig(Config):
    ch: int = 48
    code_dim: int = 32
    codebook: int = 256
    downsample: int = 4          # 32x32 → 8x8 codes
    beta: float = 0.25
    ema_decay: float = 0.99
    dead_threshold: float = 0.5   # EMA assignments per batch below which an entry is restarted
    vq_steps: int = 150           # phase 1 length (VQ-VAE + prior; ~4 min on a shared 2-core CPU), then the prior alone
    prior_dim: int = 128
    prior_depth: int = 4
    prior_heads: int = 4
    sample_temperature: float = 1.0
    PRESETS: ClassVar[dict] = {
        "tiny": {"image_size": 8, "ch": 8, "code_dim": 4, "codebook": 16, "downsample": 2, "vq_steps": 2,
                 "prior_dim": 16, "prior_depth": 1, "prior_heads": 2},
        "cpu": {},
        "gpu": {"ch": 128, "code_dim": 64, "codebook": 1024, "vq_steps": 20000, "prior_dim": 384,
                "prior_depth": 8, "prior_heads": 6},
    }


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return x + self.body(x)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantizer with an EMA codebook and dead-code restart (buffers, no params)."""

    def __init__(self, k: int, d: int, decay: float, dead_threshold: float):
        super().__init__()
        self.k, self.d, self.decay, self.dead_threshold = k, d, decay, dead_threshold
        embed = torch.randn(k, d) * 0.1
        self.register_buffer("embed", embed)                             # (K, d)
        self.register_buffer("cluster_size", torch.ones(k))              # EMA counts
        self.register_buffer("embed_sum", embed.clone())                 # EMA sums
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, d, h, w) → indices (B, h, w)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.d)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.t() + self.embed.pow(2).sum(1)[None]
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embed[idx].permute(0, 3, 1, 2)                       # (B, d, h, w)

    def forward(self, z: torch.Tensor, update: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.codes(z)
        zq = self.lookup(idx)
        if update:
            self._ema_update(z.detach(), idx)
        commit = F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), idx, commit                        # straight-through

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.d).float()          # (M, d)
        if not bool(self.initialized):                                   # data-dependent init
            self.embed.copy_(flat[torch.randint(0, len(flat), (self.k,), device=flat.device)])
            self.embed_sum.copy_(self.embed)
            self.cluster_size.fill_(1.0)
            self.initialized.fill_(1)
            idx = self.codes(z)
        onehot = F.one_hot(idx.flatten(), self.k).float()                # (M, K)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (n + self.k * 1e-5) * n   # Laplace smoothing
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        self.restart_dead(flat)

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor) -> int:
        dead = (self.cluster_size < self.dead_threshold).nonzero().flatten()
        if len(dead) == 0:
            return 0
        pick = torch.randint(0, len(flat), (len(dead),), device=flat.device)
        new = flat[pick] + 0.01 * flat.std() * torch.randn(len(dead), self.d, device=flat.device)
        self.embed[dead] = new
        self.embed_sum[dead] = new
        self.cluster_size[dead] = 1.0
        self.restarts += len(dead)
        return len(dead)


class CodePrior(nn.Module):
    """Causal transformer over code indices: p(c_1..c_N) = prod p(c_i | BOS, c_<i)."""

    def __init__(self, k: int, n: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.k, self.n = k, n
        self.tok = nn.Embedding(k + 1, dim)                              # index k is BOS
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.tf = CausalTransformer(dim, depth, heads)
        self.head = nn.Linear(dim, k)
        nn.init.normal_(self.tok.weight, std=0.02)

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) → logits (B, N, K) for every position (teacher forcing)."""
        bos = torch.full((codes.shape[0], 1), self.k, device=codes.device, dtype=torch.long)
        seq = torch.cat([bos, codes[:, :-1]], 1)
        return self.head(self.tf(self.tok(seq) + self.pos))

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per code, (B,)."""
        lg = self.logits(codes)
        return F.cross_entropy(lg.transpose(1, 2), codes, reduction="none").mean(1)

    @torch.no_grad()
    def sample(self, b: int, generator: torch.Generator, device, temperature: float = 1.0) -> torch.Tensor:
        cache = self.tf.new_cache()
        tok = torch.full((b, 1), self.k, device=device, dtype=torch.long)
        out = []
        for i in range(self.n):
            h = self.tf(self.tok(tok) + self.pos[:, i:i + 1], cache)
            tok = _gumbel_argmax(self.head(h)[:, -1] / max(temperature, 1e-4), generator)[:, None]
            out.append(tok)
        return torch.cat(out, 1)                                         # (B, N)


@register
class VQTransformer(Generator):
    name = "vq_transformer"
    family = "autoregressive"
    Config = VQConfig
    default_sampler = "ancestral"

    def __init__(self, config: VQConfig):
        super().__init__(config)
        c, d = config.ch, config.code_dim
        if config.downsample not in (2, 4, 8) or config.image_size % config.downsample:
            raise GeneratorError(f"VQ downsample must be 2, 4 or 8 and divide the image size; got {config.downsample}")
        n_down = int(math.log2(config.downsample))
        enc: list[nn.Module] = [nn.Conv2d(config.channels, c, 3, padding=1)]
        for _ in range(n_down):
            enc += [_Res(c), nn.Conv2d(c, c, 4, 2, 1)]
        enc += [_Res(c), nn.ReLU(), nn.Conv2d(c, d, 1)]
        self.enc = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(d, c, 3, padding=1), _Res(c)]
        for _ in range(n_down):
            dec += [_Res(c), nn.ConvTranspose2d(c, c, 4, 2, 1)]
        dec += [nn.ReLU(), nn.Conv2d(c, config.channels, 3, padding=1)]
        self.dec = nn.Sequential(*dec)
        self.vq = VectorQuantizer(config.codebook, d, config.ema_decay, config.dead_threshold)
        self.grid = config.image_size // config.downsample
        self.prior = CodePrior(config.codebook, self.grid ** 2, config.prior_dim, config.prior_depth, config.prior_heads)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last: dict[str, float] = {}

    @property
    def default_steps(self) -> int:
        return self.grid ** 2                        # one transformer step per code

    @property
    def phase(self) -> int:
        return 1 if int(self.step) < self.config.vq_steps else 2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vq.codes(self.enc(x)).flatten(1)                     # (B, N)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        idx = codes.view(-1, self.grid, self.grid)
        return torch.tanh(self.dec(self.vq.lookup(idx)))                 # (B, 3, S, S)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        if self.phase == 1:
            z = self.enc(batch)
            zq, idx, commit = self.vq(z, update=self.training)
            rec = F.mse_loss(torch.tanh(self.dec(zq)), batch)
            prior = self.prior.nll(idx.flatten(1).detach()).mean()
            self.last = {"rec": rec.item(), "commit": commit.item(), "prior": prior.item()}
            return rec + self.config.beta * commit + prior
        with torch.no_grad():
            codes = self.encode(batch)
        prior = self.prior.nll(codes).mean()
        self.last = {"prior": prior.item()}
        return prior

    def after_step(self, step: int) -> None:
        self.step += 1

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, temperature: float | None = None):
        if sampler not in (None, *self.samplers()):
            raise GeneratorError(f"vq_transformer samples with {', '.join(self.samplers())}; got sampler {sampler!r}")
        if steps not in (None, self.default_steps):
            raise GeneratorError(f"vq_transformer draws one code per step ({self.default_steps}); omit --steps (got {steps})")
        t = self.config.sample_temperature if temperature is None else temperature
        codes = self.prior.sample(n, generator, self.device, t)
        return self.decode_codes(codes).clamp(-1, 1)

    @torch.no_grad()
    def evaluate(self, data: torch.Tensor, n: int = 1024, batch: int = 256) -> dict[str, float]:
        self.eval()
        idx = torch.linspace(0, len(data) - 1, min(n, len(data))).long()
        mse, nll, counts = 0.0, 0.0, torch.zeros(self.config.codebook)
        for i in range(0, len(idx), batch):
            x = data[idx[i:i + batch]].float().to(self.device)
            codes = self.encode(x)
            mse += F.mse_loss(self.decode_codes(codes), x, reduction="sum").item()
            nll += self.prior.nll(codes).sum().item()
            counts += torch.bincount(codes.flatten().cpu(), minlength=self.config.codebook).float()
        m = len(idx)
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
        bits_per_code = nll / m / math.log(2)
        mse_pix = mse / (m * data[0].numel())
        return {
            "recon_psnr_db": 10 * math.log10(4.0 / max(mse_pix, 1e-12)),   # peak-to-peak 2 on [-1, 1]
            "codebook_usage": float((counts > 0).float().mean()),
            "codebook_perplexity": math.exp(entropy),
            "codebook_size": self.config.codebook,
            "codebook_restarts": int(self.vq.restarts),
            "prior_bits_per_code": bits_per_code,
            "prior_bits_per_pixel_dim": bits_per_code * self.grid ** 2 / data[0].numel(),
            "phase_reached": self.phase,
        }
