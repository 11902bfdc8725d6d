"""PNG figures drawn with OpenCV and numpy (matplotlib is not a dependency): line plots (ROC,
sweep curves), reliability diagrams, matrices as annotated heatmaps, bar charts and image grids
(average spectra). Every function returns an RGB uint8 array; `save` writes it as PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 128), (128, 128, 0)]
BLACK, GREY, LIGHT, WHITE = (0, 0, 0), (120, 120, 120), (225, 225, 225), (255, 255, 255)


def save(img: np.ndarray, path: str | Path) -> Path:
    from . import media

    return media.write_png(Path(path), img)


def _text(img, s, org, scale=0.45, color=BLACK, thick=1, anchor="left"):
    (w, h), _ = cv2.getTextSize(s, FONT, scale, thick)
    x, y = org
    if anchor == "center":
        x -= w // 2
    elif anchor == "right":
        x -= w
    cv2.putText(img, s, (int(x), int(y)), FONT, scale, color, thick, cv2.LINE_AA)
    return w, h


def _vtext(img, s, center, scale=0.45):
    (w, h), base = cv2.getTextSize(s, FONT, scale, 1)
    tile = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(tile, s, (2, h + 2), FONT, scale, BLACK, 1, cv2.LINE_AA)
    tile = np.ascontiguousarray(np.rot90(tile))
    th, tw = tile.shape[:2]
    y0, x0 = int(center[1] - th / 2), int(center[0] - tw / 2)
    y0, x0 = max(0, y0), max(0, x0)
    th, tw = min(th, img.shape[0] - y0), min(tw, img.shape[1] - x0)
    img[y0:y0 + th, x0:x0 + tw] = np.minimum(img[y0:y0 + th, x0:x0 + tw], tile[:th, :tw])


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def line_plot(series, *, title="", xlabel="", ylabel="", xlim=None, ylim=None, diagonal=False,
              logx=False, size=(640, 480), markers=False, hline=None) -> np.ndarray:
    """series: [(label, xs, ys), ...]. Returns the figure as RGB."""
    W, H = size
    img = np.full((H, W, 3), 255, np.uint8)
    L, R, T, B = 62, 150, 34, 48
    pw, ph = W - L - R, H - T - B
    xs_all = np.concatenate([np.asarray(s[1], float) for s in series]) if series else np.array([0.0, 1.0])
    ys_all = np.concatenate([np.asarray(s[2], float) for s in series]) if series else np.array([0.0, 1.0])
    fx = (lambda v: np.log10(np.maximum(v, 1e-12))) if logx else (lambda v: np.asarray(v, float))
    x0, x1 = xlim if xlim else (np.nanmin(xs_all), np.nanmax(xs_all))
    y0, y1 = ylim if ylim else (np.nanmin(ys_all), np.nanmax(ys_all))
    x0, x1 = float(fx(x0)), float(fx(x1))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def px(x, y):
        return (L + (fx(x) - x0) / (x1 - x0) * pw, T + ph - (np.asarray(y, float) - y0) / (y1 - y0) * ph)

    for k in range(6):  # grid and ticks
        gx = x0 + (x1 - x0) * k / 5
        X = int(L + pw * k / 5)
        cv2.line(img, (X, T), (X, T + ph), LIGHT, 1)
        _text(img, _fmt(10 ** gx if logx else gx), (X, T + ph + 16), 0.4, anchor="center")
        gy = y0 + (y1 - y0) * k / 5
        Y = int(T + ph - ph * k / 5)
        cv2.line(img, (L, Y), (L + pw, Y), LIGHT, 1)
        _text(img, _fmt(gy), (L - 5, Y + 4), 0.4, anchor="right")
    cv2.rectangle(img, (L, T), (L + pw, T + ph), BLACK, 1)
    if diagonal:
        a, b = px(np.array([10 ** x0 if logx else x0]), [y0]), px(np.array([10 ** x1 if logx else x1]), [y1])
        cv2.line(img, (int(a[0][0]), int(a[1][0])), (int(b[0][0]), int(b[1][0])), GREY, 1, cv2.LINE_AA)
    if hline is not None:
        Y = int(px(np.array([10 ** x0 if logx else x0]), [hline])[1][0])
        cv2.line(img, (L, Y), (L + pw, Y), GREY, 1, cv2.LINE_AA)
    for i, (label, xs, ys) in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        X, Y = px(xs[ok], ys[ok])
        pts = np.stack([np.clip(X, L, L + pw), np.clip(Y, T, T + ph)], 1).round().astype(np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, c, 2, cv2.LINE_AA)
        if markers or len(pts) == 1:
            for p in pts:
                cv2.circle(img, tuple(int(v) for v in p), 3, c, -1, cv2.LINE_AA)
        ly = T + 14 + 18 * i
        cv2.line(img, (L + pw + 10, ly - 4), (L + pw + 28, ly - 4), c, 3)
        _text(img, str(label)[:18], (L + pw + 33, ly), 0.4)
    _text(img, title, (W // 2, 22), 0.55, anchor="center", thick=1)
    _text(img, xlabel, (L + pw // 2, H - 10), 0.45, anchor="center")
    _vtext(img, ylabel, (14, T + ph // 2))
    return img


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], title="ROC") -> np.ndarray:
    return line_plot([(k, f, t) for k, (f, t) in curves.items()], title=title, xlabel="false-positive rate",
                     ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1), diagonal=True)


def reliability_plot(bins: dict[str, list[dict]], title="Reliability") -> np.ndarray:
    series = []
    for k, bs in bins.items():
        pts = [(b["p_mean"], b["observed"]) for b in bs if b["n"]]
        if pts:
            series.append((k, [p[0] for p in pts], [p[1] for p in pts]))
    return line_plot(series, title=title, xlabel="predicted p_synthetic", ylabel="observed synthetic rate",
                     xlim=(0, 1), ylim=(0, 1), diagonal=True, markers=True)


def matrix_plot(M, rows, cols, *, title="", vmin=0.0, vmax=1.0, fmt="{:.2f}", xlabel="", ylabel="",
                cell=56) -> np.ndarray:
    """An annotated heatmap of M (rows × cols); NaN cells are grey."""
    M = np.asarray(M, float)
    rl = max([cv2.getTextSize(str(r), FONT, 0.42, 1)[0][0] for r in rows] + [20]) + 30
    cl = max([cv2.getTextSize(str(c), FONT, 0.42, 1)[0][0] for c in cols] + [20]) + 14
    W = rl + cell * len(cols) + 20
    H = 40 + cl + cell * len(rows) + 30
    W = max(W, cv2.getTextSize(title, FONT, 0.55, 1)[0][0] + 20)
    img = np.full((H, W, 3), 255, np.uint8)
    top = 40 + cl
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = M[i, j]
            x, y = rl + j * cell, top + i * cell
            if np.isfinite(v):
                t = np.clip((v - vmin) / (vmax - vmin + 1e-12), 0, 1)
                c = cv2.applyColorMap(np.array([[int(t * 255)]], np.uint8), cv2.COLORMAP_VIRIDIS)[0, 0][::-1]
                c = tuple(int(a) for a in c)
                cv2.rectangle(img, (x, y), (x + cell, y + cell), c, -1)
                _text(img, fmt.format(v), (x + cell // 2, y + cell // 2 + 5), 0.4,
                      color=BLACK if t > 0.6 else WHITE, anchor="center")
            else:
                cv2.rectangle(img, (x, y), (x + cell, y + cell), LIGHT, -1)
            cv2.rectangle(img, (x, y), (x + cell, y + cell), WHITE, 1)
    for i, r in enumerate(rows):
        _text(img, str(r), (rl - 6, top + i * cell + cell // 2 + 5), 0.42, anchor="right")
    for j, c in enumerate(cols):
        (w, h), base = cv2.getTextSize(str(c), FONT, 0.42, 1)
        tile = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
        cv2.putText(tile, str(c), (2, h + 2), FONT, 0.42, BLACK, 1, cv2.LINE_AA)
        tile = np.ascontiguousarray(np.rot90(tile))
        th, tw = tile.shape[:2]
        x0 = rl + j * cell + cell // 2 - tw // 2
        y0 = top - 6 - th
        img[y0:y0 + th, x0:x0 + tw] = np.minimum(img[y0:y0 + th, x0:x0 + tw], tile)
    _text(img, title, (W // 2, 22), 0.55, anchor="center")
    if xlabel:
        _text(img, xlabel, (rl + cell * len(cols) // 2, 38), 0.42, color=GREY, anchor="center")
    if ylabel:
        _text(img, ylabel, (6, H - 10), 0.42, color=GREY)
    return img


def bar_chart(values: dict[str, float], *, title="", vmax=1.0, width=420) -> np.ndarray:
    items = list(values.items())
    lab = max([cv2.getTextSize(str(k), FONT, 0.42, 1)[0][0] for k, _ in items] + [20]) + 14
    H = 40 + 22 * len(items) + 10
    img = np.full((H, lab + width + 60, 3), 255, np.uint8)
    for i, (k, v) in enumerate(items):
        y = 40 + 22 * i
        _text(img, str(k), (lab - 6, y + 14), 0.42, anchor="right")
        w = int(width * max(0.0, min(float(v) / vmax, 1.0)))
        cv2.rectangle(img, (lab, y + 3), (lab + w, y + 18), PALETTE[i % len(PALETTE)], -1)
        _text(img, f"{v:.3f}", (lab + w + 4, y + 15), 0.4)
    _text(img, title, (img.shape[1] // 2, 22), 0.55, anchor="center")
    return img


def image_grid(tiles: dict[str, np.ndarray], *, title="", scale=6, cols=5, colormap=cv2.COLORMAP_INFERNO,
               shared_range=True) -> np.ndarray:
    """2-D arrays → colour-mapped tiles with labels (one colour range for all when shared_range)."""
    if not tiles:
        return np.full((40, 200, 3), 255, np.uint8)
    arrs = {k: np.asarray(v, float) for k, v in tiles.items()}
    lo = min(np.nanpercentile(a, 1) for a in arrs.values())
    hi = max(np.nanpercentile(a, 99) for a in arrs.values())
    th, tw = next(iter(arrs.values())).shape
    th, tw = th * scale, tw * scale
    cols = min(cols, len(arrs))
    rows = (len(arrs) + cols - 1) // cols
    img = np.full((40 + rows * (th + 26), cols * (tw + 10) + 10, 3), 255, np.uint8)
    for i, (k, a) in enumerate(arrs.items()):
        a_lo, a_hi = (lo, hi) if shared_range else (np.nanpercentile(a, 1), np.nanpercentile(a, 99))
        t = np.clip((a - a_lo) / (a_hi - a_lo + 1e-12), 0, 1)
        tile = cv2.applyColorMap((t * 255).astype(np.uint8), colormap)[..., ::-1]
        tile = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_NEAREST)
        r, c = divmod(i, cols)
        x, y = 10 + c * (tw + 10), 40 + r * (th + 26)
        img[y + 18:y + 18 + th, x:x + tw] = tile
        _text(img, str(k)[:24], (x + tw // 2, y + 13), 0.42, anchor="center")
    _text(img, title, (img.shape[1] // 2, 24), 0.55, anchor="center")
    return img
