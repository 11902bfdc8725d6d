"""`forensics audit`: provenance + watermark + detectors for files and folders, with one summary.

For each file:
1. Media check (bad file → an error row; the audit goes on with the next file).
2. Watermark: the post-hoc watermark (payload, p-value); Tree-Ring where the manifest names a
   bank architecture whose sampler can be inverted and the Tree-Ring module is installed.
3. Provenance: C2PA verification; with no or an invalid manifest, recovery through the
   watermark's binding id (soft binding, see provenance/verify.py).
4. Detectors: every installed detector checkpoint, fused (forensics.detect); skipped, saying
   so, when none is installed.
5. Summary, first applicable rule wins:
   a. signed credentials (embedded, or recovered through the watermark with a verified
      signature) that declare an AI source type → synthetic;
   b. signed credentials that declare a capture → real, or uncertain when a detector disagrees;
   c. the detectors' fused verdict;
   d. nothing to go on → unknown.
   Broken credentials (invalid manifest) are reported as tampering in the reasons whatever the verdict.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

from . import media
from .errors import ForensicsError, MediaError, UsageError

# IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/) by what they declare.
SYNTHETIC_SOURCES = {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia",
                     "compositeSynthetic", "algorithmicallyEnhanced", "dataDrivenMedia", "virtualRecording",
                     "digitalCreation"}
CAPTURE_SOURCES = {"digitalCapture", "computationalCapture", "negativeFilm", "positiveFilm", "print",
                   "screenCapture", "compositeCapture"}


class Auditor:
    """Loads the detectors once; `audit(path)` returns one result dict."""

    def __init__(self, *, detectors: str | None = None, anchors: str | None = None,
                 keys_dir: str | None = None, max_frames: int = 32, soft_binding: bool = True):
        if max_frames < 1:
            raise UsageError(f"--max-frames must be ≥ 1; got {max_frames}")
        self.anchors, self.keys_dir, self.max_frames = anchors, keys_dir, max_frames
        self.soft_binding = soft_binding
        self.detectors, self.detector_note = self._load_detectors(detectors)

    @staticmethod
    def _load_detectors(spec):
        from . import detect

        try:
            return detect.load_detectors(spec), None
        except UsageError as exc:
            if spec:  # the user named detectors: a wrong name is a usage error
                raise
            return {}, f"detectors skipped: {exc.one_line()}"

    def audit(self, path: str | os.PathLike) -> dict:
        from .provenance import softbinding, verify

        t0 = time.time()
        p = Path(path)
        # 1. media (a file that does not decode is still checked for credentials: evidence of tampering)
        kind = media.sniff(p)
        try:
            verify.check_media(p)
            media_error = None
        except MediaError as exc:
            media_error = exc.one_line()
        # 2. watermark
        wm = {"posthoc": None, "treering": None}
        why = softbinding.unavailable()
        if media_error:
            wm["posthoc"] = {"ran": False, "reason": "the file does not decode"}
        elif why:
            wm["posthoc"] = {"ran": False, "reason": f"post-hoc watermark unavailable: {why}"}
        else:
            wm["posthoc"] = {"ran": True, **softbinding.detect(p, self.keys_dir)}
        # 3. provenance (reuses the watermark result for soft binding)
        prov = verify.verify_file(p, anchors=self.anchors, keys_dir=self.keys_dir,
                                  soft_binding=self.soft_binding,
                                  watermark_result=wm["posthoc"] if wm["posthoc"].get("ran") else None)
        wm["treering"] = _treering(p, prov)
        if media_error and prov["state"] == "no_manifest":
            raise MediaError(media_error.split(": ", 1)[-1], p)
        # 4. detectors
        det = self._detect(p) if not media_error else {"ran": False, "reason": "the file does not decode"}
        # 5. metadata (detect already analysed it when the detectors ran)
        meta = det.pop("metadata", None)
        if meta is None and not media_error:
            from . import metadata

            meta = metadata.safe_analyze(p)
        out = {"path": str(p), "modality": kind, "summary": summarize(prov, wm, det, meta),
               "provenance": prov, "watermark": wm, "detectors": det, "metadata": meta}
        out["seconds"] = round(time.time() - t0, 3)
        return out

    def _detect(self, p: Path) -> dict:
        from . import detect

        if not self.detectors:
            return {"ran": False, "reason": self.detector_note or "no detector installed"}
        try:
            r = detect.detect_file(p, self.detectors, max_frames=self.max_frames)
        except ForensicsError as exc:  # e.g. no detector handles this modality, or a tiny frame
            return {"ran": False, "reason": exc.one_line()}
        return {"ran": True, "verdict": r["verdict"], "p_synthetic": r["p_synthetic"], "threshold": r["threshold"],
                "detectors": r["detectors"], "models": r.get("models"), "reason": r.get("reason"),
                "metadata": r.get("metadata")}


def _treering(p: Path, prov: dict) -> dict:
    """Tree-Ring detection needs the generating model (it inverts the sampler): only for files whose
    credentials name a bank architecture, and only when the Tree-Ring module is installed."""
    gen = prov.get("generator") or ((prov.get("recovered") or {}).get("generator"))
    arch = (gen or {}).get("architecture")
    if not isinstance(arch, str) or not arch:  # the assertion is the file's CBOR: any type may sit here
        return {"ran": False, "reason": "not applicable: no credentials name the generating architecture"}
    try:
        from .watermark import treering  # noqa: F401
    except ImportError:
        return {"ran": False, "reason": "Tree-Ring module not installed"}
    fn = getattr(treering, "detect_file", None)
    if fn is None:
        return {"ran": False, "reason": "Tree-Ring module has no detect_file()"}
    try:
        r = fn(p, arch)
    except (ForensicsError, TypeError, ValueError) as exc:
        return {"ran": False, "reason": f"Tree-Ring detection failed: {' '.join(str(exc).split())[:200]}"}
    return {"ran": True, **(r if isinstance(r, dict) else {"result": r})}


def summarize(prov: dict, wm: dict, det: dict, meta: dict | None = None) -> dict:
    reasons: list[str] = []
    verdict, basis = None, None
    decl, decl_from = None, None
    st = prov["state"]
    rec = prov.get("recovered")
    if st in ("trusted", "valid"):
        decl, decl_from = prov.get("digital_source_type_short"), f"{st} embedded credentials"
        who = (prov.get("signer") or {}).get("common_name") or "unknown signer"
        reasons.append(f"C2PA manifest {st} (signer {who}" + ("" if st == "trusted" else ", not in the trust anchors") + ")")
    elif rec and rec.get("signature") in ("trusted", "valid"):
        decl, decl_from = rec.get("digital_source_type_short"), \
            f"credentials recovered through the watermark ({rec['signature']} signature)"
        reasons.append(f"{'invalid embedded manifest' if st == 'invalid' else 'metadata stripped or re-encoded'}; "
                       f"manifest {rec['manifest_id']} recovered through the watermark soft binding"
                       + (f" (id {rec['binding_id']} confirmed by the known-payload test against the manifest store)"
                          if rec.get("binding_read") == "known-payload test" else ""))
    if st == "invalid":
        reasons.append(f"TAMPERED: the embedded C2PA manifest fails validation ({', '.join(prov.get('failures') or [])})")
    elif st == "no_manifest" and not rec:
        why = (prov.get("soft_binding_check") or {}).get("reason")
        reasons.append("no C2PA credentials" + (f" ({why})" if why else ""))
    ph = wm.get("posthoc") or {}
    if ph.get("ran") and ph.get("detected"):
        pv = ph.get("p_value")
        reasons.append(f"post-hoc watermark present (payload {ph.get('payload')}"
                       f"{', p=%.2g' % pv if isinstance(pv, (int, float)) else ''})")
        bound = (prov.get("soft_binding") or {}).get("binding_id")
        if bound and ph.get("payload") and ph["payload"] != bound:
            reasons.append(f"the watermark's id {ph['payload']} differs from the manifest's soft binding {bound}")
    tr = wm.get("treering") or {}
    if tr.get("ran") and tr.get("detected"):
        reasons.append("Tree-Ring watermark present")
    dv = det.get("verdict") if det.get("ran") else None
    if det.get("ran") and det.get("p_synthetic") is not None:
        reasons.append(f"detectors: {dv} (p_synthetic {det['p_synthetic']:.3f}, threshold {det['threshold']:.3f})")
    else:
        reasons.append(det.get("reason") or "detectors did not run")
    # the rules of the module docstring
    if decl in SYNTHETIC_SOURCES:
        verdict, basis = "synthetic", decl_from
        reasons.insert(0, f"declares {decl} ({decl_from})")
    elif decl in CAPTURE_SOURCES:
        verdict = "uncertain" if dv == "synthetic" else "real"
        basis = decl_from
        reasons.insert(0, f"declares {decl} ({decl_from})" + ("; detectors disagree" if dv == "synthetic" else ""))
    elif (meta or {}).get("decisive"):
        verdict, basis = "synthetic", meta["decisive"]["reason"]
        reasons.insert(0, meta["decisive"]["reason"])
    elif dv:
        verdict, basis = dv, "detectors"
    elif tr.get("ran") and tr.get("detected"):
        verdict, basis = "synthetic", "Tree-Ring watermark"
    else:
        verdict, basis = "unknown", "nothing to go on"
    return {"verdict": verdict, "basis": basis, "tampered": st == "invalid",
            "credentials": st if not rec else f"{st}, recovered via watermark", "reasons": reasons}


expand = media.expand_paths


# ---------------------------------------------------------------------------------------------
# Report


def write_report(report_dir: str | os.PathLike, rows: list[dict]) -> dict:
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)
    media.atomic_write_bytes(d / "audit.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    media.atomic_write_bytes(d / "audit.html", _html(rows).encode("utf-8"))
    return {"html": str(d / "audit.html"), "jsonl": str(d / "audit.jsonl")}


_COLOURS = {"synthetic": "#f8d7da", "real": "#d4edda", "uncertain": "#fff3cd", "unknown": "#e2e3e5",
            "error": "#f5c6cb"}


def _html(rows: list[dict]) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>forensics audit</title><style>"
           "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%}"
           "td,th{border:1px solid #bbb;padding:4px 6px;vertical-align:top;font-size:13px;text-align:left}"
           "code{font-size:12px}</style></head><body>",
           f"<h1>forensics audit</h1><p>{len(rows)} file(s); generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
           "<table><tr><th>file</th><th>verdict</th><th>credentials (C2PA)</th><th>watermark</th>"
           "<th>detectors</th><th>reasons</th></tr>"]
    for r in rows:
        if "error" in r:
            out.append(f"<tr style='background:{_COLOURS['error']}'><td><code>{e(r['path'])}</code></td>"
                       f"<td>error</td><td colspan='4'>{e(r['error'])}</td></tr>")
            continue
        s, prov, wm, det = r["summary"], r["provenance"], r["watermark"], r["detectors"]
        ph = wm.get("posthoc") or {}
        wm_txt = (f"detected, payload {ph.get('payload')}, p={ph.get('p_value')}" if ph.get("detected")
                  else "not detected" if ph.get("ran") else ph.get("reason", "not run"))
        det_txt = (f"{det['verdict']} (p={det['p_synthetic']:.3f})" if det.get("ran") else det.get("reason", ""))
        out.append(f"<tr style='background:{_COLOURS.get(s['verdict'], '#fff')}'>"
                   f"<td><code>{e(r['path'])}</code></td><td><b>{e(s['verdict'])}</b><br>{e(s['basis'] or '')}</td>"
                   f"<td>{e(prov.get('summary', ''))}</td><td>{e(str(wm_txt))}</td><td>{e(str(det_txt))}</td>"
                   f"<td><ul>{''.join('<li>' + e(x) + '</li>' for x in s['reasons'])}</ul></td></tr>")
    out.append("</table></body></html>\n")
    return "".join(out)
