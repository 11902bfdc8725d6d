"""`forensics provenance sign`: embed a signed C2PA manifest in a JPEG, PNG, WebP or MP4.

Pipeline for one asset (each step names the C2PA 2.x construct it produces):
1. Decode the input (bad or truncated input → MediaError, exit 2).
2. Soft binding (durable credentials): draw a fresh binding id, embed it with the post-hoc
   invisible watermark, re-encode in the output's format (PNG and WebP losslessly, JPEG at
   quality 95, MP4 as H.264 CRF 18). Without a watermark the input's bytes are signed as they
   are (and the output must then be of the input's format).
   Pixels that already carry our mark under the same key, unmoved (`generate --watermark
   posthoc --sign`, or signing a marked file), are not marked again: two payloads would fight
   over the same chips. The manifest is bound to the id the mark already carries (binding
   "reused"); when that mark is there but its payload no longer decodes, the known-payload
   test against the store (as in verify) names it, and only if that fails is a fresh id
   embedded over it (the informed embedder treats the old mark as part of the host).
3. Manifest: a `c2pa.actions.v2` assertion, either
     - `c2pa.created` with `digitalSourceType` trainedAlgorithmicMedia and the software agent
       = the bank architecture + its checkpoint hash (generator outputs), or
     - `c2pa.opened` + `c2pa.edited` with the input as the `parentOf` ingredient (processed
       media; an input's own manifest travels inside the ingredient),
   then `c2pa.watermarked` when step 2 embedded a mark, a `c2pa.soft-binding` assertion naming
   the watermark algorithm, carrying the binding id and saying in its `name` whether the id
   was embedded now or is the asset's existing mark, and `org.forensics.generator` for bank
   outputs. The hard binding (`c2pa.hash.data` / `c2pa.hash.bmff.v3`) is added by the SDK.
4. Sign (ES256, the key folder's certificate chain) into a temp file, rename it into place.
5. Record the binding id (and whether it was embedded or reused), manifest label, manifest
   bytes, the output's sha256 and its perceptual hash in the manifest store (store.py), so a
   stripped or re-encoded copy finds its manifest again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import __version__, media
from ..errors import MediaError, ProvenanceError, UsageError
from . import keys as _keys
from . import softbinding
from .store import ManifestStore

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
FORMATS = {  # container → (MIME type, default extension)
    "png": ("image/png", ".png"),
    "jpeg": ("image/jpeg", ".jpg"),
    "webp": ("image/webp", ".webp"),
    "mp4": ("video/mp4", ".mp4"),
}
EXT_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".mp4": "mp4", ".m4v": "mp4"}
JPEG_QUALITY = 95
MP4_CRF = 18
MAX_WATERMARK_FRAMES = 3000  # a clip is decoded whole to be watermarked


def sniff_format(path: str | os.PathLike) -> str:
    """The container from the leading bytes ("png", "jpeg", "webp", "mp4"), else MediaError."""
    kind = media.sniff(path)  # exists, non-empty, a known media container
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "mp4"
    raise MediaError(f"C2PA signing here covers JPEG, PNG, WebP and MP4; this {kind} is another format", path)


def output_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    if ext not in EXT_FORMAT:
        raise UsageError(f"output {path}: extension must be one of {', '.join(sorted(EXT_FORMAT))} "
                         f"(it picks the format); got {ext or 'none'!r}")
    return EXT_FORMAT[ext]


def manifest_definition(*, title: str, fmt: str, action: str, architecture: str | None = None,
                        checkpoint_sha256: str | None = None, generator: dict | None = None,
                        binding: dict | None = None) -> dict:
    """The manifest definition handed to the c2pa Builder (see the module docstring, step 3)."""
    tool = {"name": "forensics", "version": __version__}
    if action == "created":
        agent = {"name": f"forensics generator bank: {architecture}", "version": __version__}
        if checkpoint_sha256:
            agent["org.forensics.checkpoint_sha256"] = checkpoint_sha256
        actions = [{"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": agent}]
    elif action == "edited":
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                   {"action": "c2pa.edited", "softwareAgent": tool,
                    "description": "re-encoded and signed by forensics provenance sign"}]
    else:
        raise UsageError(f"action must be created or edited; got {action!r}")
    assertions: list[dict] = []
    if binding:
        reused = binding.get("mode") == "reused"
        if not reused:
            actions.append({"action": "c2pa.watermarked", "softwareAgent": tool,
                            "description": f"invisible watermark {binding['alg']} carrying the soft-binding id"})
        how = ("the asset already carried this watermark (same key) with this id, so no second mark was "
               "embedded and this manifest is bound to the existing one" if reused else
               "embedded by this signing over an earlier mark of the same key whose id no longer decodes"
               if binding.get("existing") else "embedded by this signing")
        assertions.append({"label": "c2pa.soft-binding", "data": {
            "alg": binding["alg"],
            "blocks": [{"scope": {}, "value": base64.b64encode(bytes.fromhex(binding["binding_id"])).decode()}],
            "name": f"forensics post-hoc watermark; the value is the id in the signer's manifest store; {how}",
        }})
    assertions.insert(0, {"label": "c2pa.actions.v2", "data": {"actions": actions}})
    if action == "created":
        gen = {"architecture": architecture, "checkpoint_sha256": checkpoint_sha256}
        gen.update({k: v for k, v in (generator or {}).items() if v is not None})
        assertions.append({"label": "org.forensics.generator", "data": gen})
    return {"claim_generator_info": [tool], "title": title, "format": FORMATS[fmt][0],
            "assertions": assertions}


def _c2pa_context(anchors_pem: str | None = None):
    import c2pa

    # Thumbnails are off: for 32×32 bank outputs the SDK's JPEG thumbnail dwarfs the image.
    # Our CA as trust anchor, so a parent ingredient we signed is recorded as trusted.
    cfg: dict = {"builder": {"thumbnail": {"enabled": False}}}
    if anchors_pem:
        cfg["trust"] = {"user_anchors": anchors_pem}
    return c2pa.Context(c2pa.Settings.from_dict(cfg))


def _encode(pixels: np.ndarray, fmt: str, dst: Path, fps: float | None) -> None:
    """Write decoded pixels (image (H, W, 3) or clip (T, H, W, 3)) in `fmt` to `dst`."""
    if fmt == "mp4":
        if pixels.ndim != 4:
            raise UsageError("an image cannot be signed into an MP4 output; use .png, .jpg or .webp")
        media.write_mp4(dst, pixels, fps=fps or 8.0, crf=MP4_CRF)
        return
    if pixels.ndim != 3:
        raise UsageError("a video can only be signed into an MP4 output; use .mp4")
    if fmt == "png":
        media.write_png(dst, pixels)
    elif fmt == "jpeg":
        media.write_jpeg(dst, pixels, quality=JPEG_QUALITY)
    else:  # WebP, lossless so the watermark is kept exactly
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="WEBP", lossless=True, quality=100, method=4)
        media.atomic_write_bytes(dst, buf.getvalue())


def _decode(src: Path, fmt: str) -> tuple[np.ndarray, float | None]:
    if fmt == "mp4":
        info = media.probe_video(src)
        if info.frames > MAX_WATERMARK_FRAMES:
            raise UsageError(f"the clip has ~{info.frames} frames; watermarking decodes it whole and stops at "
                             f"{MAX_WATERMARK_FRAMES}; sign it with --no-watermark")
        frames, fps = media.read_video(src)
        return frames, fps
    return media.read_image(src), None


def sign_file(src: str | os.PathLike, dst: str | os.PathLike, *, keys: _keys.Keys | None = None,
              keys_dir: str | os.PathLike | None = None, action: str | None = None,
              architecture: str | None = None, checkpoint_sha256: str | None = None,
              generator: dict | None = None, watermark: bool = True, title: str | None = None) -> dict:
    """Sign the file `src` into `dst` (format from dst's extension); return what was signed.

    action: "created" (bank output; needs `architecture`) or "edited" (default without one).
    """
    t0 = time.time()
    src, dst = Path(src), Path(dst)
    k = keys or _keys.load_keys(keys_dir)
    fmt_in = sniff_format(src)
    fmt_out = output_format(dst)
    action = action or ("created" if architecture else "edited")
    if action == "created" and not architecture:
        raise UsageError("signing as created (a bank output) needs --arch (and --checkpoint-sha256)")
    if (fmt_in == "mp4") != (fmt_out == "mp4"):
        raise UsageError(f"cannot sign {fmt_in} input into a {fmt_out} output; keep images as images and "
                         "videos as MP4")
    pixels, fps = _decode(src, fmt_in)  # always decode: refuses garbage and truncated files early
    if not watermark and fmt_in != fmt_out:
        raise UsageError(f"without a watermark the input's bytes are signed as they are, so the output must "
                         f"also be {fmt_in}; got {dst.suffix}")
    return _sign(pixels if watermark else None, src if not watermark else None, dst, fmt_out, fps=fps, keys=k,
                 action=action, parent=src if action == "edited" else None, parent_fmt=fmt_in,
                 architecture=architecture, checkpoint_sha256=checkpoint_sha256, generator=generator,
                 title=title, t0=t0)


def sign_pixels(pixels: np.ndarray, dst: str | os.PathLike, *, keys: _keys.Keys, architecture: str,
                checkpoint_sha256: str | None = None, generator: dict | None = None, fps: float | None = None,
                watermark: bool = True, title: str | None = None,
                record_path: str | os.PathLike | None = None) -> dict:
    """Sign freshly generated pixels ((H, W, 3) image or (T, H, W, 3) clip) as a bank output.

    `forensics generate --sign` calls this per item; dst's extension picks the format.
    """
    t0 = time.time()
    dst = Path(dst)
    fmt = output_format(dst)
    if not watermark:
        tmp = dst.with_name(f".tmp-unsigned-{os.getpid()}-{dst.name}")
        try:
            _encode(pixels, fmt, tmp, fps)
            return _sign(None, tmp, dst, fmt, fps=fps, keys=keys, action="created", architecture=architecture,
                         checkpoint_sha256=checkpoint_sha256, generator=generator, title=title, t0=t0,
                         record_path=record_path)
        finally:
            media._unlink(tmp)
    return _sign(pixels, None, dst, fmt, fps=fps, keys=keys, action="created", architecture=architecture,
                 checkpoint_sha256=checkpoint_sha256, generator=generator, title=title, t0=t0,
                 record_path=record_path)


def _sign(pixels: np.ndarray | None, unsigned: Path | None, dst: Path, fmt: str, *, fps: float | None,
          keys: _keys.Keys, action: str, parent: Path | None = None, parent_fmt: str | None = None,
          architecture: str | None = None, checkpoint_sha256: str | None = None,
          generator: dict | None = None, title: str | None = None, t0: float,
          record_path: str | os.PathLike | None = None) -> dict:
    """Steps 2–5. Exactly one of `pixels` (to watermark) and `unsigned` (bytes to sign as is)."""
    import c2pa

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-sign-", dir=dst.parent)
    staged = Path(tmp_dir) / f"staged{FORMATS[fmt][1]}"
    signed = Path(tmp_dir) / f"signed{FORMATS[fmt][1]}"
    binding = None
    store = ManifestStore(keys.store_path)
    try:
        # 2. soft binding: watermark the binding id into the pixels
        if pixels is not None:
            why_not = softbinding.unavailable()
            if why_not:
                raise ProvenanceError(f"soft binding needs the post-hoc watermark, which is unavailable "
                                      f"({why_not}); sign with --no-watermark")
            wm_key = softbinding.load_key(keys.dir, create=True)
            binding = {"alg": softbinding.algorithm(), **_binding_for(pixels, wm_key, store)}
            if binding["mode"] == "reused":
                marked = pixels
            else:
                binding["binding_id"] = store.new_binding_id(softbinding.payload_bits())
                marked = softbinding.embed(pixels, binding["binding_id"], wm_key)
            bid = binding["binding_id"]
            _encode(marked, fmt, staged, fps)
            unsigned = staged
            # self-check: can the id be read back from the file as written? (not a robustness test)
            back = softbinding.detect(staged, keys.dir)
            readable = bool(back.get("detected")) and back.get("payload") == bid
            if not readable and softbinding.can_match():  # what verify falls back to
                readable = softbinding.match_pixels(softbinding._frames(staged), wm_key, [bid])["detected"]
        # 3. the manifest
        definition = manifest_definition(title=title or dst.name, fmt=fmt, action=action,
                                         architecture=architecture, checkpoint_sha256=checkpoint_sha256,
                                         generator=generator, binding=binding)
        mime = FORMATS[fmt][0]
        try:
            builder = c2pa.Builder(definition, context=_c2pa_context(keys.ca_pem))
            if parent is not None:
                with open(parent, "rb") as fh:
                    builder.add_ingredient({"title": parent.name, "relationship": "parentOf", "label": "parent"},
                                           FORMATS[parent_fmt][0], fh)
            # 4. sign
            with open(unsigned, "rb") as fin, open(signed, "w+b") as fout:
                manifest_bytes = builder.sign(keys.signer(), mime, fin, fout)
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"C2PA signing failed: {_reason(exc)}", dst) from None
        label = _active_label(manifest_bytes)
        sha = _sha256(signed)
        # 5. the manifest store (before the file appears, so no signed file lacks its record)
        if binding:
            store.add(binding_id=binding["binding_id"], manifest_label=label, algorithm=binding["alg"],
                      asset_sha256=sha, format=mime, manifest=manifest_bytes, signer=keys.signer_name,
                      path=str(Path(record_path or dst).resolve()), binding=binding["mode"],
                      phash=softbinding.phash(marked))
        os.chmod(signed, 0o644 & ~_umask())
        os.replace(signed, dst)
    finally:
        store.close()
        for p in (staged, signed):
            media._unlink(p)
        try:
            os.rmdir(tmp_dir)
        except OSError:
            pass
    if binding:
        binding = {**binding, "readable": readable}
    return {"path": str(dst), "format": mime, "action": action, "manifest_id": label,
            "signer": keys.signer_name, "sha256": sha,
            "soft_binding": binding, "watermarked": binding is not None,
            "manifest_bytes": len(manifest_bytes), "seconds": round(time.time() - t0, 3)}


def _binding_for(pixels: np.ndarray, wm_key, store: ManifestStore) -> dict:
    """How step 2 binds: {"mode": "reused", "binding_id", "existing"} when the pixels carry our
    mark whose id decodes (or the store's known-payload test names it), else {"mode": "embedded"}
    with what was found ("existing": an unreadable earlier mark, or None)."""
    found = softbinding.existing_mark(pixels, wm_key)
    if not found["detected"]:
        return {"mode": "embedded", "existing": None}
    if found["payload"]:
        return {"mode": "reused", "binding_id": found["payload"], "existing": {**found, "read": "decoded"}}
    cands = store.nearest(softbinding.phash(pixels), softbinding.MAX_CANDIDATES)
    if cands and softbinding.can_match():
        frames = pixels if pixels.ndim == 4 else pixels[None]
        m = softbinding.match_pixels(frames, wm_key, list(dict.fromkeys(r["binding_id"] for r in cands)))
        if m["detected"]:
            return {"mode": "reused", "binding_id": m["payload"],
                    "existing": {**found, "payload": m["payload"], "read": "known-payload test"}}
    return {"mode": "embedded", "existing": {**found, "read": "unreadable: a new id was embedded over it"}}


def _active_label(manifest_bytes: bytes) -> str:
    import c2pa

    with c2pa.Reader("application/c2pa", io.BytesIO(manifest_bytes)) as r:
        return json.loads(r.json())["active_manifest"]


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:240]
