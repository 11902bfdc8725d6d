"""Provenance (C2PA) and audit: keys, sign/verify round trips, trust, tampering, soft binding,
bad input. Keys live in tmp folders only; nothing is written to the user's config folder."""

from __future__ import annotations

import json
import os
import stat
import struct

import cv2
import numpy as np
import pytest

import cli
from forensics import media
from forensics.provenance import keys as pkeys
from forensics.provenance import softbinding
from forensics.provenance.sign import sign_file, sign_pixels
from forensics.provenance.verify import verify_file

from conftest import run_cli

SOFT = softbinding.unavailable() is None
WM = [] if SOFT else ["--no-watermark"]


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def kdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys") / "k"
    pkeys.init_keys(d)
    return d


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign") / "k"
    pkeys.init_keys(d, common_name="someone else")
    return d


@pytest.fixture(scope="module")
def src(tmp_path_factory, photo):
    d = tmp_path_factory.mktemp("src")
    im = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
    media.write_png(d / "in.png", im)
    media.write_jpeg(d / "in.jpg", im, quality=92)
    cv2.imwrite(str(d / "in.webp"), im[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 90])
    media.write_mp4(d / "in.mp4", np.stack([np.roll(im, i, axis=1) for i in range(8)]), fps=8)
    return d


def _main(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _codes(r: dict) -> set[str]:
    return {s["code"] for s in r["status"]}


# ---------------------------------------------------------------------------------------------


def test_init_makes_private_files(tmp_path, capsys):
    d = tmp_path / "keys"
    rc, out, _ = _main(capsys, "provenance", "init", "--dir", d, "--json")
    assert rc == 0 and json.loads(out)["created"] is True
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}
    for name in ("ca.pem", "ca.key", "signer.pem", "signer.key"):
        assert files[name] == 0o600, (name, oct(files[name]))
    assert all(m == 0o600 for m in files.values()), files
    # a second init keeps the keys
    rc, out, _ = _main(capsys, "provenance", "init", "--dir", d, "--json")
    assert rc == 0 and json.loads(out)["created"] is False
    # the default folder is $XDG_CONFIG_HOME/forensics
    assert pkeys.config_dir() == tmp_path / "xdg" / "forensics"
    # private keys never go inside the source tree
    if (cli.Path(cli.__file__).parent / ".git").exists():
        rc, _, err = _main(capsys, "provenance", "init", "--dir", cli.Path(cli.__file__).parent / "keys-here")
        assert rc == 2 and "source tree" in err
        assert not (cli.Path(cli.__file__).parent / "keys-here").exists()


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "mp4"])
def test_sign_verify_round_trip(ext, src, kdir, foreign, tmp_path, capsys):
    out = tmp_path / f"signed.{ext}"
    rc, o, err = _main(capsys, "provenance", "sign", src / f"in.{ext}", out, "--keys", kdir, "--arch", "ddpm",
                       "--checkpoint-sha256", "ab" * 32, "--json", *WM)
    assert rc == 0, err
    signed = json.loads(o)
    assert signed["action"] == "created" and signed["manifest_id"].startswith("urn:")
    # trusted with our CA as anchor (the key folder's default)
    rc, o, _ = _main(capsys, "provenance", "verify", out, "--keys", kdir, "--json")
    r = json.loads(o)
    assert rc == 0 and r["state"] == "trusted" and r["c2pa_state"] == "Trusted"
    assert r["manifest_id"] == signed["manifest_id"]
    assert r["signer"]["common_name"] == "forensics local signer"
    assert r["digital_source_type_short"] == "trainedAlgorithmicMedia"
    assert r["actions"][0]["action"] == "c2pa.created"
    assert r["actions"][0]["softwareAgent"]["org.forensics.checkpoint_sha256"] == "ab" * 32
    assert r["generator"]["architecture"] == "ddpm"
    assert "signingCredential.trusted" in _codes(r) and not r["failures"]
    assert all(s["meaning"] for s in r["status"])
    # valid but untrusted without anchors, and with a foreign CA as the only anchor
    for anchors in ("none", foreign / "ca.pem"):
        r = verify_file(out, keys_dir=kdir, anchors=anchors)
        assert r["state"] == "valid" and r["c2pa_state"] == "Valid"
        assert "signingCredential.untrusted" in _codes(r)
    # the corpus row's sha256 is the signed file's
    assert signed["sha256"] == media_sha(out)


def media_sha(p) -> str:
    from forensics.corpus import sha256_file

    return sha256_file(p)


def test_edited_has_parent_ingredient(src, kdir, tmp_path):
    first = sign_file(src / "in.png", tmp_path / "a.png", keys_dir=kdir, architecture="vae", watermark=SOFT)
    second = sign_file(tmp_path / "a.png", tmp_path / "b.png", keys_dir=kdir, watermark=False)
    r = verify_file(tmp_path / "b.png", keys_dir=kdir)
    assert second["action"] == "edited" and r["state"] == "trusted"
    assert [a["action"] for a in r["actions"]][:2] == ["c2pa.opened", "c2pa.edited"]
    (ing,) = r["ingredients"]
    assert ing["relationship"] == "parentOf" and ing["manifest_id"] == first["manifest_id"]
    assert r["digital_source_type"] is None


def test_foreign_certificate_is_untrusted(src, kdir, foreign, tmp_path):
    out = tmp_path / "f.jpg"
    sign_file(src / "in.jpg", out, keys_dir=foreign, architecture="gan", watermark=False)
    r = verify_file(out, keys_dir=kdir)  # our anchors
    assert r["state"] == "valid" and r["signer"]["common_name"] == "someone else"
    assert "signingCredential.untrusted" in _codes(r)
    assert verify_file(out, keys_dir=foreign)["state"] == "trusted"


def _png_replace_pixels(signed: bytes, other_png: bytes) -> bytes:
    """Swap the IDAT chunks of `signed` for those of `other_png` (valid CRCs: a clean pixel edit)."""
    def chunks(b):
        i, out = 8, []
        while i < len(b):
            n = struct.unpack(">I", b[i:i + 4])[0]
            out.append((b[i + 4:i + 8], b[i:i + 12 + n]))
            i += 12 + n
        return out
    new_idat = b"".join(c for t, c in chunks(other_png) if t == b"IDAT")
    out, done = [signed[:8]], False
    for t, c in chunks(signed):
        if t == b"IDAT":
            if not done:
                out.append(new_idat)
                done = True
            continue
        out.append(c)
    return b"".join(out)


def test_tampering_is_invalid(src, kdir, tmp_path, capsys):
    # JPEG: one byte of the entropy-coded scan flipped → data hash mismatch
    out = tmp_path / "s.jpg"
    sign_file(src / "in.jpg", out, keys_dir=kdir, architecture="ddpm", watermark=False)
    d = bytearray(out.read_bytes())
    d[-40] ^= 0x10
    (tmp_path / "flip.jpg").write_bytes(d)
    rc, o, _ = _main(capsys, "provenance", "verify", tmp_path / "flip.jpg", "--keys", kdir, "--json")
    r = json.loads(o)
    assert rc == 0 and r["state"] == "invalid" and "assertion.dataHash.mismatch" in r["failures"]
    # PNG: pixels changed (IDAT replaced, CRCs valid) → data hash mismatch; the file still decodes
    out = tmp_path / "s.png"
    sign_file(src / "in.png", out, keys_dir=kdir, architecture="ddpm", watermark=False)
    im = media.read_image(src / "in.png").copy()
    im[10:20, 10:20] = 255
    other = media.write_png(tmp_path / "other.png", im).read_bytes()
    (tmp_path / "pix.png").write_bytes(_png_replace_pixels(out.read_bytes(), other))
    r = verify_file(tmp_path / "pix.png", keys_dir=kdir, soft_binding=False)
    assert r["state"] == "invalid" and "assertion.dataHash.mismatch" in r["failures"] and not r["media_error"]
    # an assertion's content changed inside the manifest → hashed URI mismatch
    b = out.read_bytes()
    i = b.find(b"trainedAlgorithmicMedia")
    (tmp_path / "assert.png").write_bytes(b[:i] + b"X" + b[i + 1:])
    r = verify_file(tmp_path / "assert.png", keys_dir=kdir, soft_binding=False)
    assert r["state"] == "invalid" and "assertion.hashedURI.mismatch" in r["failures"]
    # MP4: a byte of the media data flipped → BMFF hash mismatch
    out = tmp_path / "s.mp4"
    sign_file(src / "in.mp4", out, keys_dir=kdir, architecture="video_diffusion", watermark=False)
    d = bytearray(out.read_bytes())
    d[d.find(b"mdat") + 200] ^= 0x01
    (tmp_path / "flip.mp4").write_bytes(d)
    r = verify_file(tmp_path / "flip.mp4", keys_dir=kdir, soft_binding=False)
    assert r["state"] == "invalid" and "assertion.bmffHash.mismatch" in r["failures"]


def test_malformed_manifest_and_bad_input_exit_2(src, kdir, tmp_path, capsys):
    out = tmp_path / "s.jpg"
    sign_file(src / "in.jpg", out, keys_dir=kdir, architecture="ddpm", watermark=False)
    b = out.read_bytes()
    i = b.find(b"jumb")
    (tmp_path / "malformed.jpg").write_bytes(b[:i] + b"Jumb" + b[i + 4:])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    (tmp_path / "trunc.png").write_bytes((src / "in.png").read_bytes()[:400])
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("malformed.jpg", "garbage.png", "trunc.png", "text.jpg", "missing.png"):
        rc, o, err = _main(capsys, "provenance", "verify", tmp_path / name, "--keys", kdir)
        assert rc == 2 and o == "" and len(err.strip().splitlines()) == 1, (name, err)
    rc, _, err = _main(capsys, "provenance", "verify", tmp_path / "malformed.jpg", "--keys", kdir)
    assert "malformed C2PA manifest" in err
    # signing: garbage input, a format C2PA signing here does not cover, no keys, bad extension
    media.write_png(tmp_path / "x.png", np.zeros((40, 40, 3), np.uint8))
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "x.bmp")
    cases = [(tmp_path / "garbage.png", tmp_path / "o.png", ["--keys", kdir]),
             (tmp_path / "x.bmp", tmp_path / "o.png", ["--keys", kdir]),
             (tmp_path / "x.png", tmp_path / "o.png", ["--keys", tmp_path / "nokeys"]),
             (tmp_path / "x.png", tmp_path / "o.gif", ["--keys", kdir])]
    for i, o_, extra in cases:
        rc, _, err = _main(capsys, "provenance", "sign", i, o_, *extra)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
    # one real subprocess: exit 2, one line, no traceback
    p = run_cli("provenance", "verify", tmp_path / "garbage.png", "--keys", kdir)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_expired_certificate_is_refused(src, tmp_path, capsys):
    import datetime as dt

    d = tmp_path / "old"
    pkeys.init_keys(d, signer_days=1, now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30))
    rc, _, err = _main(capsys, "provenance", "sign", src / "in.png", tmp_path / "o.png", "--keys", d, *WM)
    assert rc == 2 and "expired" in err and not (tmp_path / "o.png").exists()


@pytest.mark.skipif(not SOFT, reason="the post-hoc watermark module is not installed")
def test_soft_binding_recovers_stripped_copy(tmp_path, capsys):
    from skimage import data

    from forensics.watermark import posthoc

    kdir = tmp_path / "k"  # a fixed watermark key, so the test is reproducible
    posthoc.save_key(posthoc.WatermarkKey(bytes(range(32))), kdir / "watermark.key")
    pkeys.init_keys(kdir)
    im = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    media.write_png(tmp_path / "in.png", im)
    signed = sign_file(tmp_path / "in.png", tmp_path / "s.png", keys_dir=kdir, architecture="ddpm",
                       checkpoint_sha256="cd" * 32)
    assert signed["soft_binding"]["alg"].startswith("org.forensics.") and signed["soft_binding"]["readable"]
    r = verify_file(tmp_path / "s.png", keys_dir=kdir)
    assert r["soft_binding"]["binding_id"] == signed["soft_binding"]["binding_id"] and r["recovered"] is None
    # strip the metadata by re-encoding through OpenCV (JPEG 90 and PNG)
    x = cv2.imread(str(tmp_path / "s.png"))
    cv2.imwrite(str(tmp_path / "copy.jpg"), x, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(tmp_path / "copy.png"), x)
    for name in ("copy.png", "copy.jpg"):
        rc, o, _ = _main(capsys, "provenance", "verify", tmp_path / name, "--keys", kdir, "--json")
        r = json.loads(o)
        assert rc == 0 and r["state"] == "no_manifest", name
        rec = r["recovered"]
        assert rec and rec["via"] == "watermark" and rec["manifest_id"] == signed["manifest_id"], (name, r["summary"])
        assert rec["signature"] == "trusted" and rec["binding_matches"] and not rec["asset_matches"]
        assert rec["digital_source_type_short"] == "trainedAlgorithmicMedia"
        assert "RECOVERED through the watermark" in r["summary"]
    # an unmarked image recovers nothing
    r = verify_file(tmp_path / "in.png", keys_dir=kdir)
    assert r["recovered"] is None and r["state"] == "no_manifest"


def test_sign_pixels_for_generate(tmp_path, kdir):
    """`generate --sign`'s path: the row's sha256 is the signed file's and names the manifest."""
    from forensics.corpus import CorpusWriter, verify
    from forensics.generate import _add_signed

    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    row = dict(label="synthetic", family="vae", architecture="vae", sampler=None, steps=None, seed=3,
               checkpoint_sha256="ef" * 32, source="bank:vae", split="train")
    keys = pkeys.load_keys(kdir)
    with CorpusWriter(tmp_path / "c") as w:
        r = _add_signed(w, "images/vae/00000003.png", img, row, keys, None)
    assert r["c2pa"]["manifest_id"].startswith("urn:") and r["c2pa"]["signer"] == "forensics local signer"
    assert verify(tmp_path / "c")["ok"]
    v = verify_file(tmp_path / "c" / r["file_name"], keys_dir=kdir)
    assert v["state"] == "trusted" and v["manifest_id"] == r["c2pa"]["manifest_id"]
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp")]
    out = sign_pixels(np.stack([img] * 4), tmp_path / "clip.mp4", keys=keys, architecture="video_diffusion",
                      fps=8.0, watermark=SOFT)
    assert verify_file(out["path"], keys_dir=kdir)["state"] == "trusted"


def test_audit_folder(src, kdir, tmp_path, capsys):
    d = tmp_path / "media"
    d.mkdir()
    sign_file(src / "in.png", d / "signed.png", keys_dir=kdir, architecture="ddpm", watermark=SOFT)
    media.write_png(d / "plain.png", media.read_image(src / "in.png"))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    rc, o, err = _main(capsys, "audit", d, "--keys", kdir, "--json", "--report", tmp_path / "rep")
    rows = [json.loads(line) for line in o.splitlines()]
    summary = rows.pop()["summary"]
    assert rc == 2 and len(rows) == 3  # the bad file is reported and the audit goes on
    assert summary == {"files": 3, "audited": 2, "failed": 1}
    by = {os.path.basename(r["path"]): r for r in rows}
    assert "error" in by["broken.jpg"]
    s = by["signed.png"]
    assert s["summary"]["verdict"] == "synthetic" and s["provenance"]["state"] == "trusted"
    assert "detectors" in s and s["watermark"]["posthoc"] is not None
    if not s["detectors"]["ran"]:
        assert s["detectors"]["reason"]  # says why (no detector installed)
    p = by["plain.png"]
    assert p["provenance"]["state"] == "no_manifest" and p["summary"]["verdict"] in ("unknown", "real",
                                                                                      "synthetic", "uncertain")
    html = (tmp_path / "rep" / "audit.html").read_text()
    assert html.count("<tr") == 4 and "signed.png" in html
    # one file, human output
    rc, o, _ = _main(capsys, "audit", d / "signed.png", "--keys", kdir)
    assert rc == 0 and "synthetic" in o


# --- soft binding: known-payload recovery, double marks, the store ----------------------------


@pytest.fixture(scope="module")
def soft_keys(tmp_path_factory):
    """A key folder with a fixed watermark key, so these tests are reproducible."""
    from forensics.watermark import posthoc

    d = tmp_path_factory.mktemp("softkeys") / "k"
    posthoc.save_key(posthoc.WatermarkKey(bytes(range(32))), d / "watermark.key")
    pkeys.init_keys(d)
    return d


def _crop128(y: int, x: int) -> np.ndarray:
    from forensics import realdata

    return np.ascontiguousarray(realdata._load_source("skimage:coffee")[y:y + 128, x:x + 128])


@pytest.mark.skipif(not SOFT, reason="the post-hoc watermark module is not installed")
def test_soft_binding_known_payload_test_after_jpeg75(soft_keys, tmp_path):
    im = _crop128(150, 200)
    media.write_png(tmp_path / "in.png", im)
    signed = sign_file(tmp_path / "in.png", tmp_path / "s.png", keys_dir=soft_keys, architecture="ddpm")
    sb = signed["soft_binding"]
    assert sb["mode"] == "embedded" and sb["readable"]
    from forensics.watermark import posthoc

    assert posthoc.psnr(im, media.read_image(tmp_path / "s.png")) >= 40.0
    cv2.imwrite(str(tmp_path / "copy.jpg"), cv2.imread(str(tmp_path / "s.png")), [cv2.IMWRITE_JPEG_QUALITY, 75])
    r = verify_file(tmp_path / "copy.jpg", keys_dir=soft_keys)
    assert r["state"] == "no_manifest" and r["recovered"]["manifest_id"] == signed["manifest_id"], r["summary"]
    # the store-informed path alone: as if the watermark's own decoding had found nothing
    none = {"method": "posthoc", "detected": False, "payload": None, "p_value": 1.0}
    r = verify_file(tmp_path / "copy.jpg", keys_dir=soft_keys, watermark_result=none)
    rec = r["recovered"]
    assert rec and rec["manifest_id"] == signed["manifest_id"] and rec["binding_read"] == "known-payload test"
    assert rec["signature"] == "trusted" and rec["binding_p_value"] <= softbinding.MATCH_THRESHOLD
    assert rec["phash_distance"] <= 8 and "known-payload test" in r["summary"]
    from forensics import audit

    s = audit.summarize(r, {"posthoc": {"ran": True, **none}}, {"ran": False, "reason": "no detector"})
    assert s["verdict"] == "synthetic" and any("known-payload test" in x for x in s["reasons"])
    # the same content never marked: its perceptual hash finds the row, the test rejects it
    cv2.imwrite(str(tmp_path / "plain.jpg"), im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    r = verify_file(tmp_path / "plain.jpg", keys_dir=soft_keys)
    assert r["recovered"] is None and r["soft_binding_check"]["match"]["candidates"] >= 1
    assert r["soft_binding_check"]["match"]["p_value"] > softbinding.MATCH_THRESHOLD
    assert "known-payload test" in r["soft_binding_check"]["reason"]


@pytest.mark.skipif(not SOFT, reason="the post-hoc watermark module is not installed")
def test_known_payload_test_null_on_unmarked_crops():
    """Unmarked real crops (JPEG 75) against 16 random ids each: nothing clears the threshold."""
    from forensics import attacks, realdata
    from forensics.watermark import posthoc

    key = posthoc.WatermarkKey(bytes(range(32)))
    rng = np.random.default_rng(7)
    rs = realdata.default_crops(per_source=3, size=64, seed=11)
    zs = []
    for im in rs.images:
        m = posthoc.match(attacks.jpeg(im, 75), key, [rng.bytes(4) for _ in range(16)],
                          threshold=softbinding.MATCH_THRESHOLD)
        assert not m.detected and m.payload is None
        zs.append(m.statistic)
    assert max(zs) < 5.0 and float(np.mean(zs)) < 3.0  # each Z is the best of 16 ids × 4 readings


@pytest.mark.skipif(not SOFT, reason="the post-hoc watermark module is not installed")
def test_signing_a_marked_image_binds_to_the_existing_mark(soft_keys, tmp_path):
    from forensics.provenance.store import ManifestStore
    from forensics.watermark import posthoc

    key = softbinding.load_key(soft_keys)
    marked = posthoc.embed(_crop128(20, 300), key, bytes.fromhex("c0ffee42"))  # as `generate --watermark posthoc`
    media.write_png(tmp_path / "marked.png", marked)
    first = sign_file(tmp_path / "marked.png", tmp_path / "s1.png", keys_dir=soft_keys, architecture="ddpm")
    sb = first["soft_binding"]
    assert sb["mode"] == "reused" and sb["binding_id"] == "c0ffee42" and sb["readable"]
    assert sb["existing"]["read"] == "decoded"
    assert np.array_equal(media.read_image(tmp_path / "s1.png"), marked)  # no second mark
    r = verify_file(tmp_path / "s1.png", keys_dir=soft_keys)
    assert r["state"] == "trusted" and r["soft_binding"]["binding_id"] == "c0ffee42"
    assert "no second mark" in r["soft_binding"]["description"]
    assert "c2pa.watermarked" not in [a["action"] for a in r["actions"]]
    # signing the signed file again (edited): the same id, a second manifest bound to it
    second = sign_file(tmp_path / "s1.png", tmp_path / "s2.png", keys_dir=soft_keys)
    assert second["soft_binding"]["mode"] == "reused" and second["soft_binding"]["binding_id"] == "c0ffee42"
    with ManifestStore(pkeys.load_keys(soft_keys).store_path) as st:
        rows = st.rows_for("c0ffee42")
    assert [x["manifest_label"] for x in rows] == [second["manifest_id"], first["manifest_id"]]
    assert {x["binding"] for x in rows} == {"reused"} and all(x["phash"] for x in rows)
    # a stripped copy recovers the newest manifest bound to that id
    cv2.imwrite(str(tmp_path / "copy.png"), cv2.imread(str(tmp_path / "s2.png")))
    rec = verify_file(tmp_path / "copy.png", keys_dir=soft_keys)["recovered"]
    assert rec["manifest_id"] == second["manifest_id"] and rec["manifests_for_id"] == 2
    assert rec["binding"] == "reused" and rec["binding_matches"] and rec["signature"] == "trusted"
    # a mark under another key is not ours: signing embeds our own id (and says so)
    other = posthoc.embed(_crop128(20, 300), posthoc.WatermarkKey(bytes(range(1, 33))), bytes.fromhex("c0ffee42"))
    media.write_png(tmp_path / "other.png", other)
    third = sign_file(tmp_path / "other.png", tmp_path / "s3.png", keys_dir=soft_keys, architecture="ddpm")
    assert third["soft_binding"]["mode"] == "embedded" and third["soft_binding"]["binding_id"] != "c0ffee42"
    r = verify_file(tmp_path / "s3.png", keys_dir=soft_keys)
    assert "c2pa.watermarked" in [a["action"] for a in r["actions"]]
    assert r["soft_binding"]["description"].endswith("embedded by this signing")


def test_store_migrates_version_1(tmp_path):
    import sqlite3

    from forensics.errors import ProvenanceError
    from forensics.provenance.store import ManifestStore

    path = tmp_path / "manifests.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE manifests (binding_id TEXT PRIMARY KEY, manifest_label TEXT NOT NULL,
        algorithm TEXT NOT NULL, asset_sha256 TEXT NOT NULL, format TEXT NOT NULL, signer TEXT,
        created TEXT NOT NULL, path TEXT, manifest BLOB NOT NULL);
        CREATE INDEX manifests_by_asset ON manifests(asset_sha256);
        CREATE INDEX manifests_by_label ON manifests(manifest_label);""")
    db.execute("INSERT INTO manifests VALUES ('0000abcd', 'urn:c2pa:1', 'alg', 'ff', 'image/png', 's', "
               "'2026-01-01T00:00:00+00:00', NULL, x'00')")
    db.commit()
    db.close()
    with ManifestStore(path) as st:
        (row,) = st.rows_for("0000ABCD")
        assert row["manifest_label"] == "urn:c2pa:1" and row["binding"] == "embedded" and row["phash"] is None
        assert st.by_asset("ff")["binding_id"] == "0000abcd" and len(st) == 1
        common = dict(manifest_label="urn:c2pa:2", algorithm="alg", asset_sha256="ee", format="image/png",
                      manifest=b"\x01", phash="00000000000000ff")
        st.add(binding_id="0000abcd", binding="reused", **common)  # an id may be shared by reused rows
        with pytest.raises(ProvenanceError):  # but a minted id is minted once
            st.add(binding_id="0000abcd", **common)
        assert [r["manifest_label"] for r in st.nearest("00000000000000fe", 5)] == ["urn:c2pa:2"]
    with ManifestStore(path, create=False) as st:  # reopening keeps the migrated table
        assert len(st) == 2 and st.get("0000abcd")["manifest_label"] == "urn:c2pa:2"
