"""`forensics detect`: run the detectors on one file and fuse their evidence into a verdict.

The fused score comes from the fitted fusion model (forensics/detectors/fusion.py: logistic
regression on the detectors' calibrated logits, threshold at a stated FPR on real validation
data) when its checkpoint exists and was fitted on the loaded detectors: for videos the video
fusion (`fusion_video`, fitted on clips with the temporal detector among its inputs), else, or
when that does not apply, the image fusion; detectors outside the fusion used (e.g. temporal on
a video without a video fusion) are averaged in with it as calibrated logits. Without a usable
fusion model it is the mean of the detectors' calibrated logits. The verdict is `uncertain`
when the fused logit is within `UNCERTAIN_LOGIT` of the threshold's logit, i.e. when the odds
are within a factor e of the decision boundary.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from . import media
from .detectors import base as dbase
from .errors import MediaError, UsageError

UNCERTAIN_LOGIT = 1.0
DEFAULT_MAX_FRAMES = 32
# Videos: the temporal detector uses every sampled frame (runs of consecutive pairs); per-frame
# detectors score an evenly spread subset of about PER_FRAME_PATCHES 32x32 patches in all (at
# least PER_FRAME_MIN frames): every frame of a small clip, 4 frames of 240x320 or larger. The
# budget counts patches, not pixels, because each frame's grid is capped at FRAME_PATCHES (an
# evenly spread subgrid): a pixel budget gave a 640x360 clip 16 frames, 3.4x the CNN work of
# 720p. Per-frame detectors are what costs. 4 frames x 32 patches instead of every patch (220 on
# 640x360) moved no verdict and no detector's flag on 22 real 640x360 pans and 10 upscaled
# synthetic test clips (bench/detect_video.py --budget-check: the artifact clip logit moves by
# 0.14 on average against the full grids, 0.11 at 64 patches); 64 -> 32 took ~0.06 s off a
# 10 s clip's `detect`, 256 -> 64 ~0.7 s.
PER_FRAME_PATCHES = 4 * 32
FRAME_PATCHES = 32    # per video frame; images keep the detectors' own cap (MAX_PATCHES, 256)
PER_FRAME_MIN = 4
MIN_SIDE = 8  # below this a frame carries no usable forensic signal


def load_detectors(spec: str | None = None) -> dict[str, dbase.Detector]:
    """The named detectors (comma list) or every detector with a shipped checkpoint."""
    if spec:
        names = [s.strip() for s in spec.split(",") if s.strip()]
        for n in names:
            dbase.get_class(n)
        # a combiner (fusion) scores nothing itself: it is applied to the others automatically
        return {n: dbase.load(n) for n in names if not getattr(dbase.get_class(n), "combiner", False)}
    dets = {}
    for n in dbase.names():
        if getattr(dbase.get_class(n), "combiner", False):
            continue
        if (dbase.CHECKPOINT_ROOT / n / "config.json").is_file():
            dets[n] = dbase.load(n)
    if not dets:
        raise UsageError("no detector checkpoint is installed; train one with `forensics train frequency --corpus DIR`")
    return dets


def load_media(path: str | Path, max_frames: int = DEFAULT_MAX_FRAMES, prefetched=None,
               stride: int | None = None) -> dbase.Media:
    """`prefetched`: a `framepipe.FramePipe` started on (path, max_frames, stride), or None.
    `stride`: frames between consecutive sampled frames of a video's runs (None: ~1/8 s)."""
    if media.sniff(path) == "video":
        # Runs of frames ~1/8 s apart at spread-out positions: per-frame detectors see frames
        # from the whole clip, the temporal detector sees consecutive pairs.
        frames, index, gap, info = media.read_frame_runs(path, max_frames, prefetched=prefetched, stride=stride)
        h, w = frames[0].shape[:2]
        if min(h, w) < MIN_SIDE:
            raise MediaError(f"video is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed for analysis", path)
        return dbase.Media(str(path), "video", frames, info.fps, info.frames or len(frames),
                           frame_index=index, pair_gap=gap)
    kind, frames, meta = media.frames_of(path, max_frames=max_frames)
    frames = list(frames)
    h, w = frames[0].shape[:2]
    if min(h, w) < MIN_SIDE:
        raise MediaError(f"{kind} is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed for analysis", path)
    return dbase.Media(str(path), "image" if kind == "image" else "video", frames, meta.get("fps"),
                       meta.get("frames") or len(frames))


_FUSION: dict = {}


def load_fusion(name: str = "fusion"):
    """The shipped fusion model `name` (`fusion`: images; `fusion_video`: videos), or None (cached
    per process)."""
    key = "model" if name == "fusion" else name
    if key not in _FUSION:
        d = dbase.CHECKPOINT_ROOT / name
        _FUSION[key] = dbase.load(d) if (d / "config.json").is_file() else None
    return _FUSION[key]


def fuse(evidence: dict, detectors: dict, modality: str | None = None) -> tuple[float, float, dict]:
    """(p_synthetic, threshold, description of how they were combined). `modality` "video" tries the
    video fusion first (fitted on clips, temporal included); `info["model"]` names the fusion used.

    Evidence outside its calibrated range (`Evidence.calibrated` False, e.g. temporal pairs far
    from the spacing it was trained on) is left out while other evidence remains; if it would
    have flagged the file, `info["left_out_flags"]` names it and `verdict` says at most "uncertain"."""
    notes = []
    held = [n for n, e in evidence.items() if not e.calibrated]
    if len(held) == len(evidence):
        held = []                  # nothing else to go on: used as it is (its notes say why to doubt it)
    flags = [n for n in held if evidence[n].p_synthetic >= detectors[n].threshold]
    if held:
        evidence = {n: e for n, e in evidence.items() if n not in held}
        notes.append(f"{', '.join(held)} left out: outside its calibrated range (see its notes); "
                     "the rest fused without it")
    fusion, ok, why = None, False, None
    if modality == "video":
        fusion = load_fusion("fusion_video")
        ok, why = fusion.applies_to(detectors) if fusion is not None else (False, None)
        if ok and not all(n in evidence for n in fusion.inputs):
            left_out = all(n in evidence or n in held for n in fusion.inputs)   # noted above
            ok, why = False, (None if left_out else
                              f"fusion_video needs {', '.join(fusion.inputs)} evidence; {fusion.fallback}")
        if not ok:
            if why:
                notes.append(why)
            fusion = None
    if fusion is None:
        fusion = load_fusion()
        ok, why = fusion.applies_to(detectors) if fusion is not None else (False, None)
    if ok and all(n in evidence for n in fusion.inputs):
        zf = dbase.logit(fusion.combine({n: evidence[n].p_synthetic for n in fusion.inputs}))
        tf = dbase.logit(fusion.threshold)
        extra = [n for n in evidence if n not in fusion.inputs]
        logits = [zf] + [dbase.logit(evidence[n].p_synthetic) for n in extra]
        thr_logits = [tf] + [dbase.logit(detectors[n].threshold) for n in extra]
        info = {"method": "logistic", "model": fusion.name, "inputs": fusion.inputs,
                "threshold_fpr": fusion.config.get("threshold_fpr")}
        if extra:
            info.update(method="logistic+mean", averaged_with=extra)
    else:
        logits = [dbase.logit(e.p_synthetic) for e in evidence.values()]
        thr_logits = [dbase.logit(detectors[n].threshold) for n in evidence]
        info = {"method": "mean_logit", "model": None, "inputs": list(evidence)}
        if why or (fusion is not None and ok):
            notes.append(why or f"fusion needs {', '.join(fusion.inputs)} evidence; used the mean calibrated logit")
    if held:
        info.update(left_out=held, left_out_flags=flags)
    if notes:
        info["note"] = "; ".join(notes)
    return float(dbase.sigmoid(np.mean(logits))), float(dbase.sigmoid(np.mean(thr_logits))), info


def _per_frame_plan(n: int, h: int, w: int) -> tuple[list[int] | None, int | None]:
    """For n sampled video frames of h x w: the positions of the frames per-frame detectors score
    (None: all) and their per-frame patch cap (None: the detectors' own); see PER_FRAME_PATCHES."""
    per_frame = min(FRAME_PATCHES, max(1, (h // 32) * (w // 32)))
    k = max(PER_FRAME_MIN, PER_FRAME_PATCHES // per_frame)
    if k >= n:
        return None, (FRAME_PATCHES if per_frame >= FRAME_PATCHES else None)
    return [int(i) for i in np.linspace(0, n - 1, k).round()], FRAME_PATCHES


def per_frame_subset(m: dbase.Media) -> dbase.Media:
    """The frames per-frame detectors score, with their per-frame patch cap (see
    PER_FRAME_PATCHES); the media itself for images."""
    if m.modality != "video":
        return m
    h, w = m.frames[0].shape[:2]
    picks, cap = _per_frame_plan(len(m.frames), h, w)
    if picks is None:
        return m if cap is None else dataclasses.replace(m, max_patches=cap)
    return dataclasses.replace(m, frames=[m.frames[i] for i in picks], max_patches=cap,
                               frame_index=[m.frame_index[i] for i in picks] if m.frame_index else None)


def _score_while_decoding(path, max_frames: int, pipe, detectors: dict[str, dbase.Detector],
                          stride: int | None = None) -> None:
    """While the frame pipe's ffmpeg still decodes, score the runs it has written (inside
    `dbase.frame_memo()`, so the final pass reuses this work): on a 10 s 640x360 clip the
    detectors are loaded ~50 ms before the last run is decoded. Only whole runs are scored, so
    runs and per-frame picks are those of the final pass. This is only a head start: any error
    here ends it, and the final pass redoes (and reports) everything it did not finish."""
    done = 0  # frames (whole runs) scored
    while True:
        got = pipe.available(path, max_frames, stride=stride)
        if got is None:
            return
        raw, want, gap = got
        # one run at a time, so that the final pass (two threads) takes over soon after the decode
        k = next(i + 1 for i in range(done, len(want)) if i + 1 == len(want) or want[i + 1] - want[i] != gap)
        if k >= len(want):
            return
        if len(raw) < k:
            time.sleep(0.002)
            continue
        info = pipe.info
        try:
            frames = [np.frombuffer(b, np.uint8).reshape(info.height, info.width, 3) for b in raw[:k]]
            m = dbase.Media(str(path), "video", frames, info.fps, info.frames, frame_index=want[:k], pair_gap=gap)
            picks, cap = _per_frame_plan(len(want), info.height, info.width)
            keep = [i for i in (range(k) if picks is None else picks) if i < k]
            still = dataclasses.replace(m, frames=[frames[i] for i in keep], max_patches=cap,
                                        frame_index=[want[i] for i in keep])   # never empty: picks start at 0
            score_media(m, detectors, still)
        except Exception:  # noqa: BLE001 - a head start only (see the docstring)
            return
        done = k


def verdict(p: float, threshold: float, fusion_info: dict | None = None) -> str:
    """real / uncertain / synthetic from the fused p; "uncertain" instead of "real" when evidence
    that `fuse` left out (outside its calibrated range) flags the file."""
    d = dbase.logit(p) - dbase.logit(threshold)
    if abs(d) < UNCERTAIN_LOGIT:
        return "uncertain"
    if d < 0 and fusion_info and fusion_info.get("left_out_flags"):
        return "uncertain"
    return "synthetic" if d > 0 else "real"


def score_media(m: dbase.Media, detectors: dict[str, dbase.Detector], still: dbase.Media | None = None) -> dict:
    """Evidence of every detector that handles m's modality and has something to say (not None,
    e.g. temporal on one frame). Per-frame detectors see `still` (default: per_frame_subset(m));
    detectors that use frame runs see every sampled frame."""
    still = per_frame_subset(m) if still is None else still
    evidence = {n: d.score(m if getattr(d, "uses_frame_runs", False) else still)
                for n, d in detectors.items() if m.modality in d.modalities}
    return {n: e for n, e in evidence.items() if e is not None}


def detect_file(path: str | Path, detectors: dict[str, dbase.Detector], *,
                max_frames: int = DEFAULT_MAX_FRAMES, report_dir: str | Path | None = None,
                prefetched=None, stride: int | None = None) -> dict:
    t0 = time.time()
    with dbase.frame_memo():
        if prefetched is not None:
            _score_while_decoding(path, max_frames, prefetched, detectors, stride)
        m = load_media(path, max_frames, prefetched, stride)
        still = per_frame_subset(m)
        evidence = score_media(m, detectors, still)
    if not evidence and detectors:
        raise UsageError(f"none of the chosen detectors handles {m.modality}")
    p = thr = None  # no detectors (an empty dict): metadata evidence only
    fusion_info = None
    if evidence:
        p, thr, fusion_info = fuse(evidence, detectors, m.modality)
    out = {
        "path": str(path),
        "modality": m.modality,
        "verdict": verdict(p, thr, fusion_info) if evidence else "uncertain",
        "p_synthetic": round(p, 4) if evidence else None,
        "threshold": round(thr, 4) if evidence else None,
        "detectors": {n: e.to_json() for n, e in evidence.items()},
        "fusion": fusion_info,
        "frames_scored": len(m.frames),
        "frames_per_frame_detectors": len(still.frames),
        # frame numbers that per-frame detectors' `per_frame` lists refer to (videos)
        "per_frame_index": ([int(i) for i in still.frame_index] if still.frame_index is not None
                            else list(range(len(still.frames)))) if m.modality == "video" else None,
        "size": [int(m.frames[0].shape[1]), int(m.frames[0].shape[0])],
        "watermark": None,
        "provenance": None,
        "models": {n: dbase.card_sha256(d.directory) for n, d in detectors.items() if d.directory},
    }
    if fusion_info and fusion_info.get("left_out_flags"):
        out["reason"] = (f"fused detector score; {', '.join(fusion_info['left_out_flags'])} flags the file "
                         "but is outside its calibrated range, so the verdict is at most uncertain")
    if fusion_info and fusion_info["model"]:
        out["models"][fusion_info["model"]] = dbase.card_sha256(load_fusion(fusion_info["model"]).directory)
    # Metadata and compression evidence (forensics/metadata.py); a decisive generator signature
    # forces a synthetic verdict, stated in "reason".
    from . import metadata

    metadata.apply_to_result(out, metadata.safe_analyze(path, m.frames[0] if m.modality == "image" else None))
    if report_dir:
        from . import report

        out["report"] = report.write_detect_report(report_dir, m, out, evidence)
    out["seconds"] = round(time.time() - t0, 3)
    return out
