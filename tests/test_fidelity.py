"""The project's quality metric (forensics/fidelity.py) and `forensics bank score`."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from forensics import fidelity
import cli
from conftest import ROOT

_PROBE = "import torch; x = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32); x[1] = x[1].flip(-1)"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crops():
    from forensics import realdata

    test = realdata.default_crops(per_source=40, seed=0, splits=("test",)).images
    other = realdata.default_crops(per_source=40, seed=1, splits=("test",)).images
    return test, other


def _probe_images():
    ns: dict = {}
    exec(_PROBE, ns)
    return ns["x"]


def test_feature_net_is_fixed_across_calls_and_processes():
    x = _probe_images()
    a = fidelity.features(x)
    b = fidelity.features(x, net=fidelity.FeatureNet())  # a freshly built net: same seed, same weights
    assert a.shape == (2, 64) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    code = (f"import json; from forensics import fidelity; {_PROBE}; "
            "print(json.dumps(fidelity.features(x).tolist()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.array(json.loads(r.stdout)), a, rtol=1e-12, atol=1e-12)


def test_input_policy_uint8_and_resize():
    x = _probe_images()
    u8 = ((x + 1) * 127.5).round().to(torch.uint8).movedim(1, -1).numpy()
    np.testing.assert_allclose(fidelity.features(u8), fidelity.features(torch.from_numpy(u8).movedim(-1, 1).double() / 127.5 - 1))
    big = torch.nn.functional.interpolate(x, size=(64, 96), mode="nearest")  # non-square: center crop, then 32x32
    assert fidelity.prepare(big).shape == (2, 3, 32, 32)
    clips = x[:, None].expand(2, 4, 3, 32, 32)                                 # frames count as images
    assert fidelity.features(clips).shape == (8, 64)


def test_frechet_zero_on_itself_and_symmetric():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64))
    b = rng.normal(size=(300, 64)) * 2 + 0.5
    assert abs(fidelity.frechet(a, a)) < 1e-6 * np.trace(np.cov(a, rowvar=False))
    ab, ba = fidelity.frechet(a, b), fidelity.frechet(b, a)
    assert ab > 1 and abs(ab - ba) < 1e-8 * ab
    # rank-deficient covariances (N < D) stay real and finite
    assert np.isfinite(fidelity.frechet(a[:20], b[:20]))


def test_frechet_grows_with_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    d = [fidelity.frechet(a, b + s) for s in (0.0, 0.5, 1.0)]
    assert d[0] < d[1] < d[2]
    assert abs(d[2] - d[0] - 16.0) < 2.0  # ‖Δμ‖² = 16 · 1²


def test_fd_grows_when_images_are_blurred_or_shifted(crops):
    test, other = crops                      # the same test photos, two independent crop sets
    ref = fidelity.Reference(test, test, n=len(test))
    clean = ref.score(other, inception=False)["fd"]
    blurred = [ref.score(np.stack([cv2.GaussianBlur(im, (0, 0), s) for im in other]), inception=False)["fd"]
               for s in (1.0, 2.5)]
    darker = ref.score(np.clip(other.astype(int) - 40, 0, 255).astype(np.uint8), inception=False)["fd"]
    assert clean < blurred[0] < blurred[1]
    assert clean < darker
    out = ref.score(other, inception=False)
    assert out["n"] == len(test) and out["fd_floor"] < 1e-6  # floor of a set against itself


def test_equal_n_is_enforced_and_stated(crops):
    test, other = crops
    ref = fidelity.Reference(test, other, n=10_000)
    assert ref.n == len(test)
    out = ref.score(other, inception=False)
    assert out["n"] == len(test) and out["n_requested"] == 10_000
    with pytest.raises(Exception, match="need"):
        ref.score(other[:5], inception=False)


def test_inception_skipped_without_local_weights(crops, tmp_path, monkeypatch):
    test, other = crops
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv(fidelity.INCEPTION_ENV, raising=False)
    ref = fidelity.Reference(test[:20], other[:20], n=20)
    out = ref.score(other[:20])
    assert out["inception_fid"] is None and "nothing is downloaded" in out["inception_fid_skipped"]
    assert "\n" not in out["inception_fid_skipped"]
    missing = tmp_path / "nope.pth"
    monkeypatch.setenv(fidelity.INCEPTION_ENV, str(missing))
    out = ref.score(other[:20])
    assert out["inception_fid"] is None and str(missing) in out["inception_fid_skipped"]
    assert not (tmp_path / "empty_torch_home").exists()  # nothing was fetched into the cache


def test_bank_score_writes_into_a_copied_checkpoint(tmp_path, monkeypatch, capsys):
    from forensics import bank
    from forensics.errors import UsageError
    from generators import base

    ck = tmp_path / "vae"
    torch.manual_seed(0)
    base.create("vae", "tiny").save(ck)
    card = {"architecture": "vae", "steps": 7, "command": "made by the test",
            "data": {"kind": "bundled photos (scikit-image, scikit-learn)", "crops_per_source": 6, "size": 32, "seed": 0},
            "metrics": {"neg_elbo_bits_per_dim": 9.9}}
    (ck / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv(fidelity.INCEPTION_ENV, raising=False)
    rc = cli.main(["bank", "score", "vae", "--checkpoint", str(ck), "--n", "16", "--json", "--device", "cpu", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    row = json.loads(out.out.splitlines()[0])
    assert row["architecture"] == "vae" and row["n"] == 16 and row["fd"] > 0 and row["fd_floor"] > 0
    assert row["inception_fid"] is None and row["inception_fid_skipped"]
    new = json.loads((ck / "card.json").read_text())
    fid = new["metrics"]["fidelity"]["vae"]
    assert fid["fd"] == row["fd"] and fid["n"] == 16 and fid["checkpoint_sha256"] == base.checkpoint_sha256(ck)
    assert new["metrics"]["neg_elbo_bits_per_dim"] == 9.9  # every other field is kept
    assert {k: v for k, v in new.items() if k != "metrics"} == {k: v for k, v in card.items() if k != "metrics"}
    with pytest.raises(UsageError, match="'vae' model"):
        bank.score_checkpoints("ddpm", checkpoint=ck, n=16)
