"""Byte-level mutation of real media files, shared by the fuzz tests and bench/fuzz.py.

Only the project's typed errors (ForensicsError) may escape a reader; anything else is a bug.
"""

from __future__ import annotations

import numpy as np

from . import corpus, media
from .errors import ForensicsError

MUTATIONS = ("flip", "truncate", "insert", "zero_run", "splice_header")


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
