"""Byte-level mutation of real media files, shared by the fuzz tests and bench/fuzz.py.

Only the project's typed errors (ForensicsError) may escape a reader; anything else is a bug.
Targets: media decoding (as `detect` reads), the corpus reader, `watermark detect`,
`provenance verify` and `audit`. For provenance, `mutate_manifest` aims the mutation at the
embedded C2PA manifest store (a JUMBF superbox) so the SDK's parser is what gets exercised,
not only the image decoder in front of it.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from . import corpus, media
from .errors import ForensicsError

MUTATIONS = ("flip", "truncate", "insert", "zero_run", "splice_header")
MANIFEST_MUTATIONS = ("flip", "zero_run", "box_length", "truncate", "cut", "insert", "duplicate", "strip")
# JUMBF / C2PA box types whose 4-byte length field precedes them: corrupting those lengths is
# what sends a box parser past its buffer.
BOX_TYPES = (b"jumb", b"jumd", b"cbor", b"json", b"bidb", b"uuid", b"c2pa", b"c2ma", b"c2as", b"c2cl")


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random structural mutation of a file's bytes (corpus seeds stay small)."""
    b = bytearray(data)
    kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    n = len(b)
    if kind == "flip" and n:
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(n))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == "truncate" and n:
        b = b[: int(rng.integers(n))]
    elif kind == "insert":
        i = int(rng.integers(n + 1))
        b[i:i] = rng.bytes(int(rng.integers(1, 64)))
    elif kind == "zero_run" and n:
        i = int(rng.integers(n))
        b[i:i + int(rng.integers(1, 256))] = b"\x00" * len(b[i:i + 256][: int(rng.integers(1, 256))])
    elif n > 32:  # splice_header: keep the magic, scramble what follows it
        i = int(rng.integers(8, min(64, n)))
        b[i:i + 16] = rng.bytes(16)
    return bytes(b)


def manifest_span(data: bytes) -> tuple[int, int] | None:
    """(start, end) of the first JUMBF superbox (the C2PA manifest store), or None."""
    i = data.find(b"jumb")
    if i < 4:
        return None
    size = int.from_bytes(data[i - 4:i], "big")
    lo = i - 4
    hi = min(len(data), lo + size) if size >= 8 else len(data)
    return lo, hi


def mutate_manifest(data: bytes, rng: np.random.Generator, *, fix_png_crc: bool | None = None) -> bytes:
    """A mutation inside the C2PA manifest store of a signed file (falls back to `mutate`).

    PNG chunk CRCs are recomputed afterwards (by default for 3 cases in 4) so the image still
    decodes and the broken manifest, not the CRC check, is what the reader meets."""
    span = manifest_span(data)
    if span is None:
        return mutate(data, rng)
    lo, hi = span
    b = bytearray(data)
    kind = MANIFEST_MUTATIONS[int(rng.integers(len(MANIFEST_MUTATIONS)))]
    at = lambda: int(rng.integers(lo, hi))  # noqa: E731
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            b[at()] ^= 1 << int(rng.integers(8))
    elif kind == "zero_run":
        i = at()
        k = min(int(rng.integers(1, 256)), hi - i)
        b[i:i + k] = bytes(k)
    elif kind == "box_length":
        spots = [j - 4 for t in BOX_TYPES for j in _find_all(data, t, lo + 4, hi)]
        j = spots[int(rng.integers(len(spots)))] if spots else lo
        old = int.from_bytes(b[j:j + 4], "big")
        new = int(rng.choice([0, 1, 7, 8, 9, old - 1, old + 1, old * 2, 0x7FFFFFFF, 0xFFFFFFFF,
                              int(rng.integers(0, 1 << 32))])) % (1 << 32)
        b[j:j + 4] = new.to_bytes(4, "big")
    elif kind == "truncate":
        b = b[:at()]
    elif kind == "cut":
        i = at()
        b[i:i + int(rng.integers(1, max(2, hi - i)))] = b""
    elif kind == "insert":
        i = at()
        b[i:i] = rng.bytes(int(rng.integers(1, 64)))
    elif kind == "duplicate":  # a box repeated: two claims, two stores, overlapping offsets
        i = at()
        k = int(rng.integers(8, max(9, min(512, hi - i))))
        b[i:i] = data[i:i + k]
    else:  # strip: the manifest bytes removed, the container's framing left as it was
        b[lo:hi] = b""
    out = bytes(b)
    if out.startswith(b"\x89PNG\r\n\x1a\n") and (fix_png_crc if fix_png_crc is not None else rng.random() < 0.75):
        out = png_fix_crcs(out)
    return out


def _find_all(data: bytes, needle: bytes, lo: int, hi: int) -> list[int]:
    out, i = [], data.find(needle, lo, hi)
    while i >= 0 and len(out) < 64:
        out.append(i)
        i = data.find(needle, i + 1, hi)
    return out


def png_fix_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk CRC that the chunk lengths still let us find."""
    b = bytearray(data)
    i = 8
    while i + 12 <= len(b):
        (n,) = struct.unpack(">I", b[i:i + 4])
        end = i + 8 + n
        if end + 4 > len(b):
            break
        b[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(b[i + 4:end])) & 0xFFFFFFFF)
        i = end + 4
    return bytes(b)


def _json_clean(r) -> None:
    """The CLI prints results as JSON: a value json cannot write (or a NaN, which is not JSON)
    is a bug in the result, found here rather than by a user's parser."""
    json.dumps(r, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Targets: each returns a short outcome name, or raises whatever non-typed error escaped.


def read_any(path) -> str:
    """Decode a file the way `detect` does; return 'ok' or 'error' (typed); raise anything else."""
    try:
        kind, frames, _ = media.frames_of(path, max_frames=8)
        for _ in frames:
            pass
        return "ok"
    except ForensicsError:
        return "error"


def read_corpus(root) -> str:
    try:
        c = corpus.Corpus(root)
        for r in c.rows:
            c.path(r)
        return "ok"
    except ForensicsError:
        return "error"


def watermark_any(path, key, *, max_frames: int = 8) -> str:
    """`watermark detect` on one file: 'marked', 'unmarked' or 'error' (typed)."""
    from .watermark import posthoc

    try:
        r = posthoc.detect_file(path, key, max_frames=max_frames)
    except ForensicsError:
        return "error"
    _json_clean(r)
    return "marked" if r["detected"] else "unmarked"


def verify_any(path, keys_dir) -> str:
    """`provenance verify` on one file: the validation state ('+recovered' when the soft binding
    found the manifest), or 'error' (typed)."""
    from .provenance.verify import verify_file

    try:
        r = verify_file(path, keys_dir=keys_dir)
    except ForensicsError:
        return "error"
    _json_clean(r)
    return r["state"] + ("+recovered" if r.get("recovered") else "")


def audit_any(path, auditor) -> str:
    """`audit` on one file (an `audit.Auditor`): the verdict, or 'error' (typed)."""
    try:
        r = auditor.audit(path)
    except ForensicsError:
        return "error"
    _json_clean(r)
    return r["summary"]["verdict"]
