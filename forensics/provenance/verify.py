"""`forensics provenance verify`: read and validate the C2PA manifest of a file.

1. Check the media (bad or truncated input → MediaError, exit 2).
2. Validate with the c2pa SDK against the trust anchors (keys.load_anchors): the state is
   `trusted` (valid and the signer chains to an anchor), `valid` (signature and hashes fine,
   signer unknown), `invalid` (something failed: a hash, the signature, the structure) or
   `no_manifest`. Every status code is listed with the SDK's explanation and ours.
3. Soft binding: when the file has no manifest or an invalid one, look for the post-hoc
   watermark; a binding id decoded there, or else confirmed by the watermark's known-payload
   test among the store rows nearest in perceptual hash (see `recover`), is looked up in the
   manifest store and the stored manifest's signature is verified on its own (its hard binding
   cannot match a re-encoded copy, and the report says so).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

from .. import media
from ..errors import MediaError, ProvenanceError
from . import keys as _keys
from . import softbinding

STATES = {"Trusted": "trusted", "Valid": "valid", "Invalid": "invalid"}

# Plain-language meaning of the C2PA 2.x validation status codes (spec §15.2 "Status codes").
MEANING = {
    "claimSignature.validated": "the claim's signature verifies with the signing certificate's key",
    "claimSignature.insideValidity": "the signing certificate was within its validity period when it signed",
    "claimSignature.outsideValidity": "the signing certificate was expired or not yet valid when it signed",
    "claimSignature.mismatch": "the claim's signature does not verify: the claim or signature was altered",
    "claimSignature.missing": "the claim has no signature",
    "signingCredential.trusted": "the signing certificate chains to a configured trust anchor",
    "signingCredential.untrusted": "the signing certificate does not chain to any configured trust anchor "
                                   "(the signature itself verified)",
    "signingCredential.invalid": "the signing certificate is malformed or unfit for C2PA (key usage, EKU)",
    "signingCredential.revoked": "the signing certificate was revoked",
    "signingCredential.expired": "the signing certificate has expired",
    "signingCredential.ocsp.skipped": "certificate revocation (OCSP) was not checked: no network look-ups",
    "signingCredential.ocsp.notRevoked": "OCSP says the signing certificate is not revoked",
    "signingCredential.ocsp.inaccessible": "the OCSP responder could not be reached",
    "timeStamp.trusted": "the signature's time-stamp comes from a trusted time-stamp authority",
    "timeStamp.untrusted": "the time-stamp authority is not trusted",
    "timeStamp.validated": "the time-stamp verifies",
    "timeStamp.mismatch": "the time-stamp does not match the signature",
    "timeStamp.outsideValidity": "the time-stamp authority's certificate was not valid at that time",
    "assertion.hashedURI.match": "an assertion's content matches the hash the claim records for it",
    "assertion.hashedURI.mismatch": "an assertion was altered after signing (its hash differs from the claim's)",
    "assertion.dataHash.match": "the hash over the asset's bytes (hard binding) matches: the content is as signed",
    "assertion.dataHash.mismatch": "the asset's bytes changed after signing (hard binding hash differs)",
    "assertion.bmffHash.match": "the hash over the MP4 boxes (hard binding) matches: the content is as signed",
    "assertion.bmffHash.mismatch": "the MP4's content changed after signing (BMFF hash differs)",
    "assertion.boxesHash.match": "the hash over the file's boxes matches",
    "assertion.boxesHash.mismatch": "the file's boxes changed after signing",
    "assertion.missing": "an assertion the claim lists is absent",
    "assertion.inaccessible": "an assertion cannot be read",
    "assertion.undeclared": "the manifest holds an assertion the claim does not list",
    "assertion.multipleHardBindings": "the manifest has more than one hard binding",
    "assertion.cbor.invalid": "an assertion is not valid CBOR",
    "assertion.json.invalid": "an assertion is not valid JSON",
    "assertion.action.malformed": "the actions assertion is malformed",
    "assertion.action.ingredientMismatch": "an action names an ingredient that does not match",
    "assertion.action.redacted": "an actions assertion was redacted, which is not allowed",
    "claim.missing": "the manifest has no claim",
    "claim.multiple": "the manifest has more than one claim",
    "claim.malformed": "the claim is malformed",
    "claim.cbor.invalid": "the claim is not valid CBOR",
    "claim.hardBindings.missing": "the claim has no hard binding to the asset",
    "hardBindings.missing": "the claim has no hard binding to the asset",
    "ingredient.manifest.validated": "an ingredient's own manifest validated",
    "ingredient.manifest.missing": "an ingredient's manifest is missing",
    "ingredient.manifest.mismatch": "an ingredient's manifest does not match the one recorded",
    "ingredient.hashedURI.match": "an ingredient's manifest matches its recorded hash",
    "ingredient.hashedURI.mismatch": "an ingredient's manifest changed (hash differs)",
    "ingredient.claimSignature.validated": "an ingredient's claim signature verifies",
    "ingredient.claimSignature.mismatch": "an ingredient's claim signature does not verify",
    "manifest.inaccessible": "the manifest store cannot be read",
    "manifest.multipleParents": "more than one parentOf ingredient",
    "manifest.update.invalid": "an update manifest is not valid",
    "manifest.update.wrongParents": "an update manifest has the wrong parents",
    "algorithm.unsupported": "the signature or hash algorithm is not supported",
    "general.error": "an unexpected error during validation",
}
# What a copy recovered through soft binding cannot satisfy, by construction.
EXPECTED_ON_RECOVERY = {"assertion.dataHash.mismatch", "assertion.bmffHash.mismatch", "assertion.boxesHash.mismatch"}


def reader_context(anchors_pem: str | None):
    import c2pa

    cfg = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}
    if anchors_pem:
        cfg["trust"] = {"user_anchors": anchors_pem}
    try:
        return c2pa.Context(c2pa.Settings.from_dict(cfg))
    except c2pa.C2paError:  # an SDK without one of the verify keys: trust settings alone
        return c2pa.Context(c2pa.Settings.from_dict({"trust": {"user_anchors": anchors_pem}} if anchors_pem else {}))


def check_media(path: str | os.PathLike) -> str:
    """Decode enough of the file to refuse garbage and truncation; return "image" | "video"."""
    kind = media.sniff(path)
    if kind == "image":
        media.read_image(path)
    else:
        info = media.probe_video(path)
        media.check_video_limits(info)
    return kind


def verify_file(path: str | os.PathLike, *, anchors: str | os.PathLike | None = None,
                keys_dir: str | os.PathLike | None = None, soft_binding: bool = True,
                watermark_result: dict | None = None) -> dict:
    """The verification result of one file (see the module docstring)."""
    t0 = time.time()
    p = Path(path)
    kind = media.sniff(p)  # exists, regular, non-empty, a media container
    anchors_pem = _keys.load_anchors(anchors, keys_dir)
    ctx = reader_context(anchors_pem)
    out: dict = {"path": str(p), "modality": kind}
    report = _read(p, ctx)
    out["media_error"] = None
    if report is None:
        check_media(p)  # no manifest: an undecodable file is bad input (exit 2)
        out.update(state="no_manifest", c2pa_state=None, manifest_id=None, status=[], failures=[])
    else:
        out.update(report)
        try:  # with a manifest, a file that no longer decodes is evidence, not an input error
            check_media(p)
        except MediaError as exc:
            out["media_error"] = exc.one_line()
    out["trust_anchors"] = ("none" if anchors_pem is None else str(anchors) if anchors
                            else str(_keys.resolve_dir(keys_dir) / _keys.CA_CERT))
    out["recovered"] = None
    out["soft_binding_check"] = None
    if soft_binding and out["state"] in ("no_manifest", "invalid") and not out["media_error"]:
        out["recovered"], out["soft_binding_check"] = recover(p, ctx, keys_dir=keys_dir,
                                                               watermark_result=watermark_result)
    out["summary"] = summarize(out)
    out["seconds"] = round(time.time() - t0, 3)
    return out


def _read(p: Path, ctx) -> dict | None:
    import c2pa

    try:
        with c2pa.Reader(str(p), context=ctx) as r:
            state = r.get_validation_state()
            data = json.loads(r.json())
    except c2pa.C2paError as exc:
        name = type(exc).__name__
        if "ManifestNotFound" in name or "ManifestNotFound" in str(exc) or "no JUMBF" in str(exc):
            return None
        check_media(p)  # a file that does not decode is bad input first of all
        if "NotSupported" in name:
            raise MediaError(f"the C2PA SDK does not read this format ({_reason(exc)})", p) from None
        raise ProvenanceError(f"malformed C2PA manifest: {_reason(exc)}", p) from None
    return describe(data, state)


def describe(data: dict, state: str | None) -> dict:
    """Flatten a Reader's JSON into the fields `verify` reports."""
    label = data.get("active_manifest")
    m = (data.get("manifests") or {}).get(label) or {}
    out = {"state": STATES.get(state or "", "invalid"), "c2pa_state": state, "manifest_id": label}
    out.update(manifest_fields(m))
    out["status"] = status_codes(data)
    out["failures"] = sorted({s["code"] for s in out["status"] if s["kind"] == "failure"})
    return out


def manifest_fields(m: dict) -> dict:
    sig = m.get("signature_info") or {}
    gens = m.get("claim_generator_info") or []
    gen = ", ".join(f"{g.get('name')} {g.get('version') or ''}".strip() for g in gens if isinstance(g, dict))
    actions, dst, soft, generator = [], None, None, None
    for a in m.get("assertions") or []:
        # An assertion's data is whatever CBOR the file carries, even when its hash fails:
        # anything may sit where a map, a list or a string belongs.
        lab, d = a.get("label", ""), a.get("data")
        d = d if isinstance(d, dict) else {}
        if lab.startswith("c2pa.actions"):
            acts = d.get("actions")
            for act in acts if isinstance(acts, list) else []:
                if not isinstance(act, dict):
                    continue
                item = {"action": act.get("action")}
                for key in ("digitalSourceType", "softwareAgent", "description", "parameters"):
                    if act.get(key) is not None:
                        item[key] = act[key]
                actions.append(item)
                if dst is None and isinstance(act.get("digitalSourceType"), str) and act["digitalSourceType"]:
                    dst = act["digitalSourceType"]
        elif lab.startswith("c2pa.soft-binding"):
            soft = {"alg": d.get("alg"), "binding_id": None, "description": d.get("name")}
            blocks = d.get("blocks") or []
            b0 = blocks[0] if isinstance(blocks, list) and blocks else None
            if isinstance(b0, dict) and isinstance(b0.get("value"), str):
                try:
                    soft["binding_id"] = base64.b64decode(blocks[0]["value"], validate=True).hex()
                except ValueError:
                    pass
        elif lab == "org.forensics.generator":
            generator = d
    ingredients = []
    for ing in m.get("ingredients") or []:
        vr = ing.get("validation_results") or {}
        fails = [s.get("code") for s in (vr.get("activeManifest") or {}).get("failure") or []]
        ingredients.append({"title": ing.get("title"), "format": ing.get("format"),
                            "relationship": ing.get("relationship"), "manifest_id": ing.get("active_manifest"),
                            "failures": fails})
    return {
        "signer": {"common_name": sig.get("common_name"), "issuer": sig.get("issuer"), "alg": sig.get("alg"),
                   "serial": sig.get("cert_serial_number"), "time": sig.get("time")} if sig else None,
        "claim_generator": gen or m.get("claim_generator"),
        "title": m.get("title"),
        "format": m.get("format"),
        "actions": actions,
        "digital_source_type": dst,
        "digital_source_type_short": dst.rsplit("/", 1)[-1] if dst else None,
        "ingredients": ingredients,
        "soft_binding": soft,
        "generator": generator,
    }


def status_codes(data: dict) -> list[dict]:
    """Every status code: (kind, code, SDK explanation, our meaning, where)."""
    out, seen = [], set()
    vr = data.get("validation_results") or {}
    groups = [("", vr.get("activeManifest") or {})]
    for d in vr.get("ingredientDeltas") or []:
        groups.append(("ingredient: ", d.get("validationDeltas") or {}))
    for prefix, g in groups:
        for kind in ("failure", "informational", "success"):
            for s in g.get(kind) or []:
                key = (prefix, kind, s.get("code"), s.get("url"))
                if key in seen:
                    continue
                seen.add(key)
                out.append(_code(s, kind, prefix))
    if not vr:  # an SDK that only fills the legacy list: those are all problems
        for s in data.get("validation_status") or []:
            out.append(_code(s, "failure", ""))
    return out


def _code(s: dict, kind: str, prefix: str) -> dict:
    code = s.get("code") or "?"
    if code == "signingCredential.untrusted":
        kind = "warning"  # the SDK files it as a failure; the signature itself verified
    return {"kind": kind, "code": code, "scope": prefix.rstrip(": ") or "active manifest",
            "explanation": s.get("explanation"), "meaning": MEANING.get(code, s.get("explanation") or ""),
            "url": s.get("url")}


def recover(p: Path, ctx, *, keys_dir=None, watermark_result: dict | None = None) -> tuple[dict | None, dict]:
    """Find the manifest through the watermark; (recovered or None, what was tried).

    1. The watermark decodes an id (CRC-valid, p ≤ 1e-6): the store's rows for it; when several
       manifests share the id (bound to an existing mark), the one nearest in perceptual hash.
    2. No id decodes: the known-payload test on the ids of the store rows nearest in perceptual
       hash (softbinding.py); a match at p ≤ softbinding.MATCH_THRESHOLD names the row.
    """
    why = softbinding.unavailable()
    if why:
        return None, {"ran": False, "reason": f"soft binding unavailable: {why}"}
    wm = watermark_result if watermark_result is not None else softbinding.detect(p, keys_dir)
    check: dict = {"ran": True, "watermark": wm}
    if wm.get("reason") and not wm.get("detected"):  # no key, or too small to carry a mark
        check["reason"] = f"no soft-binding watermark found ({wm['reason']})"
        return None, check
    from .store import ManifestStore, hamming

    payload = wm.get("payload") if wm.get("detected") else None
    store_path = _keys.resolve_dir(keys_dir) / _keys.STORE
    if not store_path.is_file():
        check["reason"] = (f"watermark id {payload} found, but there is no manifest store at {store_path}" if payload
                           else f"no soft-binding watermark found, and no manifest store at {store_path}")
        return None, check
    qhash = softbinding.file_phash(p)
    check["phash"] = qhash
    read = None
    with ManifestStore(store_path, create=False) as st:
        if payload:
            rows = st.rows_for(str(payload))
            read = {"method": "decoded", "p_value": wm.get("p_value")}
        else:
            cands = st.nearest(qhash, softbinding.MAX_CANDIDATES) if softbinding.can_match() else []
            rows = []
            if cands:
                ids = list(dict.fromkeys(r["binding_id"] for r in cands))
                m = softbinding.match_pixels(softbinding._frames(p), softbinding.load_key(keys_dir), ids)
                check["match"] = m
                if m["detected"]:
                    rows = [r for r in cands if r["binding_id"] == m["payload"]]
                    read = {"method": "known-payload test", "p_value": m["p_value"], "candidates": len(ids)}
    if not rows:
        m = check.get("match")
        tried = (f"; the known-payload test of the {m['candidates']} stored id(s) nearest in perceptual hash "
                 f"found none (best p={m['p_value']:.2g})" if m else "")
        pv = wm.get("p_value")
        if payload:
            check["reason"] = f"watermark id {payload} is not in the manifest store {store_path}"
        elif wm.get("detected"):
            check["reason"] = (f"a watermark is present{' (p=%.2g)' % pv if isinstance(pv, (int, float)) else ''} "
                               f"but its payload did not decode (error correction failed){tried}")
        else:
            check["reason"] = f"no soft-binding watermark found{tried}"
        return None, check
    for r in rows:
        r["phash_distance"] = hamming(qhash, r["phash"]) if r.get("phash") else None
    row = min(rows, key=lambda r: 65 if r["phash_distance"] is None else r["phash_distance"])  # ties: newest
    import c2pa

    try:
        with c2pa.Reader("application/c2pa", io.BytesIO(row["manifest"]), context=ctx) as r:
            state = r.get_validation_state()
            data = json.loads(r.json())
    except c2pa.C2paError as exc:
        check["reason"] = f"the stored manifest for id {row['binding_id']} cannot be read ({_reason(exc)})"
        return None, check
    rec = describe(data, state)
    fails = set(rec["failures"]) - EXPECTED_ON_RECOVERY
    signature_ok = not fails and any(s["code"] == "claimSignature.validated" for s in rec["status"])
    trusted = any(s["code"] == "signingCredential.trusted" for s in rec["status"])
    bound = (rec.get("soft_binding") or {}).get("binding_id")
    rec.update({
        "via": "watermark",
        "binding_id": row["binding_id"],
        "binding_read": read["method"],
        "binding_p_value": read["p_value"],
        "binding": row.get("binding"),
        "manifests_for_id": len(rows),
        "phash_distance": row["phash_distance"],
        "algorithm": row["algorithm"],
        "manifest_id": row["manifest_label"],
        "signature": ("trusted" if trusted else "valid") if signature_ok else "invalid",
        "binding_matches": bound == row["binding_id"],
        "stored_asset_sha256": row["asset_sha256"],
        "asset_matches": _sha256(p) == row["asset_sha256"],
        "note": "manifest recovered through the invisible watermark (soft binding); its hard binding "
                "cannot match this copy, whose bytes differ from the signed file",
    })
    rec.pop("state", None)
    rec.pop("c2pa_state", None)
    return rec, check


def summarize(r: dict) -> str:
    st = r["state"]
    who = ((r.get("signer") or {}).get("common_name")) or "unknown signer"
    src = r.get("digital_source_type_short")
    what = f"; declares {src}" if src else ""
    if st == "trusted":
        s = f"valid C2PA manifest signed by a trusted signer ({who}){what}"
    elif st == "valid":
        s = f"valid C2PA manifest, but the signer ({who}) is not in the trust anchors{what}"
    elif st == "invalid":
        s = f"INVALID C2PA manifest: {', '.join(r.get('failures') or ['validation failed'])}"
    else:
        s = "no C2PA manifest in the file"
    if r.get("media_error"):
        s += f"; the file does not decode ({r['media_error']})"
    rec = r.get("recovered")
    if rec:
        rsrc = rec.get("digital_source_type_short")
        how = "" if rec.get("binding_read") in (None, "decoded") else f", {rec['binding_read']}"
        s += (f"; manifest {rec['manifest_id']} RECOVERED through the watermark soft binding "
              f"(id {rec['binding_id']}{how}, signature {rec['signature']}"
              f"{', declares ' + rsrc if rsrc else ''})")
    elif r.get("soft_binding_check") and r["soft_binding_check"].get("reason"):
        s += f"; {r['soft_binding_check']['reason']}"
    return s


def _sha256(p: Path) -> str:
    from .sign import _sha256 as h

    return h(p)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:240]
