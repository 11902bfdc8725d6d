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
    files["json"] = str(j)
    files.update(write_detect_html(d, stem, m, result, files))
    j.write_text(json.dumps({**result, "report": files}, indent=2) + "\n")
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


# ---------------------------------------------------------------------------------------------
# The detect page: verdict, detectors, per-frame scores (inline SVG), the most suspicious frames

THUMBS = 6            # thumbnails of the most suspicious sampled frames
THUMB_WIDTH = 240
_COLOURS = {"artifact": "#d62728", "frequency": "#1f77b4", "temporal": "#2ca02c"}
_PALETTE = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def frame_series(result: dict) -> dict[str, list[tuple[float, float]]]:
    """Per detector, (frame number, p_synthetic) points: per-frame detectors at the frames they
    scored (`per_frame_index`), the temporal detector at the middle of each frame pair."""
    idx = result.get("per_frame_index") or []
    out = {}
    for name, ev in (result.get("detectors") or {}).items():
        if ev.get("pairs") and ev.get("per_pair"):
            out[name] = [((a + b) / 2, p) for (a, b), p in zip(ev["pairs"], ev["per_pair"])]
        elif ev.get("per_frame") and len(ev["per_frame"]) == len(idx):
            out[name] = list(zip(idx, ev["per_frame"]))
    return out


def suspicious_frames(result: dict, frame_index: list[int], k: int = THUMBS) -> list[dict]:
    """The k sampled frames with the highest suspicion: the mean calibrated logit of the evidence
    that touches the frame (its per-frame scores, and the frame pairs it belongs to)."""
    from .detectors.base import logit, sigmoid

    touch: dict[int, dict[str, list[float]]] = {f: {} for f in frame_index}
    idx = result.get("per_frame_index") or []
    for name, ev in (result.get("detectors") or {}).items():
        if ev.get("pairs") and ev.get("per_pair"):
            for (a, b), p in zip(ev["pairs"], ev["per_pair"]):
                for f in (a, b):
                    if f in touch:
                        touch[f].setdefault(name, []).append(p)
        elif ev.get("per_frame") and len(ev["per_frame"]) == len(idx):
            for f, p in zip(idx, ev["per_frame"]):
                if f in touch:
                    touch[f].setdefault(name, []).append(p)
    rows = []
    for f, by in touch.items():
        if not by:
            continue
        per = {n: float(np.mean(ps)) for n, ps in by.items()}
        z = float(np.mean([logit(p) for p in per.values()]))
        rows.append({"frame": int(f), "p": round(float(sigmoid(z)), 4),
                     "by_detector": {n: round(p, 4) for n, p in per.items()}})
    rows.sort(key=lambda r: (-r["p"], r["frame"]))
    return rows[:k]


def per_frame_svg(series: dict[str, list[tuple[float, float]]], *, n_frames: int, fps: float | None,
                  threshold: float | None, width: int = 760, height: int = 260) -> str:
    """An inline SVG line plot of p_synthetic over the video (x: seconds when the frame rate is
    known, else frame number), with the verdict threshold dashed."""
    left, right, top, bottom = 48, 120, 16, 36
    pw, ph = width - left - right, height - top - bottom
    xmax = max([n_frames - 1] + [x for pts in series.values() for x, _ in pts] + [1])
    sx = lambda f: left + pw * f / xmax                                    # noqa: E731
    sy = lambda p: top + ph * (1 - min(max(p, 0.0), 1.0))                   # noqa: E731
    scale = fps if fps and fps > 0 else None
    el = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
          f"viewBox='0 0 {width} {height}' role='img' aria-label='per-frame p_synthetic'>",
          f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#fff' stroke='#999'/>"]
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = sy(p)
        el.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eee'/>"
                  f"<text x='{left - 6}' y='{y + 4:.1f}' font-size='11' text-anchor='end'>{p:.2f}</text>")
    span = xmax / scale if scale else xmax
    step = _nice_step(span / 6)
    v = 0.0
    while v <= span + 1e-9:
        x = sx(v * scale if scale else v)
        label = f"{v:g} s" if scale else f"{v:g}"
        el.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top + ph}' y2='{top + ph + 4}' stroke='#999'/>"
                  f"<text x='{x:.1f}' y='{top + ph + 16}' font-size='11' text-anchor='middle'>{label}</text>")
        v += step
    el.append(f"<text x='{left + pw / 2}' y='{height - 4}' font-size='11' text-anchor='middle'>"
              f"{'time' if scale else 'frame'}</text>")
    if threshold is not None:
        y = sy(threshold)
        el.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='#000' "
                  f"stroke-dasharray='5,4'/><text x='{left + 4}' y='{y - 4:.1f}' font-size='11'>"
                  f"threshold {threshold:.2f}</text>")
    for k, (name, pts) in enumerate(sorted(series.items())):
        colour = _COLOURS.get(name, _PALETTE[k % len(_PALETTE)])
        pts = sorted(pts)
        if len(pts) > 1:
            el.append("<polyline fill='none' stroke-width='1.5' stroke='" + colour + "' points='"
                      + " ".join(f"{sx(x):.1f},{sy(p):.1f}" for x, p in pts) + "'/>")
        for x, p in pts:
            when = f"{x / scale:.2f} s, " if scale else ""
            el.append(f"<circle cx='{sx(x):.1f}' cy='{sy(p):.1f}' r='2.5' fill='{colour}'>"
                      f"<title>{html.escape(name)}: frame {x:g} ({when}p {p:.3f})</title></circle>")
        ly = top + 14 + 16 * k
        el.append(f"<line x1='{left + pw + 6}' x2='{left + pw + 24}' y1='{ly - 4}' y2='{ly - 4}' "
                  f"stroke='{colour}' stroke-width='2'/><text x='{left + pw + 28}' y='{ly}' "
                  f"font-size='11'>{html.escape(name)}</text>")
    el.append("</svg>")
    return "".join(el)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    e = 10 ** np.floor(np.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * e:
            return float(m * e)
    return float(10 * e)


def _thumbnail(frame: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    h, w = frame.shape[:2]
    # small frames are enlarged without smoothing, so their pixels stay visible
    interp = cv2.INTER_AREA if w >= width else cv2.INTER_NEAREST
    return cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=interp)


def _href(name: str) -> str:
    """A file name next to the page as a relative URL inside an HTML attribute (a name may hold
    '#', '?', quotes or angle brackets)."""
    from urllib.parse import quote

    return html.escape(quote(name))


def write_detect_html(d: Path, stem: str, m, result: dict, files: dict) -> dict:
    """`<stem>.html`: the verdict, each detector's evidence, the images written next to it and,
    for a video, the per-frame score plot and thumbnails of the most suspicious sampled frames
    (`<stem>.frame_NNNNNN.jpg`). Paths and metadata are untrusted text: everything is escaped."""
    esc = html.escape
    out: dict[str, object] = {}
    p_txt = "n/a" if result.get("p_synthetic") is None else f"{result['p_synthetic']:.3f}"
    t_txt = "n/a" if result.get("threshold") is None else f"{result['threshold']:.3f}"
    parts = ["<!doctype html><meta charset='utf-8'>",
             f"<title>forensics detect: {esc(Path(m.path).name)}</title><style>"
             "body{font:14px sans-serif;margin:1.5em;max-width:72em}table{border-collapse:collapse;margin:.5em 0 1em}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}figure{display:inline-block;margin:0 8px 8px 0;"
             "vertical-align:top}figcaption{font-size:12px;max-width:240px}img{image-rendering:pixelated}"
             ".synthetic{color:#b00}.real{color:#060}.uncertain{color:#a60}</style>",
             f"<h1>{esc(Path(m.path).name)}</h1>",
             f"<p class='{esc(str(result.get('verdict')))}'><b>{esc(str(result.get('verdict')))}</b> — "
             f"p_synthetic {p_txt} (threshold {t_txt}); {esc(str(result.get('reason') or ''))}</p>",
             f"<p>{esc(m.modality)}, {result.get('size', ['?', '?'])[0]}x{result.get('size', ['?', '?'])[1]}"
             + (f", {m.declared_frames} frames at {m.fps:g} fps; {result.get('frames_scored')} sampled, "
                f"{result.get('frames_per_frame_detectors')} scored by per-frame detectors"
                if m.modality == "video" and m.fps else "") + "</p>"]
    rows = "".join(f"<tr><td>{esc(n)}</td><td>{ev.get('p_synthetic')}</td><td>{ev.get('score')}</td>"
                   f"<td>{esc('; '.join(ev.get('notes') or []))}</td></tr>"
                   for n, ev in (result.get("detectors") or {}).items())
    if rows:
        parts.append(f"<h2>Detectors</h2><table><tr><th>detector</th><th>p_synthetic</th><th>score (logit)</th>"
                     f"<th>notes</th></tr>{rows}</table>")
    if m.modality == "video":
        series = frame_series(result)
        if series:
            parts.append("<h2>Per-frame scores</h2>" + per_frame_svg(
                series, n_frames=max(m.declared_frames, 1), fps=m.fps, threshold=result.get("threshold")))
        index = list(m.frame_index) if m.frame_index is not None else list(range(len(m.frames)))
        top = suspicious_frames(result, index)
        if top:
            parts.append("<h2>Most suspicious frames</h2><div>")
            pos = {f: i for i, f in enumerate(index)}
            thumbs = []
            for r in top:
                name = f"{stem}.frame_{r['frame']:06d}.jpg"
                media.write_jpeg(d / name, _thumbnail(m.frames[pos[r['frame']]]), quality=88)
                thumbs.append(str(d / name))
                when = f"{r['frame'] / m.fps:.2f} s, " if m.fps else ""
                detail = ", ".join(f"{esc(n)} {p:.2f}" for n, p in sorted(r["by_detector"].items()))
                parts.append(f"<figure><img src='{_href(name)}' width='{THUMB_WIDTH}' alt='frame {r['frame']}'>"
                             f"<figcaption>frame {r['frame']} ({when}p {r['p']:.3f}: {detail})</figcaption></figure>")
            parts.append("</div>")
            out["thumbnails"] = thumbs
            out["suspicious_frames"] = top
    pics = [(k, v) for k, v in files.items() if str(v).endswith(".png")]
    if pics:
        parts.append("<h2>Images</h2><div>")
        for k, v in pics:
            parts.append(f"<figure><img src='{_href(Path(v).name)}' style='max-width:480px;image-rendering:auto'>"
                         f"<figcaption>{esc(k.replace('_', ' '))}</figcaption></figure>")
        parts.append("</div>")
    links = [(k, v) for k, v in files.items() if k in ("metadata_html", "json")]
    if links:
        parts.append("<p>" + " · ".join(f"<a href='{_href(Path(v).name)}'>{esc(k.replace('_', ' '))}</a>"
                                          for k, v in links) + "</p>")
    page = d / f"{stem}.html"
    media.atomic_write_bytes(page, ("\n".join(parts) + "\n").encode("utf-8"))
    out["html"] = str(page)
    return out
