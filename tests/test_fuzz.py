"""Fast fuzz seeds: mutated real files through media reading and `detect`, malformed corpus
files through the reader. Only typed errors may escape. (bench/fuzz.py runs the long version.)"""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from forensics import fuzz, media

from conftest import FORENSICS, ROOT


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, photo):
    d = tmp_path_factory.mktemp("seeds")
    small = photo[:48, :48]
    media.write_png(d / "s.png", small)
    Image.fromarray(small).save(d / "s.jpg", quality=85)
    Image.fromarray(small).save(d / "s.webp", quality=80)
    Image.fromarray(small).save(d / "s.gif")
    media.write_mp4(d / "s.mp4", np.stack([small[:32, :32]] * 4), fps=8)
    return {ext: (d / f"s.{ext}").read_bytes() for ext in ("png", "jpg", "webp", "gif", "mp4")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ext=st.sampled_from(["png", "jpg", "webp", "gif", "mp4"]), seed=st.integers(0, 2**32 - 1))
def test_mutated_media_only_typed_errors(tmp_path, seeds, ext, seed):
    data = fuzz.mutate(seeds[ext], np.random.default_rng(seed))
    p = tmp_path / f"m.{ext}"
    p.write_bytes(data)
    assert fuzz.read_any(p) in ("ok", "error")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(
    st.text(max_size=80),
    st.builds(lambda d: json.dumps(d), st.dictionaries(
        st.sampled_from(["file_name", "sha256", "label", "modality", "family", "split"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=70), st.lists(st.integers(), max_size=2)))),
), max_size=5), card=st.one_of(st.text(max_size=40), st.just("[]"), st.just("{}")))
def test_malformed_corpus_only_typed_errors(tmp_path, lines, card):
    d = tmp_path / "c"
    d.mkdir(exist_ok=True)
    (d / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (d / "corpus.json").write_text(card)
    assert fuzz.read_corpus(d) in ("ok", "error")


def test_detect_on_mutated_files_exit_0_or_2(tmp_path, seeds):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(10):
        ext = ["png", "jpg", "mp4", "webp", "gif"][i % 5]
        p = tmp_path / f"m{i}.{ext}"
        p.write_bytes(fuzz.mutate(seeds[ext], rng))
        paths.append(str(p))
    r = subprocess.run([*FORENSICS, "detect", *paths, "--json"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode in (0, 2), r.stderr
    assert "Traceback" not in r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    summary = rows.pop()["summary"]
    assert len(rows) == 10 and all("verdict" in x or "error" in x for x in rows)
    assert summary["files"] == 10 and summary["failed"] == sum("error" in x for x in rows)
    assert r.returncode == (2 if summary["failed"] else 0)


def test_no_pickle_loading_in_the_code_base():
    import re

    bad = re.compile(r"pickle\.loads?\(|joblib\.load\(|torch\.load\((?![^)]*weights_only=True)|np\.load\([^)]*allow_pickle=True")
    hits = []
    for f in list(ROOT.glob("*.py")) + list(ROOT.glob("forensics/**/*.py")) + list(ROOT.glob("generators/**/*.py")) \
            + list(ROOT.glob("bench/*.py")):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if bad.search(line):
                hits.append(f"{f}:{n}: {line.strip()}")
    assert not hits, hits
