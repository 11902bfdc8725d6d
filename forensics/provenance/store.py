"""The local manifest store for soft binding (SQLite, one file in the key folder).

Durable content credentials (C2PA 2.x §"Soft bindings"): a manifest is found again from the
content itself when its embedded copy is gone. Signing writes one row per signed asset:

    binding_id     the id the invisible watermark carries (hex)
    binding        "embedded": signing minted the id and watermarked it (unique among these rows);
                   "reused": the asset already carried our watermark, so the manifest is bound to
                   the id it carries (several manifests may then share an id)
    manifest_label the manifest's URN (`urn:c2pa:…`)
    algorithm      the soft-binding algorithm named in the manifest's `c2pa.soft-binding`
    asset_sha256   the sha256 of the signed file as written
    phash          a 64-bit DCT perceptual hash of the signed pixels (hex): ranks candidates for
                   the watermark's known-payload test and tells apart manifests sharing an id
    manifest       the signed manifest store (JUMBF bytes), re-verifiable on its own

Lookups are by binding id (from a watermark), by asset hash, by label, or by perceptual hash.
Version 1 stores (binding_id as primary key, no phash) are migrated in place on first open.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import sqlite3
from pathlib import Path

from ..errors import ProvenanceError

VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    binding_id     TEXT NOT NULL,
    binding        TEXT NOT NULL DEFAULT 'embedded',
    manifest_label TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    asset_sha256   TEXT NOT NULL,
    format         TEXT NOT NULL,
    signer         TEXT,
    created        TEXT NOT NULL,
    path           TEXT,
    phash          TEXT,
    manifest       BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS manifests_minted ON manifests(binding_id) WHERE binding = 'embedded';
CREATE INDEX IF NOT EXISTS manifests_by_id ON manifests(binding_id);
CREATE INDEX IF NOT EXISTS manifests_by_asset ON manifests(asset_sha256);
CREATE INDEX IF NOT EXISTS manifests_by_label ON manifests(manifest_label);
"""
FIELDS = ("binding_id", "binding", "manifest_label", "algorithm", "asset_sha256", "format", "signer", "created",
          "path", "phash")
V1_FIELDS = ("binding_id", "manifest_label", "algorithm", "asset_sha256", "format", "signer", "created", "path")
BINDINGS = ("embedded", "reused")


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


class ManifestStore:
    """A small wrapper over the SQLite file; safe for several processes (SQLite locking)."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ProvenanceError(f"no manifest store at {self.path}")
        new = not self.path.exists()
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            os.close(fd)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30.0)
            self._migrate_v1()
            self.db.executescript(SCHEMA)
            if self.db.execute("PRAGMA user_version").fetchone()[0] != VERSION:
                self.db.execute(f"PRAGMA user_version = {VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ProvenanceError(f"{self.path} is not a usable manifest store ({exc})") from None

    def _migrate_v1(self) -> None:
        """Version 1 keyed rows by binding id; one transaction copies them into the new table."""
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(manifests)")}
        if not cols or "seq" in cols:
            return
        db, keep = self.db, ", ".join(V1_FIELDS)
        db.isolation_level = None
        try:
            db.execute("BEGIN IMMEDIATE")
            if "seq" not in {r[1] for r in db.execute("PRAGMA table_info(manifests)")}:  # another process won
                db.execute("ALTER TABLE manifests RENAME TO manifests_v1")
                db.execute("DROP INDEX IF EXISTS manifests_by_asset")
                db.execute("DROP INDEX IF EXISTS manifests_by_label")
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(f"INSERT INTO manifests ({keep}, binding, manifest) "
                           f"SELECT {keep}, 'embedded', manifest FROM manifests_v1 ORDER BY created")
                db.execute("DROP TABLE manifests_v1")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.isolation_level = ""

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def new_binding_id(self, bits: int) -> str:
        """A random id of `bits` bits (hex, zero-padded) that no row uses yet."""
        width = (bits + 3) // 4
        for _ in range(64):
            v = secrets.randbits(bits)
            if v == 0:  # an all-zero payload is what a blank image decodes to; never use it
                continue
            hid = f"{v:0{width}x}"
            if self.get(hid) is None:
                return hid
        raise ProvenanceError(f"manifest store {self.path} has no free {bits}-bit id left")

    def add(self, *, binding_id: str, manifest_label: str, algorithm: str, asset_sha256: str,
            format: str, manifest: bytes, signer: str | None = None, path: str | None = None,
            binding: str = "embedded", phash: str | None = None) -> dict:
        if binding not in BINDINGS:
            raise ProvenanceError(f"binding must be one of {', '.join(BINDINGS)}; got {binding!r}")
        row = dict(binding_id=binding_id.lower(), binding=binding, manifest_label=manifest_label,
                   algorithm=algorithm, asset_sha256=asset_sha256, format=format, signer=signer,
                   created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), path=path,
                   phash=phash)
        try:
            with self.db:
                self.db.execute(
                    f"INSERT INTO manifests ({', '.join(FIELDS)}, manifest) VALUES ({', '.join('?' * (len(FIELDS) + 1))})",
                    [row[f] for f in FIELDS] + [sqlite3.Binary(manifest)])
        except sqlite3.IntegrityError:
            raise ProvenanceError(f"binding id {binding_id} was already minted in the manifest store "
                                  f"{self.path}") from None
        return row

    def _rows(self, where: str, args: tuple, limit: int | None = None) -> list[dict]:
        cur = self.db.execute(f"SELECT {', '.join(FIELDS)}, manifest FROM manifests WHERE {where} "
                              f"ORDER BY seq DESC{f' LIMIT {int(limit)}' if limit else ''}", args)
        out = []
        for r in cur.fetchall():
            d = dict(zip(FIELDS, r[:-1]))
            d["manifest"] = bytes(r[-1])
            out.append(d)
        return out

    def get(self, binding_id: str) -> dict | None:
        """The newest row for this binding id."""
        rows = self._rows("binding_id = ?", (binding_id.lower(),), 1)
        return rows[0] if rows else None

    def rows_for(self, binding_id: str) -> list[dict]:
        """Every row bound to this id, newest first (more than one when an id was reused)."""
        return self._rows("binding_id = ?", (binding_id.lower(),))

    def by_asset(self, sha256: str) -> dict | None:
        rows = self._rows("asset_sha256 = ?", (sha256.lower(),), 1)
        return rows[0] if rows else None

    def by_label(self, label: str) -> dict | None:
        rows = self._rows("manifest_label = ?", (label,), 1)
        return rows[0] if rows else None

    def nearest(self, phash: str, k: int) -> list[dict]:
        """The k rows whose perceptual hash is nearest (Hamming), nearest then newest first, each
        with its `phash_distance`."""
        cur = self.db.execute("SELECT seq, phash FROM manifests WHERE phash IS NOT NULL")
        q = int(phash, 16)
        ranked = sorted(((int(h, 16) ^ q).bit_count(), -seq) for seq, h in cur.fetchall())[:max(0, k)]
        out = []
        for dist, neg in ranked:
            (row,) = self._rows("seq = ?", (-neg,))
            out.append({**row, "phash_distance": dist})
        return out

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM manifests").fetchone()[0])
