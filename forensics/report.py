"""Reports people look at: per-file JSON plus a PNG of the frame with its detector heatmap."""

from __future__ import annotations

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
    j = d / f"{stem}.json"
    j.write_text(json.dumps({**result, "report": files}, indent=2) + "\n")
    files["json"] = str(j)
    return files
