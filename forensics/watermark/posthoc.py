"""Post-hoc watermark: a keyed, periodic spread-spectrum mark in the luminance with a 32-bit
payload, error correction, key-free re-synchronisation and a stated false-positive rate.

Method (our design, built from classic parts: periodic self-referencing marks, Kutter 1999;
spread spectrum, Cox et al. 1997; informed embedding, Miller, Cox & Bloom 2004; quantisation
index modulation, Chen & Wornell 2001):

1. Tile. The mark is a tile of period P px repeated over the image, made of sinusoids: each
   integer frequency k = (kx, ky) of the tile with 6 ≤ |k| ≤ 15 cycles/tile (300 in a half
   plane) carries a complex coefficient c_k. P is the largest of 32, 45, 64 px that is
   ≤ min(H, W)/4: from 256 px up, P = 64 and the mark lives at 0.09–0.23 cycles/px (longer
   periods would put it where photos carry the most energy). The detector also tries 90 and
   128 px; the set is closed under ×√2 and ×2, so a crop keeps P and a halving lands on it.
2. Key. 32 random bytes seed (HMAC-SHA256 per purpose) a uniform phase φ_k per frequency, a
   split into 64 *pilot* frequencies (c_k = e^{iφ_k}: detection and synchronisation) and 236
   *payload* frequencies (c_k = e^{iφ_k}(s₁ + i s₂)/√2: two coded chips each), interleavers,
   chip signs and a 32-bit CRC mask.
3. Payload. 32 bits + CRC-32 (XOR the key's mask) → convolutional code K = 7, rate 1/2
   (171, 133 octal), zero tail → 140 coded bits over 472 chips (≈ 3.4 each), decoded by
   soft-decision Viterbi.
4. Embedding (informed). The detector's own view of the host (step 5, aligned lattice) is
   computed first. Every payload chip gets a floor amplitude, and every coded bit whose soft
   value the host pushes below a margin τ gets the deficit added on its chips (the least
   energy that reaches τ; τ as large as the energy budget allows). The pattern is multiplied
   by a texture mask (less in flat regions), scaled to 2.0 grey levels RMS × strength
   (× 1.15 for 128–255 px images) and added equally to R, G and B: PSNR ≈ 42 dB (128–255 px
   ≈ 40.9 dB). Video (more than one frame) differs in three ways, all for H.264: the gain is
   × 1.25 with every frame held to PSNR ≥ 40 dB (≈ 40.1 dB); the mask is inverted (activity^−½:
   x264's adaptive quantisation keeps flat macroblocks finer than busy ones); and the tile moves
   with the scene's global translation (measured key-free as in step 5), so the encoder's motion
   compensation carries the mark instead of smearing a fixed one.
   Below 128 px per side (one to three periods) the host dwarfs any additive mark at that
   PSNR, so the payload is written by phase QIM instead: each payload coefficient's phase is
   moved to the nearest angle φ_k + 2πj/M of the wanted parity (M = 8, 16 or 32: the coarsest
   the budget affords), which costs |F_k|²·O((π/M)²) whatever the host. Clean round trips
   and mild noise work; JPEG does not (stated limit).
5. Folding. The luminance (downsampled ⌊P/32⌋×) is high-passed and divided by its local
   RMS, then summed modulo a lattice into a 32×32 tile whose DFT at the mark's frequencies
   gives F_k. In order, until a CRC-valid payload clears the threshold: the native period
   unshifted ("aligned": additive and the three QIM readings); every period of the set with
   a cyclic-shift search (the 4 highest pilot peaks; crops, halving); up to 3 lattices
   (any scale 16–256 px, rotation ≤ 6°) found *without the key* from the comb of spectral
   peaks a periodic mark leaves in the zero-padded DTFT. Frames above 1024 px are searched
   in a central 1024² window after the aligned attempt. The shift d maximises the pilot
   correlation S(d) (one 32×32 FFT); a searched shift is decoded at the maximum of S off the bin
   grid (1/16 bin: an odd-pixel crop puts a 64 px tile half a bin off), the test keeps the
   grid's. Video frames fold into one accumulator (a static camera); when that fails, they
   are folded again with the scene's global translation undone (phase correlation with the
   first frame, no key: the pilot test keeps its null law), which lines up a mark that moved
   with the scene (our embedder's, or a fixed mark dragged by a re-encoder's motion
   compensation); then every frame is synced on its own and the chips of the frames whose
   pilot clears the null's typical maximum are combined, weighted.
6. Test. S = Σ_pilot cos(arg F_k − φ_k − 2πk·d/32). For media not marked with this key the
   φ_k are uniform and independent of the pixels, so S is a sum of 64 independent cos(U) and
   P(S ≥ t) ≤ min_λ e^{−λt} I₀(λ)^64 (Chernoff; I₀ the modified Bessel function), × 32² for
   a shift search. The CRC mask is an independent uniform 32-bit part of the key that the
   decoder never sees, so a valid CRC has probability 2⁻³² under the null, independently of
   S. Each decoding attempt X gives q_X = p_pilot·2⁻³² (CRC valid) or p_pilot, P(q_X ≤ x) ≤ 2x,
   and the file's p-value is 2·N·min_X q_X over a fixed budget of N = 40 attempts (stopping
   early only raises it). This holds for every input — marked with another key or not,
   whatever its content — because the randomness is the key's. `detected` iff p ≤ threshold
   (default 1e-6: the false-positive rate per file); the payload is reported only when
   detected and its CRC checks, so a garbage payload needs a 2⁻³² CRC accident.
   `detect_aligned` runs only the aligned attempts (N = 4): a quick test for an unmoved mark.
7. Known-payload test (`match`: soft binding, where a manifest store names the few payloads
   that can be there). Decoding 64 unknown bits needs far more energy than telling whether one
   known codeword is present, so this reads marks that Viterbi + CRC cannot (JPEG 75 at 128 px).
   At the native aligned sync, for candidate c with chip signs s_c: z_pay = Σ_i x_i s_c(i) /
   ‖x‖ over the payload chips x_i (keyed signs applied; per QIM reading too on small images)
   and z_pil = S/√(m/2); Z = (w₁ z_pay + w₂ z_pil)/√(w₁² + w₂²) with fixed weights. For media
   not marked with this key the chip signs are iid ±1 independent of the x_i (Hoeffding) and
   E e^{λ cos U} = I₀(λ) ≤ e^{λ²/4}, so Z is sub-Gaussian with proxy 1 and
   p = N_readings · N_candidates · e^{−Z²/2}. The candidates must be chosen without looking at
   the key (a perceptual hash does). A mark with another payload is not covered by the bound:
   its codeword overlaps a candidate's, so callers test only when no CRC-valid payload was read.

Capacity and limits: 32 bits at every size from 32×32. 32–127 px: QIM, clean and noise-robust
only (the known-payload test does not rescue JPEG there either). Halving needs ≥ 256 px
(P = 64). Dense uniform texture (gravel, foliage) can drown the mark at PSNR 42 at 256 px for
the decoder (the known-payload test still reads it); `strength` trades PSNR for robustness.
Video motion is handled for translation (the mark follows it; motion-compensated fold,
per-frame sync), not zoom; a clip whose global motion cannot be measured (cuts, heavy
parallax) falls back to the per-frame sync. A periodic mark's spectral comb is visible to an
adversary who looks for it: the aim is robustness to ordinary processing and honest
false-positive control, not secrecy of the mark's presence.
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
BAND = (6.0, 15.0)  # |k| of the mark's frequencies, cycles per tile
G = 32  # bins per period of the folded tile
N_PILOT = 64  # pilot frequencies; the other ones carry payload chips
PAYLOAD_BITS = 32
CRC_BITS = 32
GENERATORS = (0o171, 0o133)  # convolutional code, K = 7, rate 1/2 (NASA / CCSDS)
PERIODS = tuple(32.0 * 2 ** (j / 2) for j in range(5))  # 32, 45.3, 64, 90.5, 128 px (detection)
MAX_PERIOD = 64.0  # embedding: 64 px from 256 px up (0.09–0.23 cycles/px)
MIN_SIDE = 32
DEFAULT_THRESHOLD = 1e-6
DEFAULT_RMS = 2.0  # luminance RMS of the mark at strength 1 (PSNR ≈ 42 dB)
VIDEO_GAIN = 1.25  # video frames get 1.25× (PSNR ≈ 40.1 dB): H.264 at CRF 28 removes more
VIDEO_MAX_MSE = 255.0**2 / 10 ** (40.0 / 10)  # frames are held to PSNR ≥ 40 dB
# 128–255 px images get 1.15× (PSNR ≈ 40.9 dB): they hold a quarter of a 256² mark's energy, and
# their 32–45 px period puts the band where JPEG quantises hardest (bench/provenance.py)
MID_GAIN = 1.15
MARGIN_FLOOR = 0.5  # smallest payload-chip amplitude, relative to plain embedding
SMALL_SIDE = 128  # below this (one to three periods) crops and rescaling are out of reach, so
SMALL_PILOT = 0.35  # energy goes from the pilot to the payload
QIM_LEVELS = (8, 16, 32)  # small images: phase lattices 2π/M (coarser = more robust, dearer)
QIM_MIN_MAG = 1.0  # quieter host frequencies are raised to this magnitude (more if affordable)
N_ESTIMATED = 3  # lattices estimated from the spectral comb (any scale, rotation)
N_PER_FRAME = 2  # video: per-frame sync on the native and the best estimated lattice
N_MOTION = 2  # video: motion-compensated joint fold on the same two lattices
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
        os.link(tmp, path)  # FileExistsError if a key appeared meanwhile: never replace a key
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
            raise UsageError(f"no watermark key: {where} does not exist (`watermark embed` creates "
                             "it on first use; or pass --key FILE)")
        try:
            save_key(new_key(), p)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UsageError(f"cannot create the watermark key {p}: {exc.strerror}") from None
    if p.is_dir():
        raise UsageError(f"{p} is a directory, not a watermark key file")
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
# Error correction: CRC-32 and a K = 7 convolutional code with soft-decision Viterbi decoding

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
    """Output bits (state, input, generator) and next state (state, input); the state holds
    the last K−1 inputs, the newest in its top bit."""
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
    """Coded bits, interleaved per step (one per generator): c_t = Σ_i g_i x_{t−i} mod 2."""
    bits = np.asarray(bits)
    if len(bits) == N_MSG:  # every decoding attempt re-encodes its message: one product
        return ((_code_matrix() @ bits.astype(np.int64)) % 2).astype(np.int8)
    return _conv_encode(bits)


@lru_cache(maxsize=1)
def _code_matrix() -> np.ndarray:
    """The code is linear over GF(2): column i is the codeword of the i-th unit message."""
    return np.stack([_conv_encode(e) for e in np.eye(N_MSG, dtype=np.int64)], 1).astype(np.int64)


def _conv_encode(bits: np.ndarray) -> np.ndarray:
    x = np.concatenate([np.asarray(bits, np.int64), np.zeros(_K - 1, np.int64)])
    out = np.empty((len(x), len(GENERATORS)), np.int8)
    for j, g in enumerate(GENERATORS):
        taps = np.array([(g >> (_K - 1 - i)) & 1 for i in range(_K)], np.int64)  # tap i: delay i
        out[:, j] = np.convolve(x, taps)[: len(x)] % 2
    return out.ravel()


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Maximum-likelihood message for soft coded bits (`soft[j] > 0` favours a 0), ending in
    state 0 (zero tail)."""
    return viterbi_decode_batch(np.asarray(soft, np.float64)[None])[0]


def viterbi_decode_batch(soft: np.ndarray) -> np.ndarray:
    """`viterbi_decode` of every row of soft (B, n): one trellis pass for all rows, since the
    per-step cost is numpy call overhead rather than arithmetic at 64 states."""
    out, _ = _trellis(GENERATORS)
    r = len(GENERATORS)
    soft = np.asarray(soft, np.float64)
    nb = soft.shape[0]
    steps = soft.shape[1] // r
    half = _NSTATE // 2
    sign = 1.0 - 2.0 * out  # (S, 2, r)
    bm = np.einsum("sbr,ntr->tnsb", sign, soft[:, : steps * r].reshape(nb, steps, r))
    # state ns = (b, lo) is entered with input b from states 2·lo and 2·lo + 1 (its top bit
    # is the newest input): in that (2, S/2) layout the predecessors are plain strided views
    ns = np.arange(_NSTATE)
    b_of = ns >> (_K - 2)
    p0 = (ns & (half - 1)) << 1
    bm0 = bm[:, :, p0, b_of].reshape(steps, nb, 2, half)  # (T, B, b, lo) into every state
    bm1 = bm[:, :, p0 | 1, b_of].reshape(steps, nb, 2, half)
    metric = np.full((nb, _NSTATE), -np.inf)
    metric[:, 0] = 0.0
    back = np.zeros((steps, nb, 2, half), bool)  # predecessor 2·lo + 1 (else 2·lo) of every state
    for t in range(steps):
        pairs = metric.reshape(nb, 1, half, 2)
        c0 = pairs[..., 0] + bm0[t]
        c1 = pairs[..., 1] + bm1[t]
        np.greater(c1, c0, out=back[t])
        metric = np.maximum(c0, c1).reshape(nb, _NSTATE)  # ties keep 2·lo, as the strict test
    back = back.reshape(steps, nb, _NSTATE)
    state = np.zeros(nb, np.int64)
    rows = np.arange(nb)
    bits = np.zeros((nb, steps), np.int8)
    for t in range(steps - 1, -1, -1):
        bits[:, t] = state >> (_K - 2)
        state = ((state & (half - 1)) << 1) | back[t, rows, state]
    return bits[:, : steps - (_K - 1)]


def _bits(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8)).astype(np.int8)


def _message(payload: bytes, crc_mask: int) -> np.ndarray:
    crc = crc32(payload) ^ crc_mask
    return np.concatenate([_bits(payload), _bits(crc.to_bytes(CRC_BITS // 8, "big"))])


# ---------------------------------------------------------------------------------------------
# The keyed layout


@dataclasses.dataclass(frozen=True)
class Layout:
    k: np.ndarray  # (n, 2) int (kx, ky): half plane, |k| in BAND
    phase: np.ndarray  # (n,) φ_k
    pilot: np.ndarray  # indices into k
    payload: np.ndarray  # indices into k
    chip_bit: np.ndarray  # (2·len(payload),) coded bit carried by each chip (Re, Im per frequency)
    chip_sign: np.ndarray  # (2·len(payload),) ±1
    qim_bit: np.ndarray  # (len(payload),) coded bit carried by each frequency's phase (small images)
    qim_sign: np.ndarray  # (len(payload),) ±1
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
    qim_bit = _rng(secret, "qim-interleave").permutation(len(payload)) % n_coded()
    qim_sign = _rng(secret, "qim-sign").choice([-1.0, 1.0], len(payload))
    crc_mask = int(_rng(secret, "crc").integers(0, 1 << CRC_BITS, dtype=np.uint64))
    return Layout(k, phase, pilot, payload, chip_bit, chip_sign, qim_bit, qim_sign, crc_mask)


def coefficients(layout: Layout, payload: bytes) -> np.ndarray:
    """The plain (unit-magnitude) coefficient c_k of every mark frequency for this payload."""
    coded = conv_encode(_message(payload, layout.crc_mask))
    chips = layout.chip_sign * (1.0 - 2.0 * coded[layout.chip_bit])  # ±1
    c = np.exp(1j * layout.phase)
    c[layout.payload] *= (chips[0::2] + 1j * chips[1::2]) / math.sqrt(2)
    return c


# ---------------------------------------------------------------------------------------------
# Geometry


def tile_period(h: int, w: int) -> float:
    """The mark's period for an image of this size: the largest of PERIODS ≤ min(H, W)/4, at
    most MAX_PERIOD (longer periods put the band where photos have the most energy)."""
    fit = [p for p in PERIODS if p <= min(min(h, w) / 4.0, MAX_PERIOD)]
    return fit[-1] if fit else PERIODS[0]


_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@lru_cache(maxsize=1)
def _luma_tables() -> tuple[np.ndarray, ...]:
    v = np.arange(256, dtype=np.float32)
    return tuple(np.float32(c) * v for c in _LUMA_WEIGHTS)


def luma(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[-1] in (3, 4):
        # the float32 products w·v of every 8-bit value, looked up and summed in the same order
        # as below: bit-identical, without a float copy of all three channels
        t = _luma_tables()
        ch = cv2.split(rgb)
        return cv2.add(cv2.add(cv2.LUT(ch[0], t[0]), cv2.LUT(ch[1], t[1])), cv2.LUT(ch[2], t[2]))
    a = rgb.astype(np.float32)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def render(c: np.ndarray, k: np.ndarray, period: float, h: int, w: int) -> np.ndarray:
    """Σ_k Re(c_k e^{2πi k·u}) with u = p / period, p = pixel centre (x + ½, y + ½).
    Separable: (H × nky)·(nky × nkx)·(nkx × W) complex products."""
    p = int(period)
    if p == period and max(h, w) > p:  # whole-pixel period: the pattern repeats exactly
        tile = _render(c, k, period, min(h, p), min(w, p))
        return np.tile(tile, (-(-h // p), -(-w // p)))[:h, :w]
    return _render(c, k, period, h, w)


def _render(c: np.ndarray, k: np.ndarray, period: float, h: int, w: int) -> np.ndarray:
    r = int(BAND[1])
    xs = (np.arange(w) + 0.5) / period
    ys = (np.arange(h) + 0.5) / period
    cm = np.zeros((r + 1, 2 * r + 1), np.complex128)
    cm[k[:, 1], k[:, 0] + r] = c
    ex = np.exp(2j * np.pi * np.outer(np.arange(-r, r + 1), xs))  # (nkx, W)
    ey = np.exp(2j * np.pi * np.outer(ys, np.arange(0, r + 1)))  # (H, nky)
    return np.real((ey @ cm) @ ex).astype(np.float32)  # (H, W)


def activity_mask(y: np.ndarray) -> np.ndarray:
    """Local texture energy (+ a floor), limited to [0.35, 2.5] × and normalised to RMS 1."""
    hp = y - cv2.GaussianBlur(y, (0, 0), 1.5)
    act = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), 3.0)) + 2.0
    m = np.clip(act / math.sqrt(float(np.mean(act * act))), 0.35, 2.5)
    return (m / math.sqrt(float(np.mean(m * m)))).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _check_size(h: int, w: int) -> None:
    if min(h, w) < MIN_SIDE:
        raise MediaError(f"image is {w}x{h}; the watermark needs at least {MIN_SIDE}x{MIN_SIDE} pixels")


# ---------------------------------------------------------------------------------------------
# Embedding


def embed(rgb: np.ndarray, key: WatermarkKey, payload: bytes, strength: float = 1.0) -> np.ndarray:
    """Mark one RGB uint8 image (H, W, 3); returns a new array."""
    return embed_frames(np.asarray(rgb)[None], key, payload, strength)[0]


def embed_frames(frames: np.ndarray, key: WatermarkKey, payload: bytes, strength: float = 1.0) -> np.ndarray:
    """Mark frames (T, H, W, 3) of one size (a video: the same tile, informed per frame)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise MediaError(f"expected RGB uint8 frames (T, H, W, 3); got {frames.shape} {frames.dtype}")
    _, h, w, _ = frames.shape
    _check_size(h, w)
    if not (0 < strength <= 20):
        raise UsageError(f"--strength must be in (0, 20]; got {strength}")
    if len(payload) * 8 != PAYLOAD_BITS:
        raise UsageError(f"the payload is {PAYLOAD_BITS} bits; got {len(payload) * 8}")
    lay = layout_for(key.secret)
    video = len(frames) > 1
    period = tile_period(h, w)
    c = coefficients(lay, payload)
    coded = conv_encode(_message(payload, lay.crc_mask))
    unit = render(c, lay.k, period, h, w)
    gain = max(VIDEO_GAIN if video else 1.0, size_gain(h, w))  # never both: PSNR ≥ 40
    scale = DEFAULT_RMS * strength * gain / float(np.sqrt(np.mean(unit * unit)))
    lumas = [luma(f) for f in frames]
    # Video: the mark rides with the scene. Frame t gets the tile moved by the content's global
    # motion s_t (phase correlation with the first frame, as the detector measures it), so an
    # encoder's motion compensation carries the mark along instead of smearing a fixed one, and
    # the detector's motion-compensated fold lines every frame up. QIM (< 128 px) is read only
    # unshifted, so small clips keep a fixed tile.
    follow = video and min(h, w) >= SMALL_SIDE
    motion = global_motion(lumas) if follow else np.zeros((len(frames), 2))
    freq = lay.k / period  # cycles per pixel
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        y = lumas[i]
        m = video_mask(y) if video else activity_mask(y)
        lay_i, c_i, probe = lay, c, unit
        if np.any(motion[i]):
            turn = -2 * np.pi * (freq @ motion[i])
            lay_i = dataclasses.replace(lay, phase=lay.phase + turn)
            c_i = c * np.exp(1j * turn)
            probe = render(c_i, lay.k, period, h, w)
        x = _informed(y, m, c_i, scale * probe, period, lay_i, coded, small=min(h, w) < SMALL_SIDE)
        delta = scale * m * render(x, lay.k, period, h, w)
        if not video:  # OpenCV rounds and saturates the sum per channel without a float copy
            out[i] = cv2.merge([cv2.add(ch, delta, dtype=cv2.CV_8U) for ch in cv2.split(f)])
            continue
        fr = f.astype(np.float32)
        marked = np.clip(np.round(fr + delta[..., None]), 0, 255)
        # the gain sits near the floor: hold every frame to it whatever its content
        for _ in range(4):
            mse = float(np.mean((marked - fr) ** 2))
            if mse <= VIDEO_MAX_MSE:
                break
            delta *= 0.995 * math.sqrt(VIDEO_MAX_MSE / mse)
            marked = np.clip(np.round(fr + delta[..., None]), 0, 255)
        out[i] = marked.astype(np.uint8)
    return out


def video_mask(y: np.ndarray) -> np.ndarray:
    """The texture mask to the power −½ (normalised to RMS 1): somewhat more of the mark in flat
    regions. x264's adaptive quantisation gives flat macroblocks a lower QP and busy ones a
    higher, so at CRF 28 a mark kept in flat areas survives and one pushed into texture is
    quantised away (the coded bits' SNR after CRF 28 rose ≈ 2.5× against the image mask on
    bench/watermark.py's clips; −1 was no better and puts more of the mark where it shows)."""
    m = 1.0 / np.sqrt(activity_mask(y))
    return (m / math.sqrt(float(np.mean(m * m)))).astype(np.float32)


def size_gain(h: int, w: int) -> float:
    """The additive mark's amplitude factor for this image size (QIM sizes spend a budget of
    their own; from 256 px up the default is already robust)."""
    return MID_GAIN if SMALL_SIDE <= min(h, w) < 2 * SMALL_SIDE else 1.0


def _informed(y: np.ndarray, m: np.ndarray, c: np.ndarray, probe: np.ndarray, period: float,
              lay: Layout, coded: np.ndarray, small: bool = False) -> np.ndarray:
    """Informed embedding with a robustness margin (Miller, Cox & Bloom).

    1. h = the host's F_k as the detector's aligned fold sees it, in units of the response g_k
       to a unit coefficient (measured once with the plain pattern as a probe).
    2. Every payload chip c gets a floor amplitude b = MARGIN_FLOOR/√2 (plain chips are 1/√2).
    3. Every coded bit j whose soft value, as the detector weighs its chips (w_c = gain over
       the ring's noise scale), falls short of a margin τ gets the deficit added along w on its
       chips: the least energy that reaches b_j·soft_j ≥ τ (chips sum, so pushing a bit costs
       far less than pushing each chip).
    4. τ is the largest margin whose energy Σ a_c² fits the plain payload's budget (bisection).
    Pilot frequencies stay plain: their comb keeps the key-free re-synchronisation visible."""
    a = np.eye(2) / period
    folds: dict = {}
    hs = lattice_spectrum([y], a, lay.k, folds=folds)
    g = np.real((lattice_spectrum([y + m * probe], a, lay.k, folds=folds) - hs) * np.conj(c))
    g = np.maximum(g, 0.2 * max(float(np.median(g)), 1e-6))
    h = hs / g
    if small:
        return _phase_qim(h, c, lay, coded)
    e = np.exp(-1j * lay.phase[lay.payload])
    u = h[lay.payload] * e  # the host in the key's frame
    sv = c[lay.payload] * e * math.sqrt(2)  # s1 + i s2 (±1 each)
    n = len(lay.payload)
    agree = np.empty(2 * n)  # host projection on each chip, + when it already agrees
    agree[0::2], agree[1::2] = u.real * sv.real, u.imag * sv.imag
    # the detector's weight of each chip: gain over its ring's noise scale (as _soft divides)
    kk = lay.k[lay.payload]
    ring = np.round(np.hypot(kk[:, 0], kk[:, 1])).astype(int)
    mag = np.abs(g[lay.payload] * (h[lay.payload] + c[lay.payload]))
    wbin = g[lay.payload] / (np.sqrt(_ring_median(mag**2, ring)) + 1e-9)
    wc = np.repeat(wbin, 2)
    b = MARGIN_FLOOR / math.sqrt(2)
    nb = n_coded()
    sum_w2 = np.bincount(lay.chip_bit, wc * wc, minlength=nb)
    base = np.bincount(lay.chip_bit, wc * (agree + b), minlength=nb)  # Σ w (agree + b) per coded bit
    budget = float(n)  # the energy of the plain payload coefficients

    def amplitudes(tau: float) -> np.ndarray:
        deficit = np.maximum(tau - base, 0.0) / np.maximum(sum_w2, 1e-12)
        return b + wc * deficit[lay.chip_bit]

    lo, hi = float(base.min()) - 1.0, float(base.max()) + 10.0 * (1.0 + float(np.abs(base).max()))
    for _ in range(60):
        tau = 0.5 * (lo + hi)
        if np.sum(amplitudes(tau) ** 2) > budget:
            hi = tau
        else:
            lo = tau
    amp = amplitudes(lo)
    x = c.copy()
    x[lay.payload] = (sv.real * amp[0::2] + 1j * sv.imag * amp[1::2]) / e
    return x


def _phase_qim(h: np.ndarray, c: np.ndarray, lay: Layout, payload_bits: np.ndarray) -> np.ndarray:
    """Small images: phase quantisation index modulation (dirty-paper coding, Chen & Wornell
    2001) of the payload frequencies, read by the QIM decoder.

    On one period the host's F_k dwarf any PSNR-40 mark (≈ 20 dB at 32×32), so adding a
    pattern cannot win; moving each host coefficient's phase (magnitude kept) to the nearest
    angle φ_k + 2πj/M whose parity j mod 2 is the wanted chip costs only |h|²·O((π/M)²) and is
    read back without knowing the host. Frequencies are rotated cheapest first while the
    energy budget lasts; unaffordable ones are left to the convolutional code."""
    e = np.exp(-1j * lay.phase[lay.payload])
    u = h[lay.payload] * e  # host in the key's frame
    want = (1.0 - 2.0 * payload_bits[lay.qim_bit]) * lay.qim_sign  # +1: even j, -1: odd j
    budget = float(len(lay.payload)) + (1.0 - SMALL_PILOT**2) * len(lay.pilot)
    for levels in QIM_LEVELS:  # the coarsest lattice whose rotations are all affordable
        step = 2 * np.pi / levels
        theta = np.angle(u)
        j = np.round(theta / step)
        parity_ok = (1 - 2 * (np.abs(j) % 2)) == want
        j = np.where(parity_ok, j, j + np.where(theta / step > j, 1.0, -1.0))
        rot = np.exp(1j * j * step)

        def cost_at(r: float) -> np.ndarray:
            return np.abs(np.maximum(np.abs(u), r) * rot - u) ** 2

        cost = cost_at(QIM_MIN_MAG)
        if cost.sum() <= budget:
            break
    if cost.sum() <= budget:  # all affordable: spend the rest raising the quietest magnitudes
        lo, hi = QIM_MIN_MAG, QIM_MIN_MAG + 100.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cost_at(mid).sum() <= budget else (lo, mid)
        take = np.arange(len(u))
        target = np.maximum(np.abs(u), lo) * rot
    else:  # the finest lattice, cheapest frequencies first; the code corrects the rest
        order = np.argsort(cost)
        take = order[np.cumsum(cost[order]) <= budget]
        target = np.maximum(np.abs(u), QIM_MIN_MAG) * rot
    add = np.zeros(len(u), complex)
    add[take] = target[take] - u[take]
    x = c.copy()
    x[lay.pilot] *= SMALL_PILOT
    x[lay.payload] = add / e
    return x


# ---------------------------------------------------------------------------------------------
# Folding


def prefilter(y: np.ndarray, period: float) -> np.ndarray:
    """High-pass (σ = P/10: the host's low frequencies would leak into the band) divided by the
    local RMS, so textured regions and strong edges do not drown the rest of the fold."""
    hp = (y - cv2.GaussianBlur(y, (0, 0), max(1.0, period / 10.0))).astype(np.float32, copy=False)
    act = cv2.GaussianBlur(hp * hp, (0, 0), max(2.0, period / 8.0))
    np.sqrt(act, out=act)
    act += 1.0
    hp /= act
    return hp


class _Fold:
    """Sums frames modulo the lattice of a fold map A (frequencies f = A k, tile position
    u = Aᵀ p) into G×G bins (a scatter-add of every pixel into its bin)."""

    def __init__(self, a: np.ndarray, h: int, w: int):
        self.sums = np.zeros(G * G)
        self.frames = 0
        self.shape = (h, w)
        # one bin per pixel (an axis-aligned G-px period at this level, as the native periods
        # are): pixel x falls in bin x mod G, so a frame folds by reshaping, with no index
        self.grid = a[0, 1] == 0 and a[1, 0] == 0 and a[0, 0] * G == 1 and a[1, 1] * G == 1
        shift = G.bit_length() - 1  # jy·G + jx = jy << shift | jx, G a power of two
        if self.grid:
            cy, cx = np.bincount(np.arange(h) % G, minlength=G), np.bincount(np.arange(w) % G, minlength=G)
            self.counts = np.outer(cy, cx).astype(np.float64).ravel()
        elif a[0, 1] == 0 and a[1, 0] == 0:  # axis-aligned: bins per column and per row
            ux, uy = (np.arange(w) + 0.5) * a[0, 0], (np.arange(h) + 0.5) * a[1, 1]
            jx = ((ux - np.floor(ux)) * G).astype(np.intp) % G
            jy = ((uy - np.floor(uy)) * G).astype(np.intp) % G
            # bincount's own index type, so no frame pays a cast; the counts are separable
            self.index = ((jy[:, None] << shift) | jx[None, :]).ravel()
            cy, cx = np.bincount(jy, minlength=G), np.bincount(jx, minlength=G)
            self.counts = np.outer(cy, cx).astype(np.float64).ravel()
        else:  # in place, one (H, W) buffer per axis: this runs on a megapixel per estimated lattice
            px, py = (np.arange(w) + 0.5).astype(np.float32), (np.arange(h) + 0.5).astype(np.float32)[:, None]
            jx = self._bins(np.float32(a[0, 0]) * px + np.float32(a[1, 0]) * py)  # (H, W)
            jy = self._bins(np.float32(a[0, 1]) * px + np.float32(a[1, 1]) * py)
            self.index = (np.left_shift(jy, shift) | jx).astype(np.intp).ravel()
            self.counts = np.bincount(self.index, minlength=G * G).astype(np.float64)

    @staticmethod
    def _bins(u: np.ndarray) -> np.ndarray:
        """⌊frac(u)·G⌋ of a float32 array (overwritten)."""
        u -= np.floor(u)
        u *= G
        return u.astype(np.int32) & (G - 1)

    def add(self, yf: np.ndarray) -> None:
        if self.grid:
            h, w = self.shape
            hp, wp = h - h % G, w - w % G
            rows = yf[:hp].reshape(hp // G, G, w).sum(0, dtype=np.float64)  # (G, W): rows folded
            rows[:h - hp] += yf[hp:]
            tile = rows[:, :wp].reshape(G, wp // G, G).sum(1)
            tile[:, :w - wp] += rows[:, wp:]
            self.sums += tile.ravel()
        else:
            self.sums += np.bincount(self.index, weights=yf.ravel(), minlength=G * G)
        self.frames += 1

    def spectrum(self, k: np.ndarray) -> np.ndarray:
        """F_k of the mean tile, referenced to the bin centres."""
        n = self.counts * max(self.frames, 1)
        tile = np.where(n > 0, self.sums / np.maximum(n, 1), 0.0).reshape(G, G)
        f = np.fft.fft2(tile - tile.mean())
        kx, ky = k[:, 0], k[:, 1]
        return f[ky % G, kx % G] * np.exp(-1j * np.pi * (kx + ky) / G)


def _downsample(y: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return y
    h, w = (y.shape[0] // f) * f, (y.shape[1] // f) * f
    return cv2.resize(y[:h, :w], (w // f, h // f), interpolation=cv2.INTER_AREA)


def lattice_spectrum(lumas: list[np.ndarray], a: np.ndarray, k: np.ndarray,
                     cache: dict | None = None, folds: dict | None = None) -> np.ndarray:
    """F_k of the prefiltered frames folded modulo the lattice of A. Periods of 64 px and more
    are folded from an f× area-downsampled luminance, f = ⌊P/32⌋ (the bins average that much
    anyway): pixel centres scale exactly (p = f·p′), so the map becomes f·A."""
    period = 1.0 / math.sqrt(abs(np.linalg.det(a)))
    f = max(1, int(period // G))  # ≥ 32 px per period after downsampling: one pixel per bin or more
    cache = {} if cache is None else cache
    if f not in cache:  # prefiltered once per level: σ = 3.2 px at the level (P/10 for 32-px tiles)
        cache[f] = [prefilter(_downsample(y, f), float(G)) for y in lumas]
    src = cache[f]
    key = (f, a.tobytes(), src[0].shape)
    fold = None if folds is None else folds.get(key)
    if fold is None:
        fold = _Fold(a * f, *src[0].shape)
        if folds is not None:  # the bin of every pixel, kept for the next fold at this map and size
            folds[key] = fold
    fold.sums[:] = 0.0
    fold.frames = 0
    for y in src:
        fold.add(y)
    return fold.spectrum(k)


# ---------------------------------------------------------------------------------------------
# Key-free lattice estimation from the spectral comb

_Q_NULL = math.exp(0.5772156649)  # mean (and sd) of an exponential power over its geometric mean


def comb_spectrum(lumas: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Power spectrum of a central ≤512² window (prefiltered, no taper), zero-padded ≥ 2–4× so it
    samples the DTFT finely, divided by its geometric mean over each frequency ring. A periodic
    mark raises it to ≈ 1 + wm/host power at its comb f = A k; elsewhere its mean is e^γ."""
    h, w = lumas[0].shape
    s = min(512, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    n = 1 << max(10, int(math.ceil(math.log2(4 * s))) - (1 if s > 256 else 0))
    power = np.zeros((n, n), np.float32)
    pad = np.zeros((n, n), np.float32)
    step = max(1, len(lumas) // 8)
    for y in lumas[::step][:8]:
        c = prefilter(np.ascontiguousarray(y[y0:y0 + s, x0:x0 + s], np.float32), 48.0)
        pad[:s, :s] = c - c.mean()
        # a real float32 transform (OpenCV), told that only the first s rows are non-zero:
        # single precision is ample for a score that averages over a hundred comb teeth
        spec = cv2.dft(pad, flags=cv2.DFT_COMPLEX_OUTPUT, nonzeroRows=s)
        power += spec[..., 0] ** 2 + spec[..., 1] ** 2
    power += np.float32(1e-12)
    ring, counts = _rings(n, s)
    mean = np.bincount(ring, np.log(power).ravel(), minlength=len(counts)) / counts
    return power * np.exp(-mean).astype(np.float32)[ring.reshape(n, n)], s


@lru_cache(maxsize=4)
def _rings(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Ring number round(|f|·s) of every bin of an n×n DFT (flat), and the bins per ring."""
    # |fftfreq| is min(i, n − i)/n: the radii of one quadrant, gathered into the n×n layout
    f = np.arange(n // 2 + 1) / n
    quad = np.round(np.hypot(f[None, :], f[:, None]) * s).astype(np.intp)
    a = np.minimum(np.arange(n), n - np.arange(n))
    ring = quad[a[:, None], a[None, :]].ravel()
    return ring, np.maximum(np.bincount(ring), 1)


def _comb_score(q: np.ndarray, periods: np.ndarray, angles: np.ndarray, k: np.ndarray,
                interpolate: bool = False) -> np.ndarray:
    """z-score of the mean (capped) comb value at f = R(θ) k / P, shape (P, R)."""
    n = q.shape[0]
    assert n & (n - 1) == 0  # wrap-around of the indices below by a bit mask
    flat = q.reshape(-1)
    c, s_ = np.cos(angles)[:, None], np.sin(angles)[:, None]
    kx, ky = k[None, :, 0].astype(np.float32), k[None, :, 1].astype(np.float32)
    rx, ry = (c * kx - s_ * ky).astype(np.float32), (s_ * kx + c * ky).astype(np.float32)  # (R, n)
    inv = (1.0 / periods).astype(np.float32)[:, None, None]
    fx, fy = rx[None] * (inv * n), ry[None] * (inv * n)  # (P, R, n), in DTFT bins
    # a rotation keeps |k|, so which teeth fall below the cut depends on the period alone
    valid = (kx * kx + ky * ky)[None] * (inv * inv) < 0.42**2  # (P, 1, n)
    if interpolate:  # bilinear between DTFT samples
        x0, y0 = np.floor(fx), np.floor(fy)
        wx, wy = fx - x0, fy - y0
        x0, y0 = x0.astype(np.int32) & (n - 1), y0.astype(np.int32) & (n - 1)
        x1, y1 = (x0 + 1) & (n - 1), (y0 + 1) & (n - 1)
        y0 *= n
        y1 *= n
        v = (1 - wy) * ((1 - wx) * flat[y0 + x0] + wx * flat[y0 + x1]) \
            + wy * ((1 - wx) * flat[y1 + x0] + wx * flat[y1 + x1])
    else:
        idx = (np.rint(fy).astype(np.int32) & (n - 1)) * n + (np.rint(fx).astype(np.int32) & (n - 1))
        v = flat[idx]
    np.minimum(v, 12.0, out=v)
    v *= valid
    cnt = valid.sum(-1)
    mean = v.sum(-1) / np.maximum(cnt, 1)
    return (mean - _Q_NULL) * np.sqrt(cnt) / _Q_NULL


def _map(period: float, angle: float) -> np.ndarray:
    c, s_ = math.cos(angle), math.sin(angle)
    return np.array([[c, -s_], [s_, c]]) / period  # A = R(θ) / P


def estimate_lattices(lumas: list[np.ndarray], n: int = N_ESTIMATED) -> list[dict]:
    """Up to n fold maps A of a periodic mark found without the key: a grid search of the comb
    score over period (1 % steps, 16 px to half the window) and rotation (±6°, 0.5° steps) on
    half the frequencies, then a finer search (0.05 %, 0.05°, all of them) around each distinct
    maximum."""
    h, w = lumas[0].shape
    if min(h, w) < 64:
        return []
    q, s = comb_spectrum(lumas)
    k = band_frequencies()
    p_hi = s / 2.0
    periods = np.geomspace(16.0, p_hi, max(2, int(math.log(p_hi / 16.0) / math.log(1.01)) + 1))
    angles = np.deg2rad(np.arange(-ROT_RANGE_DEG, ROT_RANGE_DEG + 1e-9, 0.5))
    score = _comb_score(q, periods, angles, k[::2])  # (P, R); coarse: every other frequency
    out: list[dict] = []
    for idx in np.argsort(score, axis=None)[::-1][:400]:
        pi, ri = np.unravel_index(idx, score.shape)
        if any(abs(math.log(periods[pi] / o["period"])) < 0.03 and abs(angles[ri] - o["angle"]) < 0.03
               for o in out):
            continue
        fp = periods[pi] * np.exp(np.linspace(-0.007, 0.007, 29))
        fa = angles[ri] + np.deg2rad(np.linspace(-0.3, 0.3, 13))
        fine = _comb_score(q, fp, fa, k, interpolate=True)
        bi, bj = np.unravel_index(int(np.argmax(fine)), fine.shape)
        out.append({"A": _map(fp[bi], fa[bj]), "period": float(fp[bi]), "angle": float(fa[bj]),
                    "score": float(fine[bi, bj])})
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------------------------------------
# Detection

N_SHIFTS = 4  # decoding attempts per lattice: the highest pilot peaks
SEARCH_SIDE = 1024  # beyond the aligned attempt, large frames are searched in a central window
N_ATTEMPTS = 1 + len(QIM_LEVELS) + N_SHIFTS * (len(PERIODS) + N_ESTIMATED) + N_MOTION + N_PER_FRAME  # fixed budget


def _log_i0(x: np.ndarray) -> np.ndarray:
    from scipy.special import i0e

    return np.log(i0e(x)) + np.abs(x)


@lru_cache(maxsize=1)
def _chernoff_grid() -> tuple[np.ndarray, np.ndarray]:
    lam = np.concatenate([np.linspace(0, 4, 401)[1:], np.geomspace(4, 2000, 600)])
    return lam, _log_i0(lam)


def chernoff_tail(t: float, m: int) -> float:
    """P(Σ_{j<m} cos θ_j ≥ t) ≤ min_λ e^{−λt} I₀(λ)^m for iid uniform θ_j (a rigorous bound)."""
    if t <= 0:
        return 1.0
    if t >= m:
        return 0.0
    lam, log_i0 = _chernoff_grid()
    expo = -lam * t + m * log_i0
    return float(min(1.0, math.exp(float(expo.min()))))


@dataclasses.dataclass
class Detection:
    detected: bool
    payload: str | None  # hex, only when detected and the CRC checks
    p_value: float
    bit_accuracy: float | None  # raw coded bits agreeing with the re-encoded decoded message
    frames_used: int
    threshold: float
    payload_valid: bool
    sync: str
    period: float
    rotation_deg: float
    statistic: float
    pilot_p: float
    soft: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def to_json(self) -> dict:
        return {"detected": self.detected, "payload": self.payload, "p_value": _sig(self.p_value),
                "bit_accuracy": None if self.bit_accuracy is None else round(self.bit_accuracy, 4),
                "frames_used": self.frames_used, "threshold": self.threshold,
                "payload_valid": self.payload_valid, "sync": self.sync,
                "period_px": round(self.period, 3), "rotation_deg": round(self.rotation_deg, 3),
                "pilot_statistic": round(self.statistic, 3), "pilot_p_value": _sig(self.pilot_p)}


def _sig(x: float) -> float:
    return float(f"{max(x, 1e-300):.4g}")


def detect(rgb: np.ndarray, key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD) -> Detection:
    """Test one RGB image for this key's mark."""
    return detect_lumas([luma(np.asarray(rgb))], key, threshold)


def detect_frames(frames, key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD) -> Detection:
    """Test the frames of one video (any number, same size) jointly."""
    return detect_lumas([luma(f) for f in frames], key, threshold)


def _check_lumas(lumas: list[np.ndarray], threshold: float) -> tuple[int, int]:
    if not lumas:
        raise MediaError("no frame to analyse")
    h, w = lumas[0].shape
    _check_size(h, w)
    if not (0 < threshold < 1):
        raise UsageError(f"threshold must be in (0, 1); got {threshold}")
    return h, w


def detect_lumas(lumas: list[np.ndarray], key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD) -> Detection:
    """The test of the module docstring (step 6) on luminance frames of one size."""
    h, w = _check_lumas(lumas, threshold)
    lay = layout_for(key.secret)
    k = lay.k
    m = len(lay.pilot)
    p0 = tile_period(h, w)

    # 1. Lattices, in order: native, the other periods of the set, the key-free estimates.
    #    The search stops as soon as a CRC-valid payload already clears the threshold (stopping
    #    early can only leave the minimum over attempts higher: the p-value stays valid).
    fixed = [("native", np.eye(2) / p0)]
    fixed += [(f"period {q:.1f}", np.eye(2) / q) for q in PERIODS if q != p0 and 2 * q <= max(h, w)]
    best: dict = {"q": 2.0, "name": "none", "A": fixed[0][1], "p_pilot": 1.0, "stat": 0.0,
                  "valid": False, "payload": None, "accuracy": None, "soft": None}
    cache: dict = {}
    done = lambda: best["valid"] and 2.0 * N_ATTEMPTS * best["q"] <= threshold  # noqa: E731

    def decode(todo: list[tuple]) -> list[tuple]:
        # 2. Decode at each sync (name, A, F, S, d, p_pilot, QIM), all in one Viterbi pass.
        if not todo:
            return []
        softs = np.stack([_soft_at(f, surf, d, lay, qim, search=not name.startswith("aligned"))
                          for name, _, f, surf, d, _, qim in todo])
        return list(zip(softs, viterbi_decode_batch(softs)))

    def take(entry: tuple, soft: np.ndarray, msg: np.ndarray) -> None:
        # q = p_pilot·2⁻³² when the CRC checks, else p_pilot. Every attempt counts against the
        # fixed budget N whether or not it is decoded.
        name, a, _, surf, d, p_pilot, _ = entry
        res = _finish(soft, lay, msg)
        q = p_pilot * (2.0 ** -CRC_BITS if res["valid"] else 1.0)
        if q < best["q"]:
            best.update({"q": q, "name": name, "A": a, "p_pilot": p_pilot, "stat": float(surf[d]), **res})

    def search(group: list[tuple[str, np.ndarray]], native: bool = False) -> None:
        # The attempts of a group of lattices go through one Viterbi pass; their results are
        # then taken lattice by lattice, stopping where a lattice-at-a-time search would stop.
        per_lattice = []
        for name, a in group:
            f = lattice_spectrum(lumas, a, k, cache)
            surf = _pilot_surface(f, lay)
            todo = []
            if native:
                p_aligned = chernoff_tail(float(surf[0, 0]), m)
                todo.append(("aligned", a, f, surf, (0, 0), p_aligned, 0))
                todo += [(f"aligned QIM {lv}", a, f, surf, (0, 0), p_aligned, lv) for lv in QIM_LEVELS]
            todo += [("shifted" if native else name, a, f, surf, d,
                      min(1.0, G * G * chernoff_tail(float(surf[d]), m)), 0)
                     for d in _peaks(surf, N_SHIFTS) if not native or d != (0, 0)]
            per_lattice.append(todo)
        decoded = iter(decode([t for todo in per_lattice for t in todo]))
        for todo in per_lattice:
            if done():
                break
            for entry in todo:
                take(entry, *next(decoded))

    search(fixed[:1], native=True)
    estimated: list = []
    if not done() and max(h, w) > SEARCH_SIDE:  # the searches look at a central window
        y0, x0 = max(0, (h - SEARCH_SIDE) // 2), max(0, (w - SEARCH_SIDE) // 2)
        lumas = [y[y0:y0 + SEARCH_SIDE, x0:x0 + SEARCH_SIDE] for y in lumas]
        wh, ww = lumas[0].shape
        # a level already prefiltered for the whole frame is cut, not filtered again, where the
        # window starts on its pixel grid (the filter then sees past the window's edge)
        cache = {f: [y[y0 // f:y0 // f + wh // f, x0 // f:x0 // f + ww // f] for y in src]
                 for f, src in cache.items() if y0 % f == 0 and x0 % f == 0}
    if not done():
        search(fixed[1:])
    if not done():
        estimated = [("estimated", c["A"]) for c in estimate_lattices(lumas)]
        search(estimated[:len(PERIODS) + N_ESTIMATED - len(fixed)])

    # 3. Video whose joint fold did not decode: fold again with the scene's motion undone. The
    #    shifts come from the pixels alone (no key), so the pilot test keeps its null law.
    if len(lumas) > 1 and not done():
        motion = None
        for name, a in (fixed[:1] + estimated[:1])[:N_MOTION]:
            if done():
                break
            motion = global_motion(lumas) if motion is None else motion
            if not np.any(motion):
                break
            f = motion_spectrum(lumas, a, k, motion, cache)
            surf = _pilot_surface(f, lay)
            d = _peaks(surf, 1)[0]
            entry = (f"motion {name}", a, f, surf, d, min(1.0, G * G * chernoff_tail(float(surf[d]), m)), 0)
            take(entry, *decode([entry])[0])

    # 4. Still nothing: per-frame synchronisation.
    if len(lumas) > 1 and not done() and not (best["valid"] and best["p_pilot"] < 1e-3):
        for name, a in (fixed[:1] + estimated[:1])[:N_PER_FRAME]:
            res = _per_frame(lumas, a, lay)
            if res is not None and res["valid"] and 2.0 ** -CRC_BITS < best["q"]:
                best.update({"q": 2.0 ** -CRC_BITS, "name": f"per-frame {name}", "A": a, "p_pilot": 1.0, **res})

    # 5. The file's p-value over the fixed budget of attempts.
    p = min(1.0, 2.0 * N_ATTEMPTS * best["q"])
    detected = p <= threshold
    a = best["A"]
    return Detection(
        detected=bool(detected),
        payload=best["payload"] if detected and best["valid"] else None,
        p_value=float(p),
        bit_accuracy=best["accuracy"] if detected else None,
        frames_used=len(lumas), threshold=threshold,
        payload_valid=bool(detected and best["valid"]), sync=best["name"],
        period=1.0 / math.sqrt(abs(np.linalg.det(a))),
        rotation_deg=math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])),
        statistic=best["stat"], pilot_p=float(best["p_pilot"]), soft=best["soft"])


N_ALIGNED = 1 + len(QIM_LEVELS)  # the native unshifted attempts, as a test of their own


def detect_aligned(lumas: list[np.ndarray], key: WatermarkKey, threshold: float = DEFAULT_THRESHOLD) -> Detection:
    """Only the native, unshifted attempts of `detect_lumas` (additive and the QIM readings) with
    their own budget, p = 2·N_ALIGNED·min q: milliseconds instead of the full search. It finds a
    mark on pixels that were not moved since it was embedded (a signer checking for our mark)."""
    h, w = _check_lumas(lumas, threshold)
    lay = layout_for(key.secret)
    period = tile_period(h, w)
    f = lattice_spectrum(lumas, np.eye(2) / period, lay.k)
    surf = _pilot_surface(f, lay)
    p_pilot = chernoff_tail(float(surf[0, 0]), len(lay.pilot))
    best: tuple | None = None
    levels = (0,) + QIM_LEVELS
    softs = np.stack([_soft_at(f, surf, (0, 0), lay, lv) for lv in levels])
    for lv, soft, msg in zip(levels, softs, viterbi_decode_batch(softs)):
        res = _finish(soft, lay, msg)
        q = p_pilot * (2.0 ** -CRC_BITS if res["valid"] else 1.0)
        if best is None or q < best[0]:
            best = (q, lv, res)
    q, lv, res = best
    p = min(1.0, 2.0 * N_ALIGNED * q)
    detected = p <= threshold
    return Detection(
        detected=bool(detected), payload=res["payload"] if detected and res["valid"] else None,
        p_value=float(p), bit_accuracy=res["accuracy"] if detected else None, frames_used=len(lumas),
        threshold=threshold, payload_valid=bool(detected and res["valid"]),
        sync="aligned" + (f" QIM {lv}" if lv else ""), period=period, rotation_deg=0.0,
        statistic=float(surf[0, 0]), pilot_p=float(p_pilot), soft=res["soft"])


def _peaks(surf: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The n highest local maxima of a cyclic surface (3×3 neighbourhood)."""
    nbhd = np.max([np.roll(surf, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    is_max = surf >= nbhd  # the 3×3 cyclic maximum, without importing scipy.ndimage for it
    idx = np.flatnonzero(is_max)
    top = idx[np.argsort(surf.ravel()[idx])[::-1][:n]]
    return [(int(i // G), int(i % G)) for i in top]


def _pilot_surface(f: np.ndarray, lay: Layout) -> np.ndarray:
    """S(d) = Σ_pilot cos(arg F_k − φ_k − 2π k·d/G) at every integer shift d = (dy, dx)."""
    kp = lay.k[lay.pilot]
    z = np.exp(1j * (np.angle(f[lay.pilot]) - lay.phase[lay.pilot]))
    grid = np.zeros((G, G), np.complex128)
    grid[kp[:, 1] % G, kp[:, 0] % G] = z
    return np.real(np.fft.fft2(grid))


def global_motion(lumas: list[np.ndarray]) -> np.ndarray:
    """(T, 2) translation (x, y) of every frame's content relative to the first, in pixels, by
    phase correlation with the first frame itself: chaining consecutive pairs adds up their
    sub-pixel errors, and a pixel of drift turns the band's phases by up to 1.5 rad."""
    out = np.zeros((len(lumas), 2))
    h, w = lumas[0].shape
    win = cv2.createHanningWindow((w, h), cv2.CV_64F)

    def corr(a: np.ndarray, b: np.ndarray) -> tuple[tuple[float, float], float]:
        # fresh float64 copies every call: some OpenCV builds (5.0) window the inputs in place,
        # so a reused reference frame decays call after call and the shifts turn to noise
        return cv2.phaseCorrelate(np.array(a, np.float64), np.array(b, np.float64), win)

    for i in range(1, len(lumas)):
        (sx, sy), resp = corr(lumas[0], lumas[i])
        if resp > 0.05:
            out[i] = (sx, sy)
        else:  # too little overlap left with the first frame (or a cut): step from the last one
            (sx, sy), resp = corr(lumas[i - 1], lumas[i])
            out[i] = out[i - 1] + ((sx, sy) if resp > 0.05 else (0.0, 0.0))
    return out


def motion_spectrum(lumas: list[np.ndarray], a: np.ndarray, k: np.ndarray, motion: np.ndarray,
                    cache: dict | None = None) -> np.ndarray:
    """The joint F_k of the frames with each frame's content motion s undone. The embedder moves
    the mark with the scene and a re-encoder's motion compensation drags it along too, so frame t
    holds the first frame's mark moved by s_t: its F_k carries e^{−2πi (A k)·s_t}, undone exactly
    (sub-pixel) in the spectrum."""
    cache = {} if cache is None else cache
    period = 1.0 / math.sqrt(abs(np.linalg.det(a)))
    f = max(1, int(period // G))
    if f not in cache:
        cache[f] = [prefilter(_downsample(y, f), float(G)) for y in lumas]
    src = cache[f]
    fold = _Fold(a * f, *src[0].shape)
    freq = k @ a.T  # rows: A k (cycles per pixel, x then y)
    total = np.zeros(len(k), np.complex128)
    for y, s_t in zip(src, motion):
        fold.sums[:] = 0.0
        fold.frames = 0
        fold.add(y)
        total += fold.spectrum(k) * np.exp(2j * np.pi * (freq @ s_t))
    return total / len(src)


def _per_frame(lumas: list[np.ndarray], a: np.ndarray, lay: Layout) -> dict | None:
    m = len(lay.pilot)
    tau = math.sqrt(m / 2.0) * math.sqrt(2.0 * math.log(G * G))  # typical null maximum of S
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


SUBBIN_REACH = 0.625  # fine-search half-width, bins: a half-bin offset can sit on either side
SUBBIN_STEPS = 21  # 1/16 bin apart: ≤ 0.09 rad of phase error at |k| = 15


def _parabola(surf: np.ndarray, d: tuple[int, int]) -> tuple[float, float]:
    dy, dx = d

    def off(l, c, r):
        den = l - 2 * c + r
        return 0.0 if den >= 0 else float(np.clip(0.5 * (l - r) / den, -0.5, 0.5))

    oy = off(surf[(dy - 1) % G, dx], surf[dy, dx], surf[(dy + 1) % G, dx])
    ox = off(surf[dy, (dx - 1) % G], surf[dy, dx], surf[dy, (dx + 1) % G])
    return dy + oy, dx + ox


def _subbin(f: np.ndarray, d: tuple[int, int], lay: Layout) -> tuple[float, float]:
    """The shift near the integer peak d of a searched lattice that maximises the pilot
    correlation S evaluated off the bin grid. A crop by an odd number of pixels at a downsampled
    level (64 px periods fold at 2 px per bin) puts the tile half a bin off, where the binned S
    loses up to half its value and a parabola through the bins misjudges the offset enough to
    break the payload decode. Only the decoding uses this shift: the pilot p-value stays at the
    integer grid that its Bonferroni factor counts, and the CRC mask is independent of whatever
    shift is chosen."""
    kp = lay.k[lay.pilot]
    # S separates: e^{-2πi(kx dx + ky dy)/G}, the integer part folded into the pilot terms
    z = np.exp(1j * (np.angle(f[lay.pilot]) - lay.phase[lay.pilot])
               - 2j * np.pi * (kp[:, 0] * d[1] + kp[:, 1] * d[0]) / G)
    o, ex, ey = _subbin_tables(kp.tobytes())
    s = np.real((ey * z) @ ex.T)  # (dy, dx)
    i, j = np.unravel_index(int(np.argmax(s)), s.shape)
    return float(d[0] + o[i]), float(d[1] + o[j])


@lru_cache(maxsize=8)
def _subbin_tables(kp: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = np.frombuffer(kp, np.int64).reshape(-1, 2)
    o = np.linspace(-SUBBIN_REACH, SUBBIN_REACH, SUBBIN_STEPS)
    return o, np.exp(-2j * np.pi * np.outer(o, k[:, 0]) / G), np.exp(-2j * np.pi * np.outer(o, k[:, 1]) / G)


def _soft_at(f: np.ndarray, surf: np.ndarray, d: tuple[int, int], lay: Layout,
             qim: int = 0, search: bool = False) -> np.ndarray:
    """Soft coded bits with the tile shifted by d. `search`: d is a peak of a shift search, refined
    off the grid (`_subbin`); else a parabola through the bins. The aligned attempts keep the
    parabola: their mark sits on the grid (unmoved or halved), and where the pilot is weak the
    off-grid maximum of S wanders with the host's noise (gravel and flowers under WebP 80 at 256 px
    lost their payload to it), while the parabola's estimate stays near the bin."""
    if qim:  # exactly aligned (phase-exact)
        dy, dx = 0.0, 0.0
    else:
        dy, dx = _subbin(f, d, lay) if search else _parabola(surf, d)
    k = lay.k
    aligned = f * np.exp(-1j * lay.phase) * np.exp(-2j * np.pi * (k[:, 0] * dx + k[:, 1] * dy) / G)
    return _soft(aligned, lay, qim)


def _soft(aligned: np.ndarray, lay: Layout, qim: int = 0) -> np.ndarray:
    """Soft coded bits (positive favours 0) from key-aligned coefficients: each coded bit sums
    its chips (see `_chips`)."""
    chips, bit = _chips(aligned, lay, qim)
    return np.bincount(bit, chips, minlength=n_coded())


def _chips(aligned: np.ndarray, lay: Layout, qim: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every payload chip with its keyed sign applied, and the coded bit it carries. Additive:
    two chips (real, imaginary) per payload frequency, normalised by a per-radius noise scale
    (the host's spectrum falls with frequency). `qim` = M: the QIM reading of small images,
    cos(M/2 · phase) per frequency (the parity of the phase's quantisation index, softly)."""
    v = aligned[lay.payload]
    if qim:
        return np.cos(qim / 2.0 * np.angle(v)) * lay.qim_sign, lay.qim_bit
    k = lay.k[lay.payload]
    r = np.round(np.hypot(k[:, 0], k[:, 1])).astype(int)
    scale = np.sqrt(_ring_median(np.abs(v) ** 2, r)) + 1e-9
    v = v / scale * math.sqrt(2)
    chips = np.empty(2 * len(v))
    chips[0::2], chips[1::2] = v.real, v.imag
    return chips * lay.chip_sign, lay.chip_bit


def _ring_median(x: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """The median of x over each ring, at every element (np.median per group): one sort of a
    padded (rings × widest ring) table."""
    inv, col, cnt = _ring_table(np.asarray(ring, np.int64).tobytes())
    table = np.full((len(cnt), int(cnt.max())), np.inf)
    table[inv, col] = x
    table.sort(axis=1)
    g = np.arange(len(cnt))
    return ((table[g, (cnt - 1) // 2] + table[g, cnt // 2]) / 2)[inv]


@lru_cache(maxsize=16)
def _ring_table(ring: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ring (table row) of every element, its column in the padded table, and the ring sizes."""
    _, inv, cnt = np.unique(np.frombuffer(ring, np.int64), return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    col = np.empty(len(inv), np.int64)
    col[order] = np.arange(len(inv)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return inv, col, cnt


def _finish(soft: np.ndarray, lay: Layout, msg: np.ndarray | None = None) -> dict:
    msg = viterbi_decode(soft) if msg is None else msg
    acc = float(np.mean((soft < 0).astype(np.int8) == conv_encode(msg)))
    payload = np.packbits(msg[:PAYLOAD_BITS].astype(np.uint8)).tobytes()
    crc = int.from_bytes(np.packbits(msg[PAYLOAD_BITS:].astype(np.uint8)).tobytes(), "big")
    return {"payload": payload.hex(), "valid": crc == (crc32(payload) ^ lay.crc_mask),
            "accuracy": acc, "soft": soft}


# ---------------------------------------------------------------------------------------------
# Known-payload test (step 7: a manifest store supplies the candidates)

MATCH_WEIGHTS = {"additive": (2.0, 1.0), "qim": (3.0, 1.0)}  # (payload, pilot), fixed beforehand


@dataclasses.dataclass
class Match:
    detected: bool
    payload: str | None  # the best candidate (hex), only when detected
    p_value: float
    statistic: float  # Z of the best candidate
    reading: str  # "additive" or "QIM M"
    candidates: int
    threshold: float

    def to_json(self) -> dict:
        return {"detected": self.detected, "payload": self.payload, "p_value": _sig(self.p_value),
                "statistic": round(self.statistic, 3), "reading": self.reading,
                "candidates": self.candidates, "threshold": self.threshold}


def match(rgb: np.ndarray, key: WatermarkKey, payloads, threshold: float = DEFAULT_THRESHOLD) -> Match:
    """Test one RGB image for this key's mark carrying one of the given payloads."""
    return match_lumas([luma(np.asarray(rgb))], key, payloads, threshold)


def match_frames(frames, key: WatermarkKey, payloads, threshold: float = DEFAULT_THRESHOLD) -> Match:
    return match_lumas([luma(f) for f in frames], key, payloads, threshold)


def match_lumas(lumas: list[np.ndarray], key: WatermarkKey, payloads,
                threshold: float = DEFAULT_THRESHOLD) -> Match:
    """The known-payload test of the module docstring (step 7), at the native aligned sync."""
    h, w = _check_lumas(lumas, threshold)
    cands = list(dict.fromkeys(bytes(p) for p in payloads))
    if any(len(p) * 8 != PAYLOAD_BITS for p in cands):
        raise UsageError(f"every candidate payload is {PAYLOAD_BITS} bits")
    if not cands:
        return Match(False, None, 1.0, 0.0, "none", 0, threshold)
    lay = layout_for(key.secret)
    f = lattice_spectrum(lumas, np.eye(2) / tile_period(h, w), lay.k)
    aligned = f * np.exp(-1j * lay.phase)
    z_pilot = float(np.sum(np.cos(np.angle(aligned[lay.pilot])))) / math.sqrt(len(lay.pilot) / 2)
    signs = np.stack([1.0 - 2.0 * conv_encode(_message(p, lay.crc_mask)) for p in cands])  # (C, n_coded)
    readings = [("additive", 0)]
    if min(h, w) < SMALL_SIDE:  # the embedder wrote QIM at one of these lattices
        readings += [(f"QIM {lv}", lv) for lv in QIM_LEVELS]
    best = (-math.inf, 0, "none")
    for name, lv in readings:
        chips, bit = _chips(aligned, lay, lv)
        z_pay = signs[:, bit] @ chips / (math.sqrt(float(np.sum(chips * chips))) + 1e-12)  # (C,)
        wp, wl = MATCH_WEIGHTS["qim" if lv else "additive"]
        z = (wp * z_pay + wl * z_pilot) / math.hypot(wp, wl)
        i = int(np.argmax(z))
        if z[i] > best[0]:
            best = (float(z[i]), i, name)
    z, i, name = best
    p = min(1.0, len(readings) * len(cands) * math.exp(-0.5 * z * z)) if z > 0 else 1.0
    detected = p <= threshold
    return Match(bool(detected), cands[i].hex() if detected else None, float(p), z, name, len(cands), threshold)


# ---------------------------------------------------------------------------------------------
# Files (images and MP4)

MAX_EMBED_BYTES = 1_500_000_000  # decoded frames held in memory while marking a video
MAX_DETECT_PIXELS = 64_000_000  # luminance samples aggregated when testing a video
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
    (written as H.264 MP4 at CRF 18; audio is not carried over)."""
    from .. import media

    src, dst = Path(src), Path(dst)
    kind = media.sniff(src)
    ext = dst.suffix.lower()
    if kind == "image" and ext not in IMAGE_OUT:
        raise UsageError(f"{dst}: a marked image is written as .png or .jpg/.jpeg; got {ext or 'no extension'!r}")
    if kind == "video" and ext != ".mp4":
        raise UsageError(f"{dst}: a marked video is written as .mp4; got {ext or 'no extension'!r}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"{dst}: the output would overwrite the input; choose another path")
    payload = default_payload(src) if payload is None else payload
    if kind == "image":
        rgb = media.read_image(src)
        _check_media_size(rgb.shape[0], rgb.shape[1], src)
        out = embed(rgb, key, payload, strength)
        if ext == ".png":
            media.write_png(dst, out)
        else:
            media.write_jpeg(dst, out, quality=95)
        quality, frames = psnr(rgb, out), 1
    else:
        reader = media.VideoReader(src)
        i = reader.info
        _check_media_size(i.height, i.width, src)
        if max(i.frames, 1) * i.width * i.height * 3 > MAX_EMBED_BYTES:
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
    """The `watermark detect --json` record of one image or video (DESIGN.md, extended)."""
    from .. import media

    if max_frames < 1:
        raise UsageError(f"--max-frames must be ≥ 1; got {max_frames}")
    kind = media.sniff(path)
    if kind == "image":
        rgb = media.read_image(path)
        _check_media_size(rgb.shape[0], rgb.shape[1], path)
        lumas = [luma(rgb)]
    else:
        info = media.probe_video(path)
        _check_media_size(info.height, info.width, path)
        cap = max(1, min(max_frames, MAX_DETECT_PIXELS // max(1, info.width * info.height)))
        _, frames, _ = media.frames_of(path, max_frames=cap)
        lumas = [luma(f) for f in frames]
    d = detect_lumas(lumas, key, threshold)
    return {"path": str(path), "method": "posthoc", **d.to_json(), "key_fingerprint": key.fingerprint}


def _check_media_size(h: int, w: int, path) -> None:
    if min(h, w) < MIN_SIDE:
        raise MediaError(f"is {w}x{h} pixels; the watermark needs at least {MIN_SIDE}x{MIN_SIDE}", path)
