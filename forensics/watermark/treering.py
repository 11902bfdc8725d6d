"""Tree-Ring watermark: a key in the 2-D Fourier transform of the initial noise of our own
deterministic samplers, detected by inverting the sampler (Wen et al. 2023, "Tree-Ring
Watermarks: Fingerprints for Diffusion Images that are Invisible and Robust").

Carriers: the shipped `ddpm` checkpoint sampled by DDIM (η = 0; architecture `ddim`) and the
shipped `rectified_flow` (Euler or Heun ODE). Both map the initial noise x_T (n, 3, 32, 32) to
the image deterministically, and both can be run backwards (DDIM inversion, the reverse ODE).

1. Luma axis. The noise ε ∈ R^{3×H×W} is split per pixel on an orthonormal colour basis; only
   its luma component y = (ε_R + ε_G + ε_B)/√3 carries the key. JPEG keeps luma and subsamples
   chroma: on the shipped models, DDIM inversion of a JPEG-75 copy still recovers the luma
   noise coefficients up to |k| ≈ 10 with correlation ≥ 0.8, the chroma ones only to |k| ≈ 2.
2. Band. Y = DFT₂(y) with the orthonormal scaling, so for a non-self-conjugate frequency k,
   Y_k ~ CN(0, 1). The key lives on the m frequencies of an annulus r_min ≤ |k| ≤ r_max
   (default 4–12 bins of the 32-px grid; m = 198 in the half plane, each paired with −k).
   The lowest frequencies (|k| < 4), which set an image's coarse layout, stay free, so marked
   images do not all share one composition.
3. Key. HMAC-SHA256(secret, "treering-v1|C×H×W|band") seeds a uniform phase φ_k per frequency:
   c_k = e^{iφ_k}. The secret is the post-hoc watermark's key file (one key per user, a
   distinct label per method; see posthoc.load_key), so there is nothing new to manage.
4. Embedding (in distribution). Y_k ← √(1−β²) Y_k + β c_k on the band (and the conjugate at
   −k), β = `strength` (default 0.5). Each marked coefficient is CN(β c_k, 1−β²): its energy
   E|Y_k|² = 1 is unchanged, the other two colour axes and the other frequencies are untouched,
   so every pixel of the marked noise still has unit variance (the marginal std stays 1, see
   `marginal_std`). β = 1 is the original Tree-Ring replacement (every marked image then
   shares those coefficients exactly); β < 1 leaves each image its own part of the band. On
   the shipped rectified_flow, 32 marked images have a mean pairwise luma correlation of 0.08
   at β = 0.5 (0.25 with a 3–10 band at β = 0.7; unmarked ≈ 0.01), while the z-score below
   stays ≈ 10 clean and ≈ 8 after JPEG 75.
5. Detection. The image (any size: stretched to the model's 32×32 with area / bicubic
   interpolation, aspect ratio not kept, so a resized copy maps back onto the original grid) is
   inverted to ẑ (DDIM inversion, 20 steps; or the reverse Heun ODE, 8 steps: the band is
   low-frequency and comes back from a coarse inversion as well as from a fine one), and
   S = Σ_k Re(Ẑ_k c̄_k) = Σ_k |Ẑ_k| cos(arg Ẑ_k − φ_k) is the matched filter of the key.
6. Test. Null: the image was not made from this key's noise (unmarked, a real photo, another
   key). Then ẑ is a function of the image alone and the φ_k are uniform and independent of
   it, so given ẑ, S is a sum of independent |Ẑ_k| cos(U_k). Its moment generating function
   is Π_k I₀(λ|Ẑ_k|), so P(S ≥ s) ≤ min_λ e^{−λs} Π_k I₀(λ|Ẑ_k|) (Chernoff; ≤ e^{−T²/2} with
   T = S / √(Σ|Ẑ_k|²/2) the z-score). This holds for every image whatever the inverted noise
   looks like — no Gaussian model of ẑ is needed, unlike the χ² test of Wen et al., which a
   flat image (|Ẑ_k| ≈ 0) fools. `detected` iff p ≤ threshold (default 1e-6: the
   false-positive rate per image per model); `--arch auto` tries both shipped models and
   reports the Bonferroni p = min(1, 2 · min p). `distance` is the Tree-Ring L1 distance
   mean_k |Ẑ_k − c_k| (lower = marked), returned for ROC curves.

Measured (bench/treering.py, 200 marked + 200 unmarked per carrier, DDIM 50 steps, Euler 32
steps, CPU): AUC 1.000 clean and after JPEG 75 for both, TPR 1.00 at 1 % FPR and at p ≤ 1e-6,
no false positive at 1e-6 on 200 unmarked images (clean and JPEG) and 200 real photo crops per
carrier; detection ≈ 0.14 s (DDIM) and 0.07 s (flow) per image on one core. On 24 + 24 images
per carrier, AUC stays 1.0 after resize 0.5 and 2, blur σ 1, noise σ 5, JPEG 50, WebP 80,
brightness 1.2 and rotation 2°; a crop keeping 90 % of the area (stretched back) gives ≈ 0.85.

Limits: the band is coarse, so a mark made by one shipped model is also found by inverting the
other: `arch` names the model with the smaller p-value, it is not an attribution. Marks made
with an older checkpoint are tested against the installed one (rows record checkpoint_sha256).
The key is not rotation invariant beyond a few degrees (rings of equal values would be, but a 32×32 grid has too few
rings for a key-randomness test at 1e-6); crops shift the frequency grid and defeat it. Video
is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import MediaError, UsageError
from . import posthoc

ALGORITHM = "treering-v1"
DEFAULT_THRESHOLD = 1e-6
DEFAULT_STRENGTH = 0.5
BAND = (4.0, 12.0)  # |k| in frequency bins of a 32-px grid (scaled with the model's size)
LUMA = (1.0 / math.sqrt(3.0),) * 3
# architecture -> (model name, samplers that are deterministic and invertible)
CARRIERS = {"ddim": ("ddpm", ("ddim",)), "rectified_flow": ("rectified_flow", ("euler", "heun"))}
# Inversion used by detection. On the shipped checkpoints the band's correlation with the true
# x_T is ≈ 0.98 at 10 DDIM steps as at 25, and the same for 8 and 16 Heun steps, so the cheap
# settings are used (no fixed-point refinement either: it triples the cost for the high
# frequencies, which the key does not use).
INVERSION = {"ddim": {"steps": 20, "refine": 0}, "rectified_flow": {"steps": 8, "method": "heun"}}


# ---------------------------------------------------------------------------------------------
# Key pattern


@dataclasses.dataclass(frozen=True)
class Pattern:
    """The key's coefficients on the band of one noise shape."""

    shape: tuple[int, int, int]  # (C, H, W) of the noise
    ky: torch.Tensor  # (m,) long: rows of the band frequencies (half plane)
    kx: torch.Tensor  # (m,) long
    c: torch.Tensor  # (m,) complex64, |c_k| = 1
    strength: float
    fingerprint: str

    @property
    def m(self) -> int:
        return int(self.c.numel())


def band(h: int, w: int, r: tuple[float, float] = BAND) -> tuple[np.ndarray, np.ndarray]:
    """Half-plane frequencies (ky, kx) of the annulus, as DFT indices; −k is the conjugate.

    Radii are given for a 32-px grid and scaled by min(H, W)/32; self-conjugate frequencies
    (DC, Nyquist) are left out because their coefficients are real."""
    s = min(h, w) / 32.0
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    ys, xs = [], []
    for iy, vy in enumerate(fy):
        for ix, vx in enumerate(fx):
            rad = math.hypot(vy, vx)
            if not r[0] * s <= rad <= r[1] * s:
                continue
            if not (vy > 0 or (vy == 0 and vx > 0)):  # one of each conjugate pair
                continue
            if (2 * iy) % h == 0 and (2 * ix) % w == 0:
                continue
            if (h % 2 == 0 and iy == h // 2) or (w % 2 == 0 and ix == w // 2):  # Nyquist: −k aliases
                continue
            ys.append(iy)
            xs.append(ix)
    return np.array(ys, dtype=np.int64), np.array(xs, dtype=np.int64)


def pattern_for(key: posthoc.WatermarkKey, shape: tuple[int, int, int], strength: float = DEFAULT_STRENGTH,
                r: tuple[float, float] = BAND) -> Pattern:
    """The key's phases on the band of a (C, H, W) noise (step 3 of the module docstring)."""
    if not 0.0 < strength <= 1.0:
        raise UsageError(f"Tree-Ring strength must be in (0, 1]; got {strength}")
    c_, h, w = (int(v) for v in shape)
    if c_ != 3:
        raise UsageError(f"Tree-Ring marks RGB noise (3 channels); got {c_}")
    ky, kx = band(h, w, r)
    if len(ky) < 16:
        raise UsageError(f"a {h}x{w} noise has only {len(ky)} band frequencies; Tree-Ring needs at least 16")
    label = f"{ALGORITHM}|{c_}x{h}x{w}|{r[0]:g}-{r[1]:g}".encode()
    seed = hmac.new(key.secret, label, hashlib.sha256).digest()
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    phi = rng.uniform(0.0, 2 * math.pi, len(ky))
    c = torch.polar(torch.ones(len(ky), dtype=torch.float64), torch.from_numpy(phi)).to(torch.complex64)
    return Pattern((c_, h, w), torch.from_numpy(ky), torch.from_numpy(kx), c, float(strength), key.fingerprint)


def _luma_axis(device) -> torch.Tensor:
    return torch.tensor(LUMA, dtype=torch.float32, device=device)


def _full_spectrum(p: Pattern, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) mask of the band and its conjugates, and the key values there (c at k, c̄ at −k)."""
    _, h, w = p.shape
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    vals = torch.zeros(h, w, dtype=torch.complex64, device=device)
    ky, kx, c = p.ky.to(device), p.kx.to(device), p.c.to(device)
    mask[ky, kx] = True
    vals[ky, kx] = c
    nky, nkx = (-ky) % h, (-kx) % w
    mask[nky, nkx] = True
    vals[nky, nkx] = c.conj()
    return mask, vals


def mark_noise(eps: torch.Tensor, p: Pattern) -> torch.Tensor:
    """Put the key into standard Gaussian noise (B, C, H, W) (step 4): the result is again
    unit-variance Gaussian per pixel, only its luma band is pulled towards the key."""
    if tuple(eps.shape[1:]) != p.shape:
        raise UsageError(f"noise of shape {tuple(eps.shape[1:])} does not match the key pattern {p.shape}")
    x = eps.float()
    u = _luma_axis(x.device)
    y = torch.einsum("c,bchw->bhw", u, x)                                    # luma component (B, H, W)
    Y = torch.fft.fft2(y, norm="ortho")                                      # Y_k ~ CN(0, 1)
    mask, vals = _full_spectrum(p, x.device)
    b = p.strength
    Y2 = torch.where(mask, math.sqrt(max(0.0, 1 - b * b)) * Y + b * vals, Y)
    y2 = torch.fft.ifft2(Y2, norm="ortho").real                              # Hermitian: imaginary part ≈ 0
    return x + u.view(1, -1, 1, 1) * (y2 - y).unsqueeze(1)                   # only the luma axis moves


def marked_noise(n: int, p: Pattern, generator: torch.Generator | None) -> torch.Tensor:
    """n draws of marked initial noise. The base noise comes from `generator` exactly as the
    samplers draw it, so a seed gives the same image apart from the key's band."""
    eps = torch.randn((n, *p.shape), generator=generator, dtype=torch.float32)
    return mark_noise(eps, p)


def marginal_std(p: Pattern, n: int = 256, seed: int = 0) -> dict:
    """Moments of n draws of marked noise. Over pixels and draws it is N(0, 1) (std 1, excess
    kurtosis 0); per pixel it is N(μ_x, 1 − β²·2m/(3HW)) with μ_x the key's pixel pattern,
    whose RMS is β·√(2m/(3HW)) (0.18 at the defaults)."""
    g = torch.Generator().manual_seed(seed)
    z = marked_noise(n, p, g).double()
    c = z - z.mean()
    _, h, w = p.shape
    return {"std": round(float(z.std()), 4), "mean": round(float(z.mean()), 4),
            "excess_kurtosis": round(float((c ** 4).mean() / (c ** 2).mean() ** 2 - 3), 4),
            "per_pixel_std_mean": round(float(z.std(dim=0).mean()), 4),
            "per_pixel_std_expected": round(math.sqrt(1 - p.strength ** 2 * 2 * p.m / (3 * h * w)), 4),
            "pattern_rms": round(float(z.mean(dim=0).pow(2).mean().sqrt()), 4), "draws": n}


# ---------------------------------------------------------------------------------------------
# The test


def band_coefficients(z: torch.Tensor, p: Pattern) -> torch.Tensor:
    """Ẑ_k on the band for inverted noise z (B, C, H, W) → (B, m) complex."""
    y = torch.einsum("c,bchw->bhw", _luma_axis(z.device), z.float())
    Y = torch.fft.fft2(y, norm="ortho")
    return Y[:, p.ky.to(z.device), p.kx.to(z.device)]


def _log_i0(x: np.ndarray) -> np.ndarray:
    from scipy.special import i0e

    return np.log(i0e(x)) + np.abs(x)


def log_tail(a: np.ndarray, s: float) -> float:
    """log of the Chernoff bound on P(Σ_k a_k cos U_k ≥ s), U_k iid uniform (step 6).

    f(λ) = −λs + Σ log I₀(λ a_k) is convex with f'(λ) = −s + Σ a_k I₁/I₀(λ a_k), increasing from
    −s; its root (bisection) is the minimiser."""
    from scipy.special import i0e, i1e

    a = np.asarray(a, dtype=np.float64)
    if s <= 0 or not np.any(a > 0):
        return 0.0
    if s >= a.sum():
        return -math.inf  # S can never reach it by chance

    def slope(lam: float) -> float:
        x = lam * a
        return -s + float(np.sum(a * i1e(x) / i0e(x)))

    lo, hi = 0.0, 1.0
    while slope(hi) < 0 and hi < 1e12:
        lo, hi = hi, hi * 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if slope(mid) < 0:
            lo = mid
        else:
            hi = mid
    lam = 0.5 * (lo + hi)
    return float(min(0.0, -lam * s + np.sum(_log_i0(lam * a))))


def score(Z: torch.Tensor, p: Pattern, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """The test of step 6 for each row of Ẑ (B, m)."""
    c = p.c.to(Z.device)
    S = (Z * c.conj()).real.sum(dim=1).double().cpu().numpy()                # matched filter
    A = Z.abs().double().cpu().numpy()                                       # (B, m)
    dist = (Z - c).abs().mean(dim=1).double().cpu().numpy()
    out = []
    for s, a, d in zip(S, A, dist):
        energy = float(np.sum(a * a)) / 2
        T = float(s) / math.sqrt(energy) if energy > 0 else 0.0
        lp = log_tail(a, float(s))
        pv = math.exp(lp) if lp > -745 else 0.0
        out.append({"detected": bool(pv <= threshold), "p_value": _sig(pv), "log10_p": round(lp / math.log(10), 3),
                    "statistic": round(T, 4), "distance": round(float(d), 5)})
    return out


def _sig(x: float) -> float:
    return float(f"{max(x, 1e-300):.4g}")


# ---------------------------------------------------------------------------------------------
# Models: sampling with the key, inversion


def check_carrier(arch: str, sampler: str | None = None) -> str:
    """The sampler that will carry the key; a UsageError when this architecture cannot."""
    if arch not in CARRIERS:
        raise UsageError(f"--watermark treering works with --arch {' or '.join(CARRIERS)} (a deterministic "
                         f"sampler that can be inverted); got {arch!r}")
    ok = CARRIERS[arch][1]
    s = sampler or ok[0]
    if s not in ok:
        raise UsageError(f"--watermark treering with --arch {arch} needs --sampler {' or '.join(ok)}; got {s!r} "
                         "(an ancestral sampler adds fresh noise at every step, which inversion cannot undo)")
    return s


_MODELS: dict = {}


def load_model(arch: str, device: str | torch.device = "cpu", checkpoint: str | os.PathLike | None = None):
    """The generator of a carrier architecture, cached per process (keyed by the weights'
    modification time, so a replaced checkpoint is picked up)."""
    from generators import base

    if arch not in CARRIERS:
        raise UsageError(f"Tree-Ring detection supports --arch {', '.join(CARRIERS)} or auto; got {arch!r}")
    d = Path(checkpoint) if checkpoint else base.CHECKPOINT_ROOT / CARRIERS[arch][0]
    w = d / "model.safetensors"
    if not w.is_file():
        raise UsageError(f"no checkpoint for {arch} at {d} (train it with `forensics bank train {CARRIERS[arch][0]}`)")
    dev = base.resolve_device(device)
    k = (str(d.resolve()), str(dev))
    stamp = w.stat().st_mtime_ns
    hit = _MODELS.get(k)
    if hit is None or hit[0] != stamp:
        model = base.load(d if checkpoint else arch, device=dev)
        if model.name != CARRIERS[arch][0]:
            raise UsageError(f"{d} holds a {model.name} model, not {CARRIERS[arch][0]} ({arch})")
        _MODELS[k] = hit = (stamp, model)
    return hit[1]


def noise_shape(model) -> tuple[int, int, int]:
    s = int(model.config.image_size)
    return (int(model.config.channels), s, s)


@torch.no_grad()
def sample(model, arch: str, n: int, key: posthoc.WatermarkKey, *, generator: torch.Generator,
           steps: int | None = None, sampler: str | None = None, strength: float = DEFAULT_STRENGTH) -> torch.Tensor:
    """n marked samples in [-1, 1] (n, 3, H, W) from a carrier model."""
    s = check_carrier(arch, sampler)
    p = pattern_for(key, noise_shape(model), strength)
    x_T = marked_noise(n, p, generator)
    return model.sample(n, generator=generator, steps=steps, sampler=s, noise=x_T)


@torch.no_grad()
def invert(model, arch: str, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) at the model's size → the initial noise (step 5)."""
    opts = dict(INVERSION[arch])
    if steps is not None:
        if steps < 1:
            raise UsageError(f"inversion steps must be ≥ 1; got {steps}")
        opts["steps"] = steps
    return model.invert(x, **opts).float()


def to_model_size(rgb: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
    """Stretch an RGB uint8 image to size×size (area when shrinking, bicubic when enlarging)."""
    import cv2

    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb, False
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_CUBIC
    return cv2.resize(rgb, (size, size), interpolation=interp), True


@torch.no_grad()
def detect_images(images: list[np.ndarray] | np.ndarray, key: posthoc.WatermarkKey, arch: str, *,
                  threshold: float = DEFAULT_THRESHOLD, steps: int | None = None, device: str = "cpu",
                  checkpoint: str | os.PathLike | None = None, strength: float = DEFAULT_STRENGTH,
                  batch: int = 64) -> list[dict]:
    """Test RGB uint8 images (any sizes) against one carrier model, batched."""
    from generators import base

    model = load_model(arch, device, checkpoint)
    shape = noise_shape(model)
    p = pattern_for(key, shape, strength)
    out = []
    for i in range(0, len(images), batch):
        chunk = [to_model_size(np.asarray(im), shape[1]) for im in images[i:i + batch]]
        x = base.from_uint8(np.stack([c for c, _ in chunk])).to(base.resolve_device(device))
        Z = band_coefficients(invert(model, arch, x, steps), p)
        for r, (_, resized) in zip(score(Z, p, threshold), chunk):
            r.update(arch=arch, resized=resized)
            out.append(r)
    return out


def combine(per_arch: dict[str, dict], threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Bonferroni over the models tried: p = min(1, n · min p); the best model names the arch."""
    best = min(per_arch, key=lambda a: (per_arch[a]["p_value"], -per_arch[a]["statistic"]))
    pv = min(1.0, len(per_arch) * per_arch[best]["p_value"])
    r = dict(per_arch[best])
    r.update(p_value=_sig(pv), log10_p=round(min(0.0, r["log10_p"] + math.log10(len(per_arch))), 3),
             detected=bool(pv <= threshold))
    return r


def load_detection_key(path: str | os.PathLike | None = None) -> posthoc.WatermarkKey:
    """The key file of the post-hoc watermark (Tree-Ring derives its own pattern from it)."""
    return posthoc.load_key(path)


def detect_file(path: str | os.PathLike, arch: str = "auto", key: posthoc.WatermarkKey | None = None, *,
                threshold: float = DEFAULT_THRESHOLD, steps: int | None = None, device: str = "cpu",
                checkpoint: str | os.PathLike | None = None) -> dict:
    """The `watermark detect --method treering --json` record of one image."""
    from .. import media

    t0 = time.time()
    if not 0 < threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 1; got {threshold}")
    if arch == "auto":
        if checkpoint:
            raise UsageError("--checkpoint needs --arch ddim or rectified_flow (not auto)")
        archs = list(CARRIERS)
    elif arch in CARRIERS:
        archs = [arch]
    else:
        raise UsageError(f"Tree-Ring detection supports --arch {', '.join(CARRIERS)} or auto; {arch!r} has no "
                         "invertible sampler")
    kind = media.sniff(path)
    if kind != "image":
        raise MediaError("Tree-Ring marks single images from ddim / rectified_flow; this is a video", path)
    rgb = media.read_image(path)
    key = key if key is not None else load_detection_key()
    per = {a: detect_images([rgb], key, a, threshold=threshold, steps=steps, device=device,
                            checkpoint=checkpoint)[0] for a in archs}
    r = combine(per, threshold) if len(per) > 1 else per[archs[0]]
    rec = {"path": str(path), "method": "treering", "detected": r["detected"], "payload": None,
           "p_value": r["p_value"], "bit_accuracy": None, "frames_used": 1, "threshold": threshold,
           "statistic": r["statistic"], "distance": r["distance"], "log10_p": r["log10_p"],
           "arch": r["arch"], "size": [int(rgb.shape[1]), int(rgb.shape[0])], "resized": r["resized"],
           "key_fingerprint": key.fingerprint}
    if len(per) > 1:
        rec["models"] = {a: {k: v[k] for k in ("p_value", "statistic", "distance", "detected")} for a, v in per.items()}
    rec["seconds"] = round(time.time() - t0, 3)
    return rec


def row_field(key: posthoc.WatermarkKey, strength: float = DEFAULT_STRENGTH) -> dict:
    """The corpus row's `watermark` field for an item sampled from marked noise."""
    return {"method": "treering", "algorithm": ALGORITHM, "key_fingerprint": key.fingerprint,
            "payload": None, "strength": strength, "band": list(BAND)}
