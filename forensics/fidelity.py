"""Sample quality: the Fréchet distance in a fixed feature space that needs no download.

The project's metric (`FD`, feature space `randconv32-v1`):
- Features: a convolutional network with *random, fixed* weights (Heusel et al. 2017 use a trained
  Inception net; random conv features are a download-free stand-in that still separates image
  statistics well, cf. Naeem et al. 2020 §5 on random embeddings). Architecture, all 3×3 convs
  with zero padding, LeakyReLU(0.2), zero biases, He-normal weights drawn from
  `torch.Generator().manual_seed(2024)` in layer order:
      32×32 → conv 3→16 (stride 1) → conv 16→32 (s 2) → conv 32→64 (s 2) → conv 64→128 (s 2)
  At every one of the 4 scales (32, 16, 8, 4 px) the channel means and standard deviations are
  pooled and mapped by a fixed Gaussian matrix (same generator) to 16 dims, so each scale weighs
  the same: 4 × 16 = 64 features. Computed in float64, so results agree across calls, processes
  and thread counts.
- Input policy: RGB in [-1, 1] (uint8 is converted); non-square images are center-cropped, then
  anything not 32×32 is resized to 32×32 (bilinear, antialiased). Video frames count as images.
- Distance: FD = ‖μ_a − μ_b‖² + tr(C_a + C_b − 2 (C_a^½ C_b C_a^½)^½) with float64 covariances;
  both square roots come from symmetric eigendecompositions (negative round-off eigenvalues
  clipped), which stays real and stable where a general `sqrtm` returns complex noise.
- Reference: N images of the real *test* split (photos never seen in training) against N samples.
  FD is biased upward at small N, so both sides always use the same N and the output states it;
  the `floor` is FD between N real *train* and N real *test* images (different photos): what
  real-versus-real scores at that N. Compare numbers only at equal N.

Standard Inception FID (pool3 features, 2048-d, 299×299 input) is added when torchvision's
Inception-v3 weights are already on disk — `$FORENSICS_INCEPTION_WEIGHTS`, an explicit path, or
torchvision's file in the torch hub cache (`$TORCH_HOME/hub/checkpoints/inception_v3_google-*.pth`).
Nothing is ever downloaded; without weights the output says `"inception_fid": null` and why.
These are torchvision's ImageNet weights, not the TF graph of published FIDs: close, not equal.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError

FEATURE_SPACE = "randconv32-v1"
SEED = 2024
SIZE = 32
DEFAULT_N = 256
INCEPTION_ENV = "FORENSICS_INCEPTION_WEIGHTS"
# torchvision's file name for its Inception-v3 ImageNet weights (models.Inception_V3_Weights)
_TORCHVISION_INCEPTION_GLOB = "inception_v3_google-*.pth"


# ---------------------------------------------------------------------------------------------
# Feature network

_POOLS = {"mean": lambda t: t.mean((2, 3)), "std": lambda t: t.std((2, 3), unbiased=False),
          "max": lambda t: t.amax((2, 3))}


class FeatureNet(nn.Module):
    """A fixed random conv net: images → float64 features (see the module docstring).

    widths/strides: one 3×3 conv per entry; pooled: which conv outputs are pooled (indices);
    pools: per-channel statistics ("mean", "std", "max"); proj: dims each pooled scale is mapped
    to by a fixed Gaussian matrix (None: the pooled statistics themselves).
    """

    def __init__(self, *, seed: int = SEED, widths=(16, 32, 64, 128), strides=(1, 2, 2, 2),
                 pooled=(0, 1, 2, 3), pools=("mean", "std"), proj: int | None = 16, size: int = SIZE):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.strides, self.pooled, self.pools, self.size = tuple(strides), tuple(pooled), tuple(pools), size
        self.weights = nn.ParameterList()
        c = 3
        for cout in widths:
            # Drawn in float32 then widened: the same numbers as a float32 net with this seed.
            w = torch.randn((cout, c, 3, 3), generator=g) * math.sqrt(2.0 / (9 * c))
            self.weights.append(nn.Parameter(w.double(), requires_grad=False))
            c = cout
        self.proj = nn.ParameterList()
        if proj:
            for i in self.pooled:
                d = widths[i] * len(self.pools)
                self.proj.append(nn.Parameter((torch.randn((d, proj), generator=g) / math.sqrt(d)).double(),
                                              requires_grad=False))
        self.eval()

    @property
    def dims(self) -> int:
        if len(self.proj):
            return sum(p.shape[1] for p in self.proj)
        return sum(self.weights[i].shape[0] * len(self.pools) for i in self.pooled)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = prepare(x, self.size)                                            # (B, 3, 32, 32) f64
        out = []
        for i, (w, s) in enumerate(zip(self.weights, self.strides)):
            h = F.leaky_relu(F.conv2d(h, w, stride=s, padding=1), 0.2)      # (B, C_i, H_i, W_i)
            if i in self.pooled:
                f = torch.cat([_POOLS[p](h) for p in self.pools], 1)          # (B, C_i · pools)
                out.append(f @ self.proj[len(out)] if len(self.proj) else f)
        return torch.cat(out, 1)


def as_images(x) -> torch.Tensor:
    """uint8 (..., H, W, 3) numpy or float [-1, 1] (..., 3, H, W) → float64 (N, 3, H, W) on CPU."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise UsageError(f"numpy images must be uint8 (..., H, W, 3); got {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x)).movedim(-1, -3).double() / 127.5 - 1.0
    x = x.detach().to("cpu", torch.float64)
    if x.dim() == 5:                                                        # (N, T, 3, H, W): frames
        x = x.reshape(-1, *x.shape[2:])
    if x.dim() != 4 or x.shape[1] != 3:
        raise UsageError(f"expected RGB images (N, 3, H, W) or clips (N, T, 3, H, W); got shape {tuple(x.shape)}")
    return x


def prepare(x, size: int = SIZE) -> torch.Tensor:
    """The input policy: as_images, center-crop to a square, resize to size × size (antialiased)."""
    x = as_images(x)
    h, w = x.shape[-2:]
    if h != w:
        s = min(h, w)
        x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


_NET: FeatureNet | None = None


def feature_net() -> FeatureNet:
    """The project's feature net (built once per process)."""
    global _NET
    if _NET is None:
        _NET = FeatureNet()
    return _NET


def features(images, batch: int = 256, net: FeatureNet | None = None) -> np.ndarray:
    """float64 (N, 64) features of images or clips' frames (see `prepare` for accepted layouts)."""
    net = net or feature_net()
    if isinstance(images, np.ndarray):
        images = prepare(images, net.size)
    flat = images.reshape(-1, *images.shape[-3:]) if images.dim() == 5 else images
    if len(flat) == 0:
        return np.zeros((0, net.dims))
    return torch.cat([net(flat[i:i + batch]) for i in range(0, len(flat), batch)]).numpy()


# ---------------------------------------------------------------------------------------------
# Fréchet distance


def sqrtm_psd(c: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (round-off negatives → 0)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def stats(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(f, np.float64)
    if len(f) < 2:
        raise UsageError(f"the Fréchet distance needs at least 2 items per side; got {len(f)}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_from_stats(mu_a, c_a, mu_b, c_b) -> float:
    """‖μ_a − μ_b‖² + tr(C_a + C_b − 2 (C_a^½ C_b C_a^½)^½)."""
    s_a = sqrtm_psd(c_a)
    m = s_a @ c_b @ s_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(c_a) + np.trace(c_b) - 2 * cross)
    return max(d, 0.0)  # only round-off makes it negative


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two feature sets (N_a, D) and (N_b, D)."""
    return frechet_from_stats(*stats(a), *stats(b))


class FrechetSpace:
    """Standardize features on a real set and project them on its first k principal axes.

    For heterogeneous, high-dimensional features (e.g. the frequency detector's) where raw scales
    differ by orders of magnitude and N of a few hundred would not support a full covariance."""

    def __init__(self, real: np.ndarray, k: int = 32):
        real = np.asarray(real, np.float64)
        self.mu, self.sd = real.mean(0), real.std(0) + 1e-6
        z = (real - self.mu) / self.sd
        _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        self.p = vt[:k].T
        self.real = self(real)

    def __call__(self, f: np.ndarray) -> np.ndarray:
        return ((np.asarray(f, np.float64) - self.mu) / self.sd) @ self.p

    def fd(self, f: np.ndarray, ref: np.ndarray | None = None) -> float:
        return frechet(self(f), self.real if ref is None else self(ref))


# ---------------------------------------------------------------------------------------------
# Inception FID (only with weights already on disk)


def find_inception_weights(path: str | os.PathLike | None = None) -> tuple[Path | None, str | None]:
    """(weights file, None) or (None, why not). Looks; never downloads."""
    given = path or os.environ.get(INCEPTION_ENV)
    if given:
        p = Path(given).expanduser()
        return (p, None) if p.is_file() else (None, f"Inception weights not found at {p} (from "
                                                     f"{'the option' if path else '$' + INCEPTION_ENV})")
    try:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
    except Exception:  # an unusual torch build without hub: treat as no cache
        hub = None
    found = sorted(hub.glob(_TORCHVISION_INCEPTION_GLOB)) if hub and hub.is_dir() else []
    if found:
        return found[0], None
    return None, (f"no Inception-v3 weights on disk (looked for ${INCEPTION_ENV} and "
                  f"{hub / _TORCHVISION_INCEPTION_GLOB if hub else 'the torch hub cache'}); nothing is downloaded")


def _inception(weights: Path, device: torch.device) -> nn.Module:
    from torchvision.models import inception_v3

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights), device="cpu")
    else:
        # torchvision ships these weights only as a .pth; weights_only=True restricts the
        # unpickler to tensors, so the file cannot run code.
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    # transform_input=False: the network's own input scale is [-1, 1], which is what we feed.
    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    missing, unexpected = net.load_state_dict(state, strict=False)
    core_missing = [k for k in missing if not k.startswith("AuxLogits")]
    if core_missing or unexpected:
        raise UsageError(f"{weights} is not torchvision Inception-v3 weights "
                         f"(missing {core_missing[:3]}, unexpected {unexpected[:3]})")
    net.fc = nn.Identity()  # pool3 features (2048-d), as FID uses
    return net.to(device).eval()


@torch.no_grad()
def inception_features(net: nn.Module, images, device: torch.device, batch: int = 50) -> np.ndarray:
    x = as_images(images)
    out = []
    for i in range(0, len(x), batch):
        b = x[i:i + batch].to(device, torch.float32)
        b = F.interpolate(b, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(net(b).double().cpu())
    return torch.cat(out).numpy()


# ---------------------------------------------------------------------------------------------
# Real reference and scoring


def _pick(x, n: int, seed: int):
    """n items of x chosen by a fixed permutation (the same subset every run)."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[torch.as_tensor(idx)] if isinstance(x, torch.Tensor) else x[idx]


class Reference:
    """Real test / train images at one N: their features, and the real-vs-real floor.

    test, train: float [-1, 1] (M, 3, H, W) (or clips (M, T, 3, H, W): frames count as images),
    or uint8 (M, H, W, 3). N is capped at the smaller split; `n_requested` records the ask."""

    def __init__(self, test, train, n: int = DEFAULT_N, seed: int = 0):
        test, train = _frames(test), _frames(train)
        if n < 2:
            raise UsageError(f"--n must be ≥ 2 for a Fréchet distance; got {n}")
        self.n_requested = n
        self.n = min(n, len(test), len(train))
        if self.n < 2:
            raise UsageError(f"too few real images for a Fréchet distance (test {len(test)}, train {len(train)})")
        self.seed = seed
        self.test = _pick(test, self.n, seed)
        self.train = _pick(train, self.n, seed + 1)
        self.test_stats = stats(features(self.test))
        self.floor = frechet_from_stats(*stats(features(self.train)), *self.test_stats)
        self._inception_real: tuple | None = None

    def score(self, samples, *, inception: bool | str = "auto", inception_weights: str | None = None,
              device: str | torch.device = "cpu") -> dict:
        """FD of exactly N samples against the N real test images, with the floor at that N."""
        samples = _frames(samples)
        if len(samples) < self.n:
            raise UsageError(f"need {self.n} samples for a Fréchet distance at N={self.n}; got {len(samples)}")
        samples = samples[:self.n]
        out = {"fd": round(frechet_from_stats(*stats(features(samples)), *self.test_stats), 4),
               "fd_floor": round(self.floor, 4), "n": self.n,
               "feature_space": f"{FEATURE_SPACE} (random conv, seed {SEED}, {SIZE}x{SIZE}, 4 scales x 16 dims; "
                                "forensics/fidelity.py)",
               "reference": "N real test-split images (photos never seen in training)",
               "floor": "N real train-split vs N real test-split images"}
        if self.n_requested != self.n:
            out["n_requested"] = self.n_requested
        out.update(self._inception(samples, inception, inception_weights, device))
        return out

    def _inception(self, samples, inception, weights, device) -> dict:
        if inception is False:
            return {"inception_fid": None, "inception_fid_skipped": "not asked for"}
        path, why = find_inception_weights(weights)
        if path is None:
            return {"inception_fid": None, "inception_fid_skipped": why}
        dev = torch.device(device)
        net = _inception(path, dev)
        if self._inception_real is None:
            self._inception_real = (stats(inception_features(net, self.test, dev)),
                                    stats(inception_features(net, self.train, dev)))
        (mu_t, c_t), (mu_r, c_r) = self._inception_real
        fid = frechet_from_stats(*stats(inception_features(net, samples, dev)), mu_t, c_t)
        return {"inception_fid": round(fid, 4), "inception_fid_floor": round(frechet_from_stats(mu_r, c_r, mu_t, c_t), 4),
                "inception_weights": str(path)}


def _frames(x):
    if isinstance(x, np.ndarray):
        return x.reshape(-1, *x.shape[-3:])
    return x.reshape(-1, *x.shape[-3:]) if x.dim() == 5 else x


def sample(model, n: int, *, seed: int = 0, batch: int = 64, sampler: str | None = None,
           steps: int | None = None) -> tuple[torch.Tensor, float]:
    """At least n images from a bank model (clips: frames), on CPU in [-1, 1], and the seconds taken.

    The batch that starts at item i uses torch.Generator seeded seed·1_000_003 + i, so a sample
    set is reproducible for a given batch size."""
    xs, have, t0 = [], 0, time.time()
    frames = int(getattr(model.config, "frames", 1)) if model.modality == "video" else 1
    i = 0
    while have < n:
        k = min(batch, math.ceil((n - have) / frames))
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        x = model.sample(k, generator=g, steps=steps, sampler=sampler).detach().float().cpu()
        x = _frames(x)
        xs.append(x)
        have += len(x)
        i += k
    return torch.cat(xs)[:n], time.time() - t0


def score_model(model, reference: Reference, *, seed: int = 0, batch: int = 64, sampler: str | None = None,
                steps: int | None = None, inception: bool | str = "auto", inception_weights: str | None = None) -> dict:
    """Sample N (= reference.n) images and score them; the sampling settings go into the result."""
    x, seconds = sample(model, reference.n, seed=seed, batch=batch, sampler=sampler, steps=steps)
    used = sampler or model.default_sampler
    step_count = steps or (model.steps_for(used) if hasattr(model, "steps_for") else getattr(model, "default_steps", None))
    out = reference.score(x, inception=inception, inception_weights=inception_weights, device=model.device)
    out.update({"sampler": used, "steps": step_count, "seed": seed, "sample_batch": batch,
                "sample_seconds": round(seconds, 2)})
    return out
