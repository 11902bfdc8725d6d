"""Post-hoc watermark: a keyed, periodic spread-spectrum mark in the luminance, with a 32-bit
payload, error correction, blind re-synchronisation and a stated false-positive rate.

Method (our design; it combines classic ideas: periodic self-referencing marks, Kutter 1999;
spread spectrum, Cox et al. 1997; Fourier-domain lattice registration, Pereira & Pun 2000):

1. The mark is a tile, repeated over the image, made of sinusoids: every integer frequency
   k = (kx, ky) of the tile with 3 ≤ |k| ≤ 12 cycles per tile (208 in a half plane) carries a
   unit phasor c_k. The tile period is P = min(H, W) / 4 pixels, clamped to [32, 128], so an
   image holds ≥ 4 periods along its short side and a uniform resize maps the mark onto the
   period the detector expects for the new size. On a 256×256 image the mark occupies
   0.05–0.19 cycles/pixel: mid frequencies that survive JPEG, blur and halving.
2. A key (32 random bytes) draws a uniform phase φ_k per frequency and splits the frequencies
   into a *pilot* (c_k = e^{iφ_k}, used only to detect and synchronise) and *payload*
   frequencies (c_k = e^{iφ_k}(s₁ + i s₂)/√2, QPSK: two coded chips per frequency).
3. Payload: 32 bits + CRC-16 (masked by the key) → rate-1/2 convolutional code, K = 7
   (171, 133 octal) with a zero tail → 108 coded bits, spread over the payload chips by a
   keyed interleaver (each coded bit repeated ≈ 2×) and decoded by soft-decision Viterbi.
4. Embedding adds A·Σ_k Re(c_k e^{2πi k·u}) to the luminance (u = pixel position / P) with
   an activity mask (more in texture, less in flat regions), scaled to a target RMS; the same
   offset goes to R, G and B. Default strength gives PSNR ≈ 42 dB (≥ 40 dB).
5. Detection: the luminance is high-passed and folded modulo a lattice into a 32×32 tile;
   the tile's DFT at the mark's frequencies is read. Lattices tried: (a) the native period
   for the image size, unshifted; (b) the native period with a cyclic-shift search (crops);
   (c) up to 3 lattices estimated *without the key* from the comb of spectral peaks that any
   periodic mark leaves (resize, rotation, crop+resize), each refined by a least-squares fit
   of the peak positions (a general 2×2 affine map). The shift is found by FFT correlation
   with the pilot. Video frames are folded into one accumulator (soft aggregation).
6. The test statistic is S = Σ_{pilot} cos(arg F_k − φ_k − 2π k·d/32). If the image does not
   carry this key's mark, φ_k are uniform and independent of the image, so each term is an
   independent cos(uniform) with E e^{λ cos} = I₀(λ): the Chernoff bound
   P(S ≥ t) ≤ min_λ exp(−λ t) I₀(λ)^M is an exact-in-exponent, rigorous p-value for any image,
   marked with another key or not. Bonferroni: α/2 for (a), α/2 over 4 lattices × 32² shifts
   for (b, c). `detected` iff p ≤ threshold (default 1e-6 = the false-positive rate per file).
   The payload is reported only when detected *and* its CRC checks; otherwise null.

Capacity and limits: payload is 32 bits at every size. A 32×32 image holds exactly one period
(frequencies up to 0.375 cycles/pixel): round trips and mild JPEG work, geometric attacks do
not. Scale-and-rotation search covers rotations within ±6° and periods 16–256 px after the
attack. A periodic mark's spectral comb is visible to an adversary who looks for it; this
scheme aims at robustness to ordinary processing, not at secrecy of its presence.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import json
import math
import os
import zlib
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import MediaError, UsageError

ALGORITHM = "posthoc-v1"
BAND = (6.0, 15.0)  # |k| range of the mark's frequencies, cycles per tile
G = 32  # folded tile grid (bins per period)
N_PILOT = 64  # pilot frequencies; the remaining ones carry the payload
PAYLOAD_BITS = 32
CRC_BITS = 32
MIN_SIDE = 32
DEFAULT_THRESHOLD = 1e-6
ISS_MU = 0.5  # fraction of the host's in-band component cancelled at embedding
DEFAULT_RMS = 2.0  # luminance RMS of the mark at strength 1 (PSNR ≈ 42 dB before clipping)
PERIODS = tuple(32.0 * 2 ** (j / 2) for j in range(5))  # 32, 45.3, 64, 90.5, 128 px
VIDEO_PERIODS_PER_SIDE = 2.0  # video: longer periods (lower frequencies) survive H.264
N_ESTIMATED = 3  # lattices estimated from the spectral comb (any scale / rotation)
ROT_RANGE_DEG = 6.0
KEY_FORMAT = "forensics-watermark-key"


# ---------------------------------------------------------------------------------------------
# Keys


@dataclasses.dataclass(frozen=True)
class WatermarkKey:
    secret: bytes
    path: str | None = None

    @property
    def fingerprint(self) -> str:
        """A short public id of the key (not secret): the first 8 hex digits of its SHA-256."""
        return hashlib.sha256(self.secret).hexdigest()[:8]


def default_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "forensics" / "watermark.key"


def new_key() -> WatermarkKey:
    return WatermarkKey(os.urandom(32))


def save_key(key: WatermarkKey, path: str | os.PathLike) -> Path:
    """Write the key as JSON with mode 0600 (its folder 0700 when created); never overwrites."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"format": KEY_FORMAT, "version": 1, "algorithm": ALGORITHM, "key": key.secret.hex(),
           "fingerprint": key.fingerprint,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        os.link(tmp, path)  # fails if a key appeared meanwhile: never replace a key
    finally:
        os.unlink(tmp)
    return path


def load_key(path: str | os.PathLike | None = None, *, create: bool = False) -> WatermarkKey:
    """Read a key file (JSON from `save_key`, or 64 hex digits). With `create`, a missing file
    is made with a fresh random key (first use)."""
    p = Path(path) if path is not None else default_key_path()
    if not p.exists():
        if not create:
            where = f"--key {p}" if path is not None else f"the default key {p}"
            raise UsageError(f"no watermark key: {where} does not exist (embed once to create it, "
                             "or pass --key FILE)")
        try:
            save_key(new_key(), p)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UsageError(f"cannot create the watermark key {p}: {exc.strerror}") from None
    try:
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the watermark key {p}: {exc}") from None
    hexkey = text
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            hexkey = str(doc["key"])
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{p} is not a watermark key file (JSON without a 'key' field)") from None
        if doc.get("algorithm", ALGORITHM) != ALGORITHM:
            raise UsageError(f"{p} is a key for {doc.get('algorithm')!r}, not {ALGORITHM!r}")
    try:
        secret = bytes.fromhex(hexkey)
    except ValueError:
        raise UsageError(f"{p} is not a watermark key file (expected 64 hex digits)") from None
    if len(secret) != 32:
        raise UsageError(f"{p}: a watermark key is 32 bytes (64 hex digits); got {len(secret)} bytes")
    return WatermarkKey(secret, str(p))


def parse_payload(text: str) -> bytes:
    """A payload from hex ('c0ffee42', '0x2a'): at most 32 bits, left-padded with zeros."""
    t = text.strip().lower()
    t = t[2:] if t.startswith("0x") else t
    if not t or len(t) > PAYLOAD_BITS // 4 or any(c not in "0123456789abcdef" for c in t):
        raise UsageError(f"--payload must be 1 to {PAYLOAD_BITS // 4} hex digits (a {PAYLOAD_BITS}-bit id); "
                         f"got {text!r}")
    return bytes.fromhex(t.rjust(PAYLOAD_BITS // 4, "0"))


# ---------------------------------------------------------------------------------------------
# Error correction: CRC-32 and a K=7 convolutional code with soft Viterbi decoding

GENERATORS = (0o117, 0o127, 0o155, 0o171)  # K = 7, rate 1/4
_K = 7
_NSTATE = 1 << (_K - 1)
N_MSG = PAYLOAD_BITS + CRC_BITS


def n_coded() -> int:
    return len(GENERATORS) * (N_MSG + _K - 1)


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, as zlib)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    out = np.zeros_like(x)
    while np.any(x):
        out ^= x & 1
        x >>= 1
    return out


@lru_cache(maxsize=4)
def _trellis(gens: tuple[int, ...]):
    s = np.arange(_NSTATE)
    out = np.zeros((_NSTATE, 2, len(gens)), np.int8)
    nxt = np.zeros((_NSTATE, 2), np.int64)
    for b in (0, 1):
        full = (b << (_K - 1)) | s
        for j, g in enumerate(gens):
            out[:, b, j] = _parity(full & g)
        nxt[:, b] = full >> 1
    return out, nxt


def conv_encode(bits: np.ndarray) -> np.ndarray:
    out, nxt = _trellis(GENERATORS)
    state, coded = 0, []
    for b in list(np.asarray(bits).astype(int)) + [0] * (_K - 1):
        coded += list(out[state, b])
        state = nxt[state, b]
    return np.array(coded, np.int8)


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi: `soft[j] > 0` favours coded bit 0. Ends in state 0 (zero tail)."""
    out, nxt = _trellis(GENERATORS)
    r = len(GENERATORS)
    steps = len(soft) // r
    sign = 1.0 - 2.0 * out  # (S, 2, r)
    metric = np.full(_NSTATE, -np.inf)
    metric[0] = 0.0
    back = np.zeros((steps, _NSTATE), np.int64)  # chosen predecessor of every next state
    # next state ns comes from input b = ns >> (K-2) and state ((ns mod 2^(K-2)) << 1) | {0, 1}
    ns = np.arange(_NSTATE)
    b_of = ns >> (_K - 2)
    p0 = (ns & ((1 << (_K - 2)) - 1)) << 1
    p1 = p0 | 1
    for t in range(steps):
        bm = sign @ soft[r * t:r * t + r]  # (S, 2)
        c0 = metric[p0] + bm[p0, b_of]
        c1 = metric[p1] + bm[p1, b_of]
        choose1 = c1 > c0
        metric = np.where(choose1, c1, c0)
        back[t] = np.where(choose1, p1, p0)
    state = 0
    bits = np.zeros(steps, np.int8)
    for t in range(steps - 1, -1, -1):
        bits[t] = state >> (_K - 2)
        state = back[t, state]
    return bits[: steps - (_K - 1)]


def _bits(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8)).astype(np.int8)


def _message(payload: bytes, crc_mask: int) -> np.ndarray:
    crc = crc32(payload) ^ crc_mask
    return np.concatenate([_bits(payload), _bits(crc.to_bytes(4, "big"))])


# ---------------------------------------------------------------------------------------------
# The keyed layout


@dataclasses.dataclass(frozen=True)
class Layout:
    k: np.ndarray  # (n, 2) int (kx, ky), half plane, BAND
    phase: np.ndarray  # (n,) φ_k
    pilot: np.ndarray  # indices into k
    payload: np.ndarray  # indices into k
    chip_bit: np.ndarray  # (2 * len(payload),) coded-bit index of each chip (Re, Im per bin)
    chip_sign: np.ndarray  # (2 * len(payload),) ±1
    crc_mask: int


def _rng(secret: bytes, label: str) -> np.random.Generator:
    d = hmac.new(secret, label.encode(), hashlib.sha256).digest()
    return np.random.default_rng(int.from_bytes(d, "big"))


@lru_cache(maxsize=1)
def band_frequencies() -> np.ndarray:
    lo, hi = BAND
    r = int(hi)
    ks = [(kx, ky) for ky in range(0, r + 1) for kx in range(-r, r + 1)
          if (ky > 0 or kx > 0) and lo <= math.hypot(kx, ky) <= hi]
    return np.array(ks, np.int64)


@lru_cache(maxsize=8)
def layout_for(secret: bytes) -> Layout:
    k = band_frequencies()
    n = len(k)
    phase = _rng(secret, "phase").uniform(0, 2 * np.pi, n)
    order = _rng(secret, "split").permutation(n)
    pilot, payload = np.sort(order[:N_PILOT]), np.sort(order[N_PILOT:])
    n_chips = 2 * len(payload)
    chip_bit = _rng(secret, "interleave").permutation(n_chips) % n_coded()
    chip_sign = _rng(secret, "sign").choice([-1.0, 1.0], n_chips)
    crc_mask = int(_rng(secret, "crc").integers(0, 1 << CRC_BITS))
    return Layout(k, phase, pilot, payload, chip_bit, chip_sign, crc_mask)


def coefficients(layout: Layout, payload: bytes) -> np.ndarray:
    """Unit complex coefficient c_k of every mark frequency for this payload."""
    coded = conv_encode(_message(payload, layout.crc_mask))
    chips = layout.chip_sign * (1.0 - 2.0 * coded[layout.chip_bit])  # ±1
    c = np.exp(1j * layout.phase)
    qpsk = (chips[0::2] + 1j * chips[1::2]) / math.sqrt(2)
    c[layout.payload] = c[layout.payload] * qpsk
    return c


# ---------------------------------------------------------------------------------------------
# Geometry


def tile_period(h: int, w: int, video: bool = False) -> float:
    """The mark's period for an image of this size: the largest of PERIODS ≤ min(H, W) / 4
    (at least 32). The set is closed under ×√2 and ×2, so a crop keeps the period and a resize by
    1/√2, 1/2 or 1/4 lands on another member the detector tries."""
    fit = [p for p in PERIODS if p <= min(h, w) / (VIDEO_PERIODS_PER_SIDE if video else 4.0)]
    return fit[-1] if fit else PERIODS[0]


def luma(rgb: np.ndarray) -> np.ndarray:
    a = rgb.astype(np.float32)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def render(c: np.ndarray, k: np.ndarray, basis_inv_t: np.ndarray, h: int, w: int) -> np.ndarray:
    """Σ_k Re(c_k exp(2πi k·u)), u = Aᵀ p, p = pixel centre (x + ½, y + ½); axis-aligned A only."""
    ax, ay = basis_inv_t[0, 0], basis_inv_t[1, 1]
    xs = (np.arange(w) + 0.5) * ax
    ys = (np.arange(h) + 0.5) * ay
    kxs = np.arange(-int(BAND[1]), int(BAND[1]) + 1)
    kys = np.arange(0, int(BAND[1]) + 1)
    cm = np.zeros((len(kys), len(kxs)), np.complex128)
    cm[k[:, 1], k[:, 0] + int(BAND[1])] = c
    ex = np.exp(2j * np.pi * np.outer(kxs, xs))  # (nkx, W)
    ey = np.exp(2j * np.pi * np.outer(ys, kys))  # (H, nky)
    return np.real((ey @ cm) @ ex).astype(np.float32)  # (H, W)


def activity_mask(y: np.ndarray) -> np.ndarray:
    """Local texture energy, normalised to RMS 1 and limited to [0.35, 2.5]× its RMS."""
    hp = y - cv2.GaussianBlur(y, (0, 0), 1.5)
    act = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), 3.0))
    m = act + 2.0
    m = m / math.sqrt(float(np.mean(m * m)))
    m = np.clip(m, 0.35, 2.5)
    return (m / math.sqrt(float(np.mean(m * m)))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Embedding


def embed(rgb: np.ndarray, key: WatermarkKey, payload: bytes, strength: float = 1.0,
          *, mask: bool = True) -> np.ndarray:
    """Mark one RGB uint8 image (H, W, 3); returns a new array."""
    return embed_frames(rgb[None], key, payload, strength, mask=mask, video=False)[0]


def embed_frames(frames: np.ndarray, key: WatermarkKey, payload: bytes, strength: float = 1.0,
                 *, mask: bool = True, video: bool | None = None) -> np.ndarray:
    """Mark frames (T, H, W, 3) of one size with the same tile (video: per frame)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MediaError(f"expected RGB uint8 frames; got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    _check_size(h, w)
    video = t > 1 if video is None else video
    if not (0 < strength <= 20):
        raise UsageError(f"--strength must be in (0, 20]; got {strength}")
    if len(payload) * 8 != PAYLOAD_BITS:
        raise UsageError(f"the payload is {PAYLOAD_BITS} bits; got {len(payload) * 8}")
    lay = layout_for(key.secret)
    p = tile_period(h, w, video)
    a = np.eye(2) / p
    c = coefficients(lay, payload)
    unit = render(c, lay.k, a, h, w)
    s0 = DEFAULT_RMS * strength / float(np.sqrt(np.mean(unit * unit)))
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        y = luma(f)
        m = activity_mask(y) if mask else np.ones_like(y)
        x = _informed(y, m, c, s0 * unit, a, lay) if ISS_MU > 0 else c
        delta = s0 * m * (unit if x is c else render(x, lay.k, a, h, w))
        out[i] = np.clip(np.round(f.astype(np.float32) + delta[..., None]), 0, 255).astype(np.uint8)
    return out


def _informed(y, m, c, probe, a, lay) -> np.ndarray:
    """Informed embedding (improved spread spectrum, Malvar & Florêncio 2003): coefficients
    x = βc − μh that cancel a fraction μ of the host's own component h at the mark's
    frequencies (as the detector's aligned fold sees it), at the same energy as c."""
    def spec(img):
        return lattice_spectrum([img], a, lay.k)

    hs = spec(y)
    g = np.real((spec(y + m * probe) - hs) * np.conj(c))  # gain of a unit coefficient
    g = np.maximum(g, 0.2 * max(float(np.median(g)), 1e-6))
    h = hs / g
    n = len(c)
    b_ = float(np.sum(np.real(np.conj(c) * h)))
    c_ = float(np.sum(np.abs(h) ** 2))
    mu = ISS_MU
    while True:  # n β² − 2μBβ + μ²C = n; keep β ≥ 0.6 by cancelling less if needed
        disc = (mu * b_) ** 2 - n * (mu * mu * c_ - n)
        beta = (mu * b_ + math.sqrt(max(disc, 0.0))) / n
        if beta >= 0.6 or mu < 0.05:
            break
        mu *= 0.8
    return beta * c - mu * h


def _check_size(h: int, w: int) -> None:
    if min(h, w) < MIN_SIDE:
        raise MediaError(f"image is {w}x{h}; the watermark needs at least {MIN_SIDE}x{MIN_SIDE} pixels")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------------
# Detection: statistics


def _log_i0(x: np.ndarray) -> np.ndarray:
    from scipy.special import i0e

    return np.log(i0e(x)) + np.abs(x)


def chernoff_tail(t: float, m: int) -> float:
    """P(Σ_{j<m} cos θ_j ≥ t) ≤ min_λ exp(−λt)·I₀(λ)^m for iid uniform θ_j (rigorous bound)."""
    if t <= 0:
        return 1.0
    if t >= m:
        return 0.0
    lam = np.concatenate([np.linspace(0, 4, 401)[1:], np.geomspace(4, 2000, 600)])
    expo = -lam * t + m * _log_i0(lam)
    return float(min(1.0, math.exp(float(expo.min()))))


# ---------------------------------------------------------------------------------------------
# Detection: folding and lattices


def prefilter(y: np.ndarray, period: float) -> np.ndarray:
    """High-pass (remove the host's low frequencies, which would leak into the band) and clip
    large residuals (edges) so a few strong structures do not dominate the fold."""
    sigma = max(1.0, period / 10.0)
    hp = y - cv2.GaussianBlur(y, (0, 0), sigma)
    act = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), max(2.0, period / 8.0))) + 1.0
    return (hp / act).astype(np.float32)


class _Fold:
    """Accumulates the fold of (possibly several) frames modulo a lattice with fold map A."""

    def __init__(self, a: np.ndarray, h: int, w: int):
        self.a = a  # f = A k ; u = Aᵀ p
        ys, xs = np.mgrid[0:h, 0:w]
        px, py = xs.ravel() + 0.5, ys.ravel() + 0.5
        ux = a[0, 0] * px + a[1, 0] * py
        uy = a[0, 1] * px + a[1, 1] * py
        jx = np.floor((ux - np.floor(ux)) * G).astype(np.int64) % G
        jy = np.floor((uy - np.floor(uy)) * G).astype(np.int64) % G
        self.index = jy * G + jx
        self.counts = np.bincount(self.index, minlength=G * G).astype(np.float64)
        self.period = 1.0 / math.sqrt(abs(np.linalg.det(a)))
        self.reset()

    def reset(self) -> None:
        self.sums = np.zeros(G * G)
        self.frames = 0

    def add(self, yf: np.ndarray) -> None:
        self.sums += np.bincount(self.index, weights=yf.ravel().astype(np.float64), minlength=G * G)
        self.frames += 1

    def spectrum(self, k: np.ndarray) -> np.ndarray:
        """F_k of the folded tile, referenced to bin centres."""
        tile = np.where(self.counts > 0, self.sums / np.maximum(self.counts * max(self.frames, 1), 1), 0.0)
        tile = tile.reshape(G, G)
        tile -= tile.mean()
        f = np.fft.fft2(tile)
        kx, ky = k[:, 0], k[:, 1]
        return f[ky % G, kx % G] * np.exp(-1j * np.pi * (kx + ky) / G)


def _downsample(y: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return y
    h, w = (y.shape[0] // f) * f, (y.shape[1] // f) * f
    return cv2.resize(y[:h, :w], (w // f, h // f), interpolation=cv2.INTER_AREA)


def lattice_spectrum(lumas: list[np.ndarray], a: np.ndarray, k: np.ndarray,
                     cache: dict | None = None) -> np.ndarray:
    """F_k of the frames folded modulo the lattice of A (f = A k), after the prefilter.
    Long periods are folded from a 2× or 4× area-downsampled luminance (same bins, less work):
    pixel centres scale exactly (p = f·p′), so the map becomes f·A."""
    period = 1.0 / math.sqrt(abs(np.linalg.det(a)))
    f = 1 if period < 80 else 2 if period < 160 else 4
    cache = {} if cache is None else cache
    if f not in cache:
        cache[f] = [_downsample(y, f) for y in lumas]
    src = cache[f]
    fold = _Fold(a * f, *src[0].shape)
    for y in src:
        fold.add(prefilter(y, period / f))
    return fold.spectrum(k)


def comb_spectrum(lumas: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Power spectrum of a central ≤512² window (prefiltered, no taper), zero-padded ≥ 4× so
    that it samples the DTFT finely, divided by its geometric mean over each frequency ring.
    A periodic mark leaves peaks ≈ (1 + wm/host power) at its comb f = A k; elsewhere ≈ 1."""
    h, w = lumas[0].shape
    s = min(512, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    n = 1 << max(10, int(math.ceil(math.log2(4 * s))) - (1 if s > 256 else 0))
    power = np.zeros((n, n))
    step = max(1, len(lumas) // 8)
    for y in lumas[::step][:8]:
        c = prefilter(y[y0:y0 + s, x0:x0 + s].astype(np.float32), 48.0)
        power += np.abs(np.fft.fft2(c - c.mean(), s=(n, n))) ** 2
    f = np.fft.fftfreq(n)
    ring = np.round(np.hypot(f[None, :], f[:, None]) * s).astype(np.int64)
    logp = np.log(power + 1e-12)
    mean = np.bincount(ring.ravel(), logp.ravel()) / np.maximum(np.bincount(ring.ravel()), 1)
    return np.exp(logp - mean[ring]), s


_Q_NULL = math.exp(0.5772156649)  # mean (and sd) of a ring-normalised exponential power


def _comb_score(q: np.ndarray, periods: np.ndarray, angles: np.ndarray, k: np.ndarray,
                interpolate: bool = False) -> np.ndarray:
    """z-score of the mean capped peak ratio at the comb f = R(θ) k / P, shape (P, R)."""
    n = q.shape[0]
    c, s_ = np.cos(angles)[:, None], np.sin(angles)[:, None]
    kx, ky = k[None, :, 0].astype(np.float32), k[None, :, 1].astype(np.float32)
    rx, ry = (c * kx - s_ * ky).astype(np.float32), (s_ * kx + c * ky).astype(np.float32)  # (R, n)
    inv = (1.0 / periods).astype(np.float32)[:, None, None]
    fx, fy = rx[None] * inv, ry[None] * inv  # (P, R, n)
    valid = fx * fx + fy * fy < 0.42**2
    if interpolate:  # bilinear between DTFT samples
        gx, gy = fx * n, fy * n
        x0, y0 = np.floor(gx), np.floor(gy)
        wx, wy = gx - x0, gy - y0
        x0, y0 = x0.astype(np.int64) % n, y0.astype(np.int64) % n
        x1, y1 = (x0 + 1) % n, (y0 + 1) % n
        v = ((1 - wy) * ((1 - wx) * q[y0, x0] + wx * q[y0, x1]) + wy * ((1 - wx) * q[y1, x0] + wx * q[y1, x1]))
    else:
        v = q[np.rint(fy * n).astype(np.int64) % n, np.rint(fx * n).astype(np.int64) % n]
    v = np.minimum(v, 12.0)
    cnt = valid.sum(-1)
    mean = np.where(valid, v, 0).sum(-1) / np.maximum(cnt, 1)
    return (mean - _Q_NULL) * np.sqrt(cnt) / _Q_NULL


def _map(period: float, angle: float) -> np.ndarray:
    c, s_ = math.cos(angle), math.sin(angle)
    return np.array([[c, -s_], [s_, c]]) / period  # A = R(θ) / P


def estimate_lattices(lumas: list[np.ndarray], n: int = N_ESTIMATED) -> list[dict]:
    """Up to n candidate fold maps A (f = A k) of a periodic mark, found without the key: a
    grid search over period (0.5 % steps, 16 px to half the window) and rotation (±6°, 0.5°)
    of the comb score, then a finer local search (0.1 %, 0.1°) around each of the best."""
    h, w = lumas[0].shape
    if min(h, w) < 64:
        return []
    q, s = comb_spectrum(lumas)
    k = band_frequencies()
    p_hi = s / 2.0
    periods = np.geomspace(16.0, p_hi, max(2, int(math.log(p_hi / 16.0) / math.log(1.005)) + 1))
    angles = np.deg2rad(np.arange(-ROT_RANGE_DEG, ROT_RANGE_DEG + 1e-9, 0.5))
    score = _comb_score(q, periods, angles, k)  # (P, R)
    out: list[dict] = []
    for idx in np.argsort(score, axis=None)[::-1][:400]:
        pi, ri = np.unravel_index(idx, score.shape)
        if any(abs(math.log(periods[pi] / o["period"])) < 0.03 and abs(angles[ri] - o["angle"]) < 0.03
               for o in out):
            continue
        fp = periods[pi] * np.exp(np.linspace(-0.005, 0.005, 21))
        fa = angles[ri] + np.deg2rad(np.linspace(-0.3, 0.3, 13))
        fine = _comb_score(q, fp, fa, k, interpolate=True)
        bi, bj = np.unravel_index(int(np.argmax(fine)), fine.shape)
        out.append({"A": _map(fp[bi], fa[bj]), "period": float(fp[bi]),
                    "angle": float(fa[bj]), "score": float(fine[bi, bj])})
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------------------------------------
# Detection


@dataclasses.dataclass
class Detection:
    detected: bool
    payload: str | None
    p_value: float
    bit_accuracy: float | None
    frames_used: int
    threshold: float
    payload_valid: bool
    hypothesis: str
    period: float
    rotation_deg: float
    statistic: float
    pilot_p: float
    soft: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def to_json(self) -> dict:
        return {"detected": self.detected, "payload": self.payload, "p_value": _sig(self.p_value),
                "bit_accuracy": None if self.bit_accuracy is None else round(self.bit_accuracy, 4),
                "frames_used": self.frames_used,
                "threshold": self.threshold, "payload_valid": self.payload_valid,
                "sync": self.hypothesis, "period_px": round(self.period, 3),
                "rotation_deg": round(self.rotation_deg, 3), "pilot_statistic": round(self.statistic, 3),
                "pilot_p_value": _sig(self.pilot_p)}


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


N_PER_FRAME = 2  # video: per-frame synchronisation on the native and the best estimated lattice
N_ATTEMPTS = 1 + len(PERIODS) + N_ESTIMATED + N_PER_FRAME  # every decoding attempt, fixed budget


def detect(rgb: np.ndarray, key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD) -> Detection:
    return detect_lumas([luma(rgb)], key, threshold)


def detect_frames(frames, key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD) -> Detection:
    return detect_lumas([luma(f) for f in frames], key, threshold)


def detect_lumas(lumas: list[np.ndarray], key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD,
                 video: bool | None = None) -> Detection:
    """Test for this key's mark in one image or the frames of one video (same size).

    p-value (valid for any input not marked with this key; over the key's randomness):
    every decoding attempt X (its sync found from the pilot alone) has a pilot p-value p_X
    (Chernoff bound, × 32² for a shift search) and a CRC verdict; the CRC mask is a uniform
    24-bit part of the key independent of everything the decoder sees, so a valid CRC under the
    null has probability 2⁻²⁴ independently of p_X, and q_X = p_X·2⁻²⁴ (valid) or p_X satisfies
    P(q_X ≤ x) ≤ 2x. Over the fixed budget of N_ATTEMPTS attempts, p = 2·N_ATTEMPTS·min_X q_X.
    """
    if not lumas:
        raise MediaError("no frame to analyse")
    h, w = lumas[0].shape
    _check_size(h, w)
    if not (0 < threshold < 1):
        raise UsageError(f"threshold must be in (0, 1); got {threshold}")
    lay = layout_for(key.secret)
    k = lay.k
    kp = k[lay.pilot]
    m = len(lay.pilot)
    p0 = tile_period(h, w, len(lumas) > 1 if video is None else video)

    lattices = [("native", np.eye(2) / p0)]
    lattices += [(f"period {q:.1f}", np.eye(2) / q) for q in PERIODS if q != p0 and 2 * q <= max(h, w)]
    estimated = [("estimated", c["A"]) for c in estimate_lattices(lumas)]
    lattices = (lattices + estimated)[:N_ATTEMPTS - 1 - N_PER_FRAME]
    attempts = []  # (name, A, F, surface, shift, pilot p-value)
    cache: dict = {}
    for li, (name, a) in enumerate(lattices):
        f = lattice_spectrum(lumas, a, k, cache)
        surf = _pilot_surface(f, lay)
        if li == 0:
            attempts.append(("aligned", a, f, surf, (0, 0), chernoff_tail(float(surf[0, 0]), m)))
        dy, dx = np.unravel_index(int(np.argmax(surf)), surf.shape)
        if li > 0 or (dy, dx) != (0, 0):
            attempts.append((name if li else "shifted", a, f, surf, (int(dy), int(dx)),
                             min(1.0, G * G * chernoff_tail(float(surf[dy, dx]), m))))

    best = None
    for name, a, f, surf, d, p_pilot in attempts:
        res = _finish(_soft_at(f, surf, d, lay), lay)
        q = p_pilot * (2.0 ** -CRC_BITS if res["valid"] else 1.0)
        if best is None or q < best["q"]:
            best = {"q": q, "name": name, "A": a, "p_pilot": p_pilot, "stat": float(surf[d]), **res}
    if len(lumas) > 1 and not (best["valid"] and best["p_pilot"] < 1e-3):
        # Per-frame synchronisation: a re-encoder's motion compensation drags a static mark
        # along with the scene, so each frame gets its own shift; the chips of the frames
        # whose pilot peak clears the null's typical maximum are combined, weighted.
        for name, a in ([lattices[0]] + estimated[:1])[:N_PER_FRAME]:
            res = _per_frame(lumas, a, lay)
            if res is not None and res["valid"] and 2.0 ** -CRC_BITS < best["q"]:
                best = {"q": 2.0 ** -CRC_BITS, "name": f"per-frame {name}", "A": a, "p_pilot": 1.0, **res}
    p = min(1.0, 2.0 * N_ATTEMPTS * best["q"])
    detected = p <= threshold
    a = best["A"]
    period = 1.0 / math.sqrt(abs(np.linalg.det(a)))
    rotation = math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
    return Detection(
        detected=bool(detected),
        payload=best["payload"] if detected and best["valid"] else None,
        p_value=float(p),
        bit_accuracy=best["accuracy"] if detected else None,
        frames_used=len(lumas), threshold=threshold,
        payload_valid=bool(detected and best["valid"]),
        hypothesis=best["name"], period=period, rotation_deg=rotation, statistic=best["stat"],
        pilot_p=float(best["p_pilot"]), soft=best["soft"])


def _pilot_surface(f: np.ndarray, lay: Layout) -> np.ndarray:
    """S(d) = Σ_pilot cos(arg F_k − φ_k − 2π k·d/G) at every integer shift d = (dy, dx)."""
    kp = lay.k[lay.pilot]
    z = np.exp(1j * (np.angle(f[lay.pilot]) - lay.phase[lay.pilot]))
    grid = np.zeros((G, G), np.complex128)
    grid[kp[:, 1] % G, kp[:, 0] % G] = z
    return np.real(np.fft.fft2(grid))


def _per_frame(lumas: list[np.ndarray], a: np.ndarray, lay: Layout) -> dict | None:
    m = len(lay.pilot)
    tau = math.sqrt(m / 2.0) * math.sqrt(2.0 * math.log(G * G))  # typical null maximum
    total, used, peak = np.zeros(n_coded()), 0, 0.0
    for y in lumas:
        f = lattice_spectrum([y], a, lay.k)
        surf = _pilot_surface(f, lay)
        d = np.unravel_index(int(np.argmax(surf)), surf.shape)
        weight = (float(surf[d]) - tau) / m
        if weight > 0:
            total += weight * _soft_at(f, surf, (int(d[0]), int(d[1])), lay)
            used += 1
            peak = max(peak, float(surf[d]))
    if not used:
        return None
    return {**_finish(total, lay), "stat": peak}


def _soft_at(f: np.ndarray, surf: np.ndarray, d: tuple[int, int], lay: Layout) -> np.ndarray:
    """Soft coded bits (positive favours 0) with the tile shifted by d (refined to sub-bin)."""
    dy, dx = _subbin(surf, d)
    k = lay.k
    aligned = f * np.exp(-1j * lay.phase) * np.exp(-2j * np.pi * (k[:, 0] * dx + k[:, 1] * dy) / G)
    return _soft(aligned, lay)


def _finish(soft: np.ndarray, lay: Layout) -> dict:
    msg = viterbi_decode(soft)
    coded = conv_encode(msg)
    acc = float(np.mean((soft < 0).astype(np.int8) == coded))
    payload = np.packbits(msg[:PAYLOAD_BITS].astype(np.uint8)).tobytes()
    crc = int.from_bytes(np.packbits(msg[PAYLOAD_BITS:].astype(np.uint8)).tobytes(), "big")
    valid = crc == (crc32(payload) ^ lay.crc_mask)
    return {"payload": payload.hex(), "valid": bool(valid), "accuracy": acc, "soft": soft}


def _subbin(surf: np.ndarray, d: tuple[int, int]) -> tuple[float, float]:
    dy, dx = d

    def off(l, c, r):
        den = l - 2 * c + r
        return 0.0 if den >= 0 else float(np.clip(0.5 * (l - r) / den, -0.5, 0.5))

    oy = off(surf[(dy - 1) % G, dx], surf[dy, dx], surf[(dy + 1) % G, dx])
    ox = off(surf[dy, (dx - 1) % G], surf[dy, dx], surf[dy, (dx + 1) % G])
    return dy + oy, dx + ox


def _soft(aligned: np.ndarray, lay: Layout) -> np.ndarray:
    """Soft coded bits from key-aligned coefficients: each payload frequency gives two chips
    (real, imaginary), normalised by a per-radius noise scale (the host's spectrum falls with
    frequency), and each coded bit sums its chips with their keyed signs."""
    v = aligned[lay.payload]
    k = lay.k[lay.payload]
    r = np.round(np.hypot(k[:, 0], k[:, 1])).astype(int)
    scale = np.ones(len(v))
    for ring in np.unique(r):
        sel = r == ring
        scale[sel] = np.sqrt(np.median(np.abs(v[sel]) ** 2)) + 1e-9
    v = v / scale * math.sqrt(2)
    chips = np.empty(2 * len(v))
    chips[0::2], chips[1::2] = v.real, v.imag
    soft = np.zeros(n_coded())
    np.add.at(soft, lay.chip_bit, chips * lay.chip_sign)
    return soft


# ---------------------------------------------------------------------------------------------
# Files (images and MP4)

MAX_EMBED_BYTES = 1_500_000_000  # decoded frames held in memory while marking a video
MAX_DETECT_PIXELS = 64_000_000  # luminance samples aggregated when detecting in a video
DEFAULT_MAX_FRAMES = 64
IMAGE_OUT = {".png", ".jpg", ".jpeg"}


def default_payload(path: str | os.PathLike) -> bytes:
    """The first 32 bits of the SHA-256 of the source file: a content id."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()[: PAYLOAD_BITS // 8]


def embed_file(src: str | os.PathLike, dst: str | os.PathLike, key: WatermarkKey,
               payload: bytes | None = None, strength: float = 1.0) -> dict:
    """Mark an image (written as PNG, or JPEG quality 95, by the output's extension) or a video
    (written as H.264 MP4, CRF 18, audio dropped)."""
    from .. import media

    src, dst = Path(src), Path(dst)
    kind = media.sniff(src)
    payload = default_payload(src) if payload is None else payload
    ext = dst.suffix.lower()
    if kind == "image":
        if ext not in IMAGE_OUT:
            raise UsageError(f"{dst}: a marked image is written as .png or .jpg/.jpeg; got {ext or 'no extension'!r}")
        rgb = media.read_image(src)
        out = embed(rgb, key, payload, strength)
        if ext == ".png":
            media.write_png(dst, out)
        else:
            media.write_jpeg(dst, out, quality=95)
        quality, frames = psnr(rgb, out), 1
    else:
        if ext != ".mp4":
            raise UsageError(f"{dst}: a marked video is written as .mp4; got {ext or 'no extension'!r}")
        reader = media.VideoReader(src)
        i = reader.info
        if i.frames * i.width * i.height * 3 > MAX_EMBED_BYTES:
            raise MediaError(f"video is too long to mark in memory ({i.frames} frames of {i.width}x{i.height}); "
                             "cut it into shorter clips", src)
        clip = reader.read_all()
        marked = embed_frames(clip, key, payload, strength)
        media.write_mp4(dst, marked, fps=reader.fps or 25.0)
        quality, frames = float(np.mean([psnr(a, b) for a, b in zip(clip, marked)])), len(clip)
    return {"path": str(dst), "source": str(src), "method": "posthoc", "payload": payload.hex(),
            "psnr_db": round(quality, 2), "frames": frames, "strength": strength,
            "key_fingerprint": key.fingerprint}


def detect_file(path: str | os.PathLike, key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD,
                max_frames: int = DEFAULT_MAX_FRAMES) -> dict:
    """The `watermark detect --json` record of one image or video (DESIGN.md)."""
    from .. import media

    if max_frames < 1:
        raise UsageError(f"--max-frames must be ≥ 1; got {max_frames}")
    kind = media.sniff(path)
    if kind == "image":
        lumas = [luma(media.read_image(path))]
    else:
        info = media.probe_video(path)
        cap = max(1, min(max_frames, MAX_DETECT_PIXELS // max(1, info.width * info.height)))
        _, frames, _ = media.frames_of(path, max_frames=cap)
        lumas = [luma(f) for f in frames]
    h, w = lumas[0].shape
    if min(h, w) < MIN_SIDE:
        raise MediaError(f"{kind} is {w}x{h}; the watermark needs at least {MIN_SIDE}x{MIN_SIDE} pixels", path)
    d = detect_lumas(lumas, key, threshold)
    return {"path": str(path), "method": "posthoc", **d.to_json(), "key_fingerprint": key.fingerprint}
