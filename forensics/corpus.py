"""The corpus format (datasets/README.md): corpus.json + metadata.jsonl + images/ + clips/.

- Writer: every media file is written to a temp file and renamed, *then* its row is appended to
  metadata.jsonl and fsynced. A kill at any point leaves either no trace of an item or a complete
  item; a torn last line is cut off when the corpus is reopened. Reopening skips items whose row
  exists, so a rerun ends with exactly the items asked for, no duplicates.
- One writer at a time per corpus (an advisory lock on `.lock`).
- Reader: rows are validated; a `file_name` that is absolute, contains `..`, or resolves
  (through symlinks) outside the corpus folder is refused.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from . import __version__, media
from .errors import CorpusError

CARD = "corpus.json"
ROWS = "metadata.jsonl"
FAMILIES = ("real", "vae", "gan", "flow", "autoregressive", "diffusion", "latent_diffusion",
            "flow_matching", "video_diffusion")
ROW_FIELDS = ("file_name", "sha256", "label", "modality", "family", "architecture", "sampler",
              "steps", "seed", "checkpoint_sha256", "source", "width", "height", "frames", "fps",
              "split")
MAX_ROW_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_path(root: str | os.PathLike, file_name: str) -> Path:
    """The path of a row's file, refusing anything that could leave the corpus folder."""
    if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
        raise CorpusError(f"invalid file_name {file_name!r}")
    if file_name.startswith(("/", "\\")) or (len(file_name) > 1 and file_name[1] == ":"):
        raise CorpusError(f"file_name {file_name!r} is absolute; rows must be relative to the corpus")
    parts = file_name.replace("\\", "/").split("/")
    if ".." in parts:
        raise CorpusError(f"file_name {file_name!r} climbs out of the corpus with '..'")
    root_r = Path(root).resolve()
    p = (root_r / file_name)
    try:
        p.resolve().relative_to(root_r)
    except ValueError:
        raise CorpusError(f"file_name {file_name!r} resolves outside the corpus (symlink?)") from None
    if p.is_symlink():
        raise CorpusError(f"file_name {file_name!r} is a symlink; refused")
    return p


def validate_row(row: Any, where: str = "") -> dict:
    if not isinstance(row, dict):
        raise CorpusError(f"{where}row is not a JSON object")
    missing = [f for f in ("file_name", "sha256", "label", "modality", "family", "split") if f not in row]
    if missing:
        raise CorpusError(f"{where}row lacks {', '.join(missing)}")
    if not isinstance(row["file_name"], str):
        raise CorpusError(f"{where}file_name must be a string")
    if row["label"] not in ("real", "synthetic"):
        raise CorpusError(f"{where}label must be real or synthetic; got {row['label']!r}")
    if row["modality"] not in ("image", "video"):
        raise CorpusError(f"{where}modality must be image or video; got {row['modality']!r}")
    if not isinstance(row["sha256"], str) or len(row["sha256"]) != 64:
        raise CorpusError(f"{where}sha256 is not a 64-hex digest")
    if not isinstance(row["split"], str) or not isinstance(row["family"], str):
        raise CorpusError(f"{where}split and family must be strings")
    return row


def _read_rows(path: Path, *, strict: bool = True) -> tuple[list[dict], int]:
    """Rows of metadata.jsonl and the byte length of its complete lines (a torn tail is left out)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    rows = []
    for n, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        if len(line) > MAX_ROW_BYTES:
            raise CorpusError(f"{path.name} line {n} is over {MAX_ROW_BYTES} bytes", path.parent)
        try:
            row = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise CorpusError(f"{path.name} line {n} is not valid JSON", path.parent) from None
        rows.append(validate_row(row, f"{path.name} line {n}: ") if strict else row)
    return rows, end


class CorpusWriter:
    """Atomic, resumable writer. Use as a context manager; `close()` writes corpus.json."""

    def __init__(self, root: str | os.PathLike, *, name: str | None = None,
                 recipe: Any = None, real_sources: Iterable[str] = (), shard: tuple[int, int] | None = None):
        """`shard=(i, n)`: one of n concurrent writers; its rows go to shards/ until `merge_shards`."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard = shard if shard and shard[1] > 1 else None
        tag = f"-{self.shard[0]}-of-{self.shard[1]}" if self.shard else ""
        self._lock = open(self.root / f".lock{tag}", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise CorpusError("another process is writing this corpus", self.root) from None
        rows_path = self.root / ROWS
        if self.shard:
            (self.root / "shards").mkdir(exist_ok=True)
            merged, _ = _read_rows(rows_path)
            rows_path = self.root / "shards" / f"metadata{tag}.jsonl"
        self.rows, end = _read_rows(rows_path)
        if rows_path.exists() and rows_path.stat().st_size != end:
            with open(rows_path, "r+b") as fh:  # cut the torn line a kill left behind
                fh.truncate(end)
        self.index = {r["file_name"]: r for r in self.rows}
        if not self.shard:  # temp files a killed writer left behind (shards may be writing theirs)
            for stale in self.root.rglob(".tmp-*"):
                if stale.is_file():
                    stale.unlink()
        if self.shard:  # items already merged count as done
            self.index.update({r["file_name"]: r for r in merged})
        old = self._old_card()
        self.card = {
            "name": name or old.get("name") or self.root.name,
            "created": old.get("created") or _now(),
            "tool": "forensics", "tool_version": __version__,
            "recipe": recipe if recipe is not None else old.get("recipe"),
            "real_sources": sorted(set(old.get("real_sources", [])) | set(real_sources)),
        }
        self._fh = open(rows_path, "a", encoding="utf-8")

    def _old_card(self) -> dict:
        try:
            return json.loads((self.root / CARD).read_text())
        except (OSError, ValueError):
            return {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def has(self, file_name: str) -> bool:
        return file_name in self.index and safe_path(self.root, file_name).is_file()

    def add_image(self, file_name: str, rgb: np.ndarray, **row) -> dict:
        p = safe_path(self.root, file_name)
        media.write_png(p, rgb)
        return self._append(file_name, p, modality="image", width=int(rgb.shape[1]),
                            height=int(rgb.shape[0]), frames=1, fps=None, **row)

    def add_clip(self, file_name: str, frames: np.ndarray, fps: float, **row) -> dict:
        p = safe_path(self.root, file_name)
        media.write_mp4(p, frames, fps=fps)
        return self._append(file_name, p, modality="video", width=int(frames.shape[2]),
                            height=int(frames.shape[1]), frames=int(frames.shape[0]), fps=float(fps), **row)

    def add_file(self, file_name: str, src: str | os.PathLike, **row) -> dict:
        """Add an already-written file (it is renamed into place)."""
        p = safe_path(self.root, file_name)
        p.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, p)
        return self._append(file_name, p, **row)

    def _append(self, file_name: str, path: Path, **fields) -> dict:
        row = {k: None for k in ROW_FIELDS}
        row.update(fields)
        row["file_name"] = file_name
        row["sha256"] = sha256_file(path)
        validate_row(row)
        if file_name in self.index:  # a rewrite of the same item (same seed) replaces nothing
            return self.index[file_name]
        self._fh.write(json.dumps(row, sort_keys=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.append(row)
        self.index[file_name] = row
        return row

    def close(self) -> dict:
        if self._fh.closed:
            return self.card
        self._fh.close()
        if self.shard:  # the merge writes the card
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            return self.card
        self.card["counts"] = counts(self.rows)
        self.card["updated"] = _now()
        media.atomic_write_bytes(self.root / CARD, (json.dumps(self.card, indent=2) + "\n").encode())
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        return self.card


def merge_shards(root: str | os.PathLike) -> dict:
    """Fold shards/metadata-*.jsonl into metadata.jsonl (no duplicates) and rewrite the card."""
    root = Path(root)
    shard_files = sorted((root / "shards").glob("metadata-*.jsonl")) if (root / "shards").is_dir() else []
    added = 0
    with CorpusWriter(root) as w:
        for f in shard_files:
            rows, _ = _read_rows(f)
            for r in rows:
                if r["file_name"] not in w.index and safe_path(root, r["file_name"]).is_file():
                    w._fh.write(json.dumps(r) + "\n")
                    w.rows.append(r)
                    w.index[r["file_name"]] = r
                    added += 1
        w._fh.flush()
        os.fsync(w._fh.fileno())
    for f in shard_files:
        f.unlink()
    return {"merged_shards": len(shard_files), "rows_added": added, "total_rows": len(w.rows)}


def counts(rows: list[dict]) -> dict:
    return {
        "total": len(rows),
        "label": dict(Counter(r["label"] for r in rows)),
        "split": dict(Counter(r["split"] for r in rows)),
        "architecture": dict(Counter(r.get("architecture") or r["family"] for r in rows)),
        "modality": dict(Counter(r["modality"] for r in rows)),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Corpus:
    """A corpus on disk, read and validated."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CorpusError("not a corpus folder (no such directory)", self.root)
        if not (self.root / ROWS).is_file():
            raise CorpusError(f"not a corpus folder (no {ROWS})", self.root)
        try:
            card = json.loads((self.root / CARD).read_text()) if (self.root / CARD).exists() else {}
        except (ValueError, UnicodeDecodeError):
            raise CorpusError(f"{CARD} is not valid JSON", self.root) from None
        if not isinstance(card, dict):
            raise CorpusError(f"{CARD} is not a JSON object", self.root)
        self.card = card
        self.rows, _ = _read_rows(self.root / ROWS)

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, row: dict) -> Path:
        return safe_path(self.root, row["file_name"])

    def select(self, *, split: str | None = None, label: str | None = None,
               modality: str | None = None) -> list[dict]:
        return [r for r in self.rows
                if (split is None or r["split"] == split) and (label is None or r["label"] == label)
                and (modality is None or r["modality"] == modality)]

    def load_images(self, rows: list[dict]) -> np.ndarray:
        """(N, H, W, 3) uint8 of image rows (all the same size)."""
        return np.stack([media.read_image(self.path(r)) for r in rows])

    def iter_frames(self, rows: list[dict]) -> Iterator[tuple[dict, np.ndarray]]:
        for r in rows:
            if r["modality"] == "image":
                yield r, media.read_image(self.path(r))[None]
            else:
                yield r, media.read_video(self.path(r))[0]


def verify(root: str | os.PathLike) -> dict:
    """Check every row: path safety, file presence, sha256, duplicates; list orphan files."""
    root = Path(root)
    c = Corpus(root)
    seen: set[str] = set()
    problems: list[str] = []
    for r in c.rows:
        fn = r["file_name"]
        if fn in seen:
            problems.append(f"{fn}: duplicate row")
            continue
        seen.add(fn)
        try:
            p = c.path(r)
        except CorpusError as exc:
            problems.append(str(exc))
            continue
        if not p.is_file():
            problems.append(f"{fn}: file missing")
        elif sha256_file(p) != r["sha256"]:
            problems.append(f"{fn}: sha256 mismatch")
    listed = {str((root / fn)) for fn in seen}
    orphans = [str(f.relative_to(root)) for f in media.iter_media_files(root) if str(f) not in listed]
    return {"path": str(root), "ok": not problems, "rows": len(c.rows), "problems": problems,
            "orphans": orphans, "counts": counts(c.rows)}
