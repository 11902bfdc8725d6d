"""Reports people look at: per-file JSON plus a PNG of the frame with its detector heatmap, and
the metadata evidence (an error-level-analysis PNG and an HTML table)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import cv2
import numpy as np

from . import media


def heatmap_overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a (h, w) map of p_synthetic in [0, 1] over an RGB frame (red = synthetic)."""
    h, w = frame.shape[:2]
    hm = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    colour = cv2.applyColorMap((np.clip(hm, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (frame.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)


def write_detect_report(report_dir, m, result: dict, evidence: dict) -> dict:
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)
    stem = Path(m.path).name.replace(".", "_")
    files = {}
    for name, ev in evidence.items():
        if ev.heatmap is not None:
            frame = m.frames[0]
            if min(frame.shape[:2]) < 256:  # enlarge tiny frames so a person can see them
                k = int(np.ceil(256 / min(frame.shape[:2])))
                frame = frame.repeat(k, 0).repeat(k, 1)
            p = media.write_png(d / f"{stem}.{name}_heatmap.png", heatmap_overlay(frame, ev.heatmap))
            files[f"{name}_heatmap"] = str(p)
        if ev.attribution:
            from . import plots

            top = dict(sorted(ev.attribution.items(), key=lambda kv: -kv[1])[:12])
            p = plots.save(plots.bar_chart(top, title=f"{name}: attribution"), d / f"{stem}.{name}_attribution.png")
            files[f"{name}_attribution"] = str(p)
    if "frequency" in evidence:
        files["spectrum"] = str(write_spectrum(d / f"{stem}.spectrum.png", m.frames[0]))
    if isinstance(result.get("metadata"), dict):
        files.update(write_metadata_report(d, stem, m.frames[0] if m.modality == "image" else None,
                                           result["metadata"]))
    j = d / f"{stem}.json"
    j.write_text(json.dumps({**result, "report": files}, indent=2) + "\n")
    files["json"] = str(j)
    return files


def write_spectrum(path: Path, frame: np.ndarray) -> Path:
    """The mean log power spectrum of the noise residual over the frame's 32x32 patches (DC at
    the centre): periodic peaks are upsampling traces, a dark rim is missing high frequencies."""
    from . import plots
    from .detectors import frequency

    patches, _ = frequency.patch_grid(frame)
    spec = frequency.residual_spectrum(patches)
    return plots.save(plots.image_grid({"residual spectrum": spec}, title="", scale=8, cols=1), path)


# ---------------------------------------------------------------------------------------------
# Metadata evidence (forensics/metadata.py)

ELA_MAX_SIDE = 4096  # the ELA picture is downscaled beyond this; its statistics are full size


def write_metadata_report(d: Path, stem: str, frame: np.ndarray | None, meta: dict) -> dict:
    """`<stem>.ela.png` (error level analysis of an image) and `<stem>.metadata.html` (a table).

    Adds the ELA statistics to `meta["ela"]`. Every metadata value is untrusted text (prompts,
    comments): the HTML escapes all of it.
    """
    from . import metadata

    files = {}
    if frame is not None:
        ela = metadata.ela_map(frame)
        meta["ela"] = metadata.ela_stats(ela)
        pic = metadata.ela_image(ela)
        if max(pic.shape[:2]) > ELA_MAX_SIDE:
            k = ELA_MAX_SIDE / max(pic.shape[:2])
            pic = cv2.resize(pic, (max(1, round(pic.shape[1] * k)), max(1, round(pic.shape[0] * k))),
                             interpolation=cv2.INTER_AREA)
        files["ela"] = str(media.write_png(d / f"{stem}.ela.png", pic))
    page = d / f"{stem}.metadata.html"
    media.atomic_write_bytes(page, metadata_html(meta, Path(files["ela"]).name if "ela" in files else None)
                             .encode("utf-8"))
    files["metadata_html"] = str(page)
    return files


def _cell(v) -> str:
    if isinstance(v, (dict, list)):
        v = json.dumps(v, ensure_ascii=False, indent=1)
        return f"<pre>{html.escape(v)}</pre>"
    return html.escape("" if v is None else str(v))


def _table(title: str, rows, head=("field", "value")) -> str:
    rows = list(rows)
    if not rows:
        return ""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<h2>{html.escape(title)}</h2><table><tr>{th}</tr>{body}</table>"


def metadata_html(meta: dict, ela_png: str | None = None) -> str:
    """One self-contained HTML page of a file's metadata evidence."""
    parts = ["<!doctype html><meta charset='utf-8'><title>metadata evidence</title><style>"
             "body{font:14px sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #bbb;padding:3px 6px;vertical-align:top;text-align:left}"
             "pre{margin:0;white-space:pre-wrap;max-width:70em}.dec{color:#b00;font-weight:bold}</style>",
             f"<h1>Metadata evidence ({html.escape(str(meta.get('format', '?')))})</h1>"]
    dec = meta.get("decisive")
    parts.append(f"<p class='dec'>{html.escape(dec['reason'])} → {html.escape(dec['verdict'])}</p>" if dec else
                 "<p>No decisive metadata signature.</p>")
    parts.append(_table("Signatures", ((s.get("signature"), s.get("field"), s.get("indicates"),
                                        "yes" if s.get("decisive") else "no", s.get("generator"),
                                        s.get("details") or s.get("value"))
                                       for s in meta.get("signatures") or []),
                        ("signature", "field", "indicates", "decisive", "generator", "details")))
    cam = meta.get("camera") or {}
    parts.append(_table("Camera evidence", cam.items()))
    j = meta.get("jpeg") or {}
    q = j.get("quality") or {}
    rows = [("quality estimate", q.get("estimate")), ("tables", q.get("tables")), ("encoders", q.get("encoders")),
            ("huffman", j.get("huffman")), ("frame", j.get("frame")),
            ("double compression", j.get("double_compression"))]
    parts.append(_table("JPEG compression", [r for r in rows if r[1] is not None]) if j else "")
    if ela_png:
        e = meta.get("ela") or {}
        parts.append(f"<h2>Error level analysis (re-saved at quality {e.get('quality')}, error × {e.get('gain')})</h2>"
                     f"<p>mean {e.get('mean')}, 99th percentile {e.get('p99')}, max {e.get('max')}</p>"
                     f"<img src='{html.escape(ela_png)}' style='max-width:100%'>")
    for key, title in (("c2pa", "C2PA"), ("icc", "ICC profile"), ("container", "Container"), ("png", "PNG"),
                       ("webp", "WebP"), ("gif", "GIF"), ("text", "Text chunks"), ("exif", "EXIF"),
                       ("xmp", "XMP"), ("iptc", "IPTC")):
        v = meta.get(key)
        if isinstance(v, dict) and v:
            parts.append(_table(title, v.items()))
    parts.append(_table("Warnings", ((w,) for w in meta.get("warnings") or []), ("warning",)))
    return "\n".join(p for p in parts if p) + "\n"
