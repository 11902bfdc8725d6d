import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from forensics import corpus
from forensics.errors import CorpusError

from conftest import FORENSICS, ROOT


def _img(i):
    return np.full((32, 32, 3), i % 256, np.uint8)


def _row(i, split="train"):
    return dict(label="real", family="real", architecture="real", source="test", split=split, seed=i)


def test_writer_reader_and_resume(tmp_path):
    with corpus.CorpusWriter(tmp_path, name="t") as w:
        for i in range(5):
            w.add_image(f"images/{i}.png", _img(i), **_row(i))
    c = corpus.Corpus(tmp_path)
    assert len(c) == 5 and c.card["counts"]["total"] == 5
    assert set(c.rows[0]) >= set(corpus.ROW_FIELDS)
    with corpus.CorpusWriter(tmp_path) as w:  # reopen: rows are kept, no duplicate appended
        assert w.has("images/0.png")
        w.add_image("images/0.png", _img(0), **_row(0))
        w.add_image("images/5.png", _img(5), **_row(5))
    assert len(corpus.Corpus(tmp_path)) == 6
    assert corpus.verify(tmp_path)["ok"]


def test_torn_last_line_is_cut(tmp_path):
    with corpus.CorpusWriter(tmp_path) as w:
        w.add_image("images/0.png", _img(0), **_row(0))
    with open(tmp_path / "metadata.jsonl", "a") as fh:
        fh.write('{"file_name": "images/1.png", "sha')
    with corpus.CorpusWriter(tmp_path) as w:
        w.add_image("images/1.png", _img(1), **_row(1))
    lines = (tmp_path / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x) for x in lines)


@pytest.mark.parametrize("bad", ["../escape.png", "/etc/passwd", "images/../../x.png"])
def test_paths_cannot_escape(tmp_path, bad):
    with pytest.raises(CorpusError):
        corpus.safe_path(tmp_path, bad)


def test_symlink_out_of_corpus_refused(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    root = tmp_path / "c"
    (root / "images").mkdir(parents=True)
    (root / "images" / "link.png").symlink_to(outside)
    with pytest.raises(CorpusError, match="outside|symlink"):
        corpus.safe_path(root, "images/link.png")


def test_verify_finds_tampering(tmp_path):
    with corpus.CorpusWriter(tmp_path) as w:
        w.add_image("images/0.png", _img(0), **_row(0))
        w.add_image("images/1.png", _img(1), **_row(1))
    with open(tmp_path / "images/1.png", "ab") as fh:
        fh.write(b"junk")
    (tmp_path / "images/0.png").unlink()
    r = corpus.verify(tmp_path)
    assert not r["ok"] and any("missing" in p for p in r["problems"]) and any("sha256" in p for p in r["problems"])


def test_malformed_rows_are_typed_errors(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\nnot json\n')
    with pytest.raises(CorpusError):
        corpus.Corpus(tmp_path)


def test_generate_resumes_after_sigkill(tmp_path, tiny_pipeline):
    out = tmp_path / "gen"
    args = [*FORENSICS, "generate", "--arch", "vae", "--n", "60", "--out", str(out),
            "--checkpoint", str(tiny_pipeline["vae"]), "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = out / "metadata.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not rows.exists() or rows.read_text().count("\n") < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = rows.read_text().count("\n")
    assert n_before < 60, "the run finished before it could be killed"
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    v = corpus.verify(out)
    assert v["ok"] and v["rows"] == 60
    names = [x["file_name"] for x in corpus.Corpus(out).rows]
    assert len(set(names)) == 60
    assert not [f for f in os.listdir(out / "images" / "vae") if f.startswith(".tmp")]
