"""Shared fixtures: small real media written by the project's own writers, and a tiny trained
pipeline (VAE → corpus → frequency detector) built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FORENSICS = [sys.executable, str(ROOT / "cli.py")]


def run_cli(*args, timeout=120, env=None, cwd=None):
    """Run the real `forensics` command in a subprocess; return CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([*FORENSICS, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=cwd or ROOT)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small ops on a shared 2-core machine: one intra-op thread is much faster than two."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    from forensics import realdata

    return realdata._load_source("skimage:chelsea")[:128, :160].copy()


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """Train a tiny VAE for a few steps, build a small corpus, fit the frequency detector."""
    from forensics import bank, recipe
    from forensics.fit import train_detector

    d = tmp_path_factory.mktemp("pipeline")
    card = bank.train_architecture("vae", out=d / "vae", preset="tiny", steps=4, per_source=8, progress=False)
    rec = d / "recipe.toml"
    rec.write_text(
        'name = "tiny"\nseed = 0\n[real]\nper_source = 12\n'
        f'[[synthetic]]\narch = "vae"\nn = 48\ncheckpoint = "{d / "vae"}"\n'
    )
    built = recipe.build(rec, d / "corpus", device="cpu", progress=False)
    det_card = train_detector("frequency", d / "corpus", d / "frequency")
    return {"dir": d, "vae": d / "vae", "vae_card": card, "corpus": d / "corpus", "built": built,
            "detector": d / "frequency", "detector_card": det_card}
