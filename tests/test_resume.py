"""Long jobs resume after SIGKILL: `bank train` from its last saved state, `corpus build` with
exact counts, no duplicates and every sha256 verifying."""

import json
import os
import signal
import subprocess
import time

from forensics import corpus

from conftest import FORENSICS, ROOT


def _kill_when(proc, cond, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_bank_train_resumes_from_saved_state(tmp_path):
    out = tmp_path / "vae"
    args = [*FORENSICS, "bank", "train", "vae", "--preset", "tiny", "--steps", "120", "--save-every", "5",
            "--per-source", "4", "--out", str(out), "--quiet", "--json", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: one thread is fastest
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = out / "train_state" / "state.json"
    _kill_when(proc, lambda: state.exists() and json.loads(state.read_text())["step"] >= 10)
    saved = json.loads(state.read_text())["step"]
    assert 10 <= saved < 120, "the run ended before it could be killed"
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    assert card["resumed_from_step"] == saved and card["steps"] == 120
    assert [h["steps"] for h in card["history"]] == [120]  # the killed run never wrote a card


def test_corpus_build_resumes_exactly(tmp_path, tiny_pipeline):
    rec = tmp_path / "r.toml"
    rec.write_text(f'name = "r"\nseed = 1\n[real]\nper_source = 6\n'
                   f'[[synthetic]]\narch = "vae"\nn = 40\ncheckpoint = "{tiny_pipeline["vae"]}"\n')
    out = tmp_path / "c"
    args = [*FORENSICS, "corpus", "build", str(rec), "--out", str(out), "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = out / "metadata.jsonl"
    _kill_when(proc, lambda: rows.exists() and rows.read_text().count("\n") >= 60)
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    v = corpus.verify(out)
    n_real = 6 * sum(1 for _ in __import__("forensics.realdata", fromlist=["x"]).bundled_sources())
    assert v["ok"] and v["rows"] == n_real + 40 and not v["orphans"]
    assert len({x["file_name"] for x in corpus.Corpus(out).rows}) == v["rows"]
