"""The local manifest store for soft binding (SQLite, one file in the key folder).

Durable content credentials (C2PA 2.x §"Soft bindings"): a manifest is found again from the
content itself when its embedded copy is gone. Signing writes one row per signed asset:

    binding_id     the id the invisible watermark carries (hex), primary key
    manifest_label the manifest's URN (`urn:c2pa:…`)
    algorithm      the soft-binding algorithm named in the manifest's `c2pa.soft-binding`
    asset_sha256   the sha256 of the signed file as written
    manifest       the signed manifest store (JUMBF bytes), re-verifiable on its own

Lookups are by binding id (from a watermark) or by asset hash.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import sqlite3
from pathlib import Path

from ..errors import ProvenanceError

SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    binding_id     TEXT PRIMARY KEY,
    manifest_label TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    asset_sha256   TEXT NOT NULL,
    format         TEXT NOT NULL,
    signer         TEXT,
    created        TEXT NOT NULL,
    path           TEXT,
    manifest       BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS manifests_by_asset ON manifests(asset_sha256);
CREATE INDEX IF NOT EXISTS manifests_by_label ON manifests(manifest_label);
"""
FIELDS = ("binding_id", "manifest_label", "algorithm", "asset_sha256", "format", "signer", "created", "path")


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
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ProvenanceError(f"{self.path} is not a usable manifest store ({exc})") from None

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
            format: str, manifest: bytes, signer: str | None = None, path: str | None = None) -> dict:
        row = dict(binding_id=binding_id, manifest_label=manifest_label, algorithm=algorithm,
                   asset_sha256=asset_sha256, format=format, signer=signer,
                   created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), path=path)
        try:
            with self.db:
                self.db.execute(
                    f"INSERT INTO manifests ({', '.join(FIELDS)}, manifest) VALUES ({', '.join('?' * (len(FIELDS) + 1))})",
                    [row[f] for f in FIELDS] + [sqlite3.Binary(manifest)])
        except sqlite3.IntegrityError:
            raise ProvenanceError(f"binding id {binding_id} is already in the manifest store {self.path}") from None
        return row

    def _one(self, where: str, value: str) -> dict | None:
        cur = self.db.execute(f"SELECT {', '.join(FIELDS)}, manifest FROM manifests WHERE {where} = ? "
                              "ORDER BY created DESC LIMIT 1", (value,))
        r = cur.fetchone()
        if r is None:
            return None
        d = dict(zip(FIELDS, r[:-1]))
        d["manifest"] = bytes(r[-1])
        return d

    def get(self, binding_id: str) -> dict | None:
        return self._one("binding_id", binding_id.lower())

    def by_asset(self, sha256: str) -> dict | None:
        return self._one("asset_sha256", sha256.lower())

    def by_label(self, label: str) -> dict | None:
        return self._one("manifest_label", label)

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM manifests").fetchone()[0])
