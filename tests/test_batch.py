"""Batch mode: `detect DIR --json` and `audit DIR --json` print one JSON line per file in order,
go on past bad files (an `error` row and one stderr line each), end with a summary line, and
exit 2 when any file failed, 0 otherwise."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cli
from forensics import media


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def folder(tmp_path, photo):
    d = tmp_path / "batch"
    (d / "sub").mkdir(parents=True)
    media.write_png(d / "a.png", photo[:48, :48])
    media.write_jpeg(d / "sub" / "b.jpg", photo[16:80, 16:80])
    media.write_mp4(d / "c.mp4", np.stack([np.roll(photo[:32, :32], i, axis=1) for i in range(4)]), fps=8)
    (d / "notes.txt").write_text("not media: skipped, not an error")
    return d


def _run(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.parametrize("command", ["detect", "audit"])
def test_folder_streams_one_line_per_file_then_a_summary(command, folder, capsys):
    rc, rows, err = _run(capsys, command, folder, "--json", "--detectors", "frequency", "--max-frames", "4")
    summary = rows.pop()["summary"]  # the batch line is the one without a "path"
    assert rc == 0, err
    assert all("path" in r for r in rows)
    assert [r["path"] for r in rows] == [str(folder / "a.png"), str(folder / "c.mp4"), str(folder / "sub" / "b.jpg")]
    assert summary["files"] == 3 and summary["failed"] == 0
    assert all("error" not in r for r in rows)


@pytest.mark.parametrize("command", ["detect", "audit"])
def test_bad_files_are_reported_and_the_batch_goes_on(command, folder, capsys):
    (folder / "b0_truncated.png").write_bytes((folder / "a.png").read_bytes()[:60])
    (folder / "b1_text.jpg").write_text("not an image")
    (folder / "sub" / "empty.mp4").write_bytes(b"")
    rc, rows, err = _run(capsys, command, folder, folder / "missing.png", "--json", "--detectors", "frequency",
                         "--max-frames", "4")
    summary = rows.pop()["summary"]
    assert rc == 2
    bad = {r["path"].rsplit("/", 1)[-1]: r["error"] for r in rows if "error" in r}
    assert set(bad) == {"b0_truncated.png", "b1_text.jpg", "empty.mp4", "missing.png"}
    assert "empty file" in bad["empty.mp4"] and "no such file" in bad["missing.png"]
    assert len(rows) == 7 and summary["files"] == 7 and summary["failed"] == 4
    # one stderr line per bad file, each naming it; no traceback
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 4 and all(x.startswith("forensics: ") for x in lines) and "Traceback" not in err


def test_human_output_ends_with_counts(folder, capsys):
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    rc = cli.main(["detect", str(folder), "--detectors", "frequency", "--max-frames", "4"])
    out, _ = capsys.readouterr()
    assert rc == 2 and out.splitlines()[-1] == "3 scored, 1 failed"
    rc = cli.main(["audit", str(folder), "--detectors", "frequency", "--max-frames", "4"])
    out, _ = capsys.readouterr()
    assert rc == 2 and out.splitlines()[-1] == "3 audited, 1 failed"


def test_single_file_is_not_a_batch(folder, capsys):
    for command in ("detect", "audit"):  # (an audit row has its own per-file "summary"; rows have "path")
        rc, rows, _ = _run(capsys, command, folder / "a.png", "--json", "--detectors", "frequency")
        assert rc == 0 and len(rows) == 1 and rows[0]["path"] == str(folder / "a.png")


def test_empty_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for command in ("detect", "audit"):
        rc = cli.main([command, str(tmp_path / "empty"), "--json", "--detectors", "frequency"])
        _, err = capsys.readouterr()
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "no media files" in err
