"""`forensics evaluate --corpus DIR --out DIR`: how well do the detectors work, where do they fail?

On a corpus split (default `test`: real photos and synthetic seeds no detector was fitted on):

1. Scores: every detector's raw logit z and calibrated p per item, and the fused score (the
   shipped fusion model when it was fitted on these detectors, else the mean calibrated logit).
2. Metrics (forensics/metrics.py) overall, per architecture and per family (real test items vs
   that group's items): AUC, AP, EER, accuracy / TPR / FPR at the detector's threshold, TPR at
   1 % and 5 % FPR, ECE; ROC curves and a reliability diagram.
3. Attribution: the frequency detector's multinomial model, a confusion matrix over the
   architectures (and `real`), accuracy on synthetic items.
4. Robustness sweeps: every item (real and synthetic alike) perturbed by forensics/attacks.py
   (JPEG 95→30, resize 0.25→2, blur, noise, crop, …), then scored again.
5. Leave-one-out (`--leave-one-out family`): for each family F, fit the detectors (and a fusion)
   on the corpus without F, then measure AUC on every family's test items — the row F of the
   cross-generator matrix; its diagonal is generalization to an unseen family.
6. Real photos at full resolution: the test-split bundled photos, whole and as native-resolution
   crops, and the share the detectors call synthetic (their false-positive rate).
7. Output: results.json, PNG plots and index.html in --out.
"""

from __future__ import annotations

import copy
import datetime as _dt
import html
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, metrics, plots
from .corpus import Corpus
from .detectors import base as dbase
from .detectors import calibration as cal
from .errors import UsageError

DEFAULT_SWEEP = ("jpeg:95", "jpeg:75", "jpeg:50", "jpeg:30", "resize:0.25", "resize:0.5", "resize:0.75",
                 "resize:1.5", "resize:2", "blur:0.5", "blur:1", "blur:2", "noise:2", "noise:5", "noise:10",
                 "crop:0.5", "crop:0.25", "webp:80")
GOALS = {"in_distribution_auc_min": 0.99, "leave_one_out_mean_auc_min": 0.90, "attacked_auc_min": 0.95,
         "attribution_accuracy_min": 0.90, "real_full_resolution_fpr_max": 0.05}
FUSED = "fused"


def _log(progress, msg):
    if progress:
        sys.stderr.write(f"evaluate: {msg}\n")
        sys.stderr.flush()


def parse_attacks(spec: str | None) -> list[str]:
    from . import attacks

    if spec is None or spec.strip().lower() == "default":
        return list(DEFAULT_SWEEP)
    if spec.strip().lower() in ("", "none"):
        return []
    out = [s.strip() for s in spec.split(",") if s.strip()]
    for s in out:
        attacks.parse(s)  # raises UsageError on a bad spec
    return out


def load_detectors(spec=None) -> dict[str, dbase.Detector]:
    """Named detectors (comma list, or {name: folder}) or every shipped one; fusion excluded."""
    if isinstance(spec, dict):
        return {n: d if isinstance(d, dbase.Detector) else dbase.load(d) for n, d in spec.items()}
    if spec:
        names = [s.strip() for s in str(spec).split(",") if s.strip()]
    else:
        names = [n for n in dbase.names() if (dbase.CHECKPOINT_ROOT / n / "config.json").is_file()]
    out = {}
    for n in names:
        cls = dbase.get_class(n)
        if getattr(cls, "combiner", False):
            continue
        if not hasattr(cls, "item_logits"):  # no item-level scoring interface (e.g. temporal, video only)
            if spec:
                raise UsageError(f"the {n} detector cannot be evaluated here (it has no item-level scores)")
            continue
        out[n] = dbase.load(n)
    if not out:
        raise UsageError("no detector to evaluate; train one with `forensics train artifact --corpus DIR`")
    return out


def load_fusion(detectors: dict, fusion=None):
    """The fusion model when it was fitted on exactly these detectors, else None (and why)."""
    from .detectors.fusion import FusionDetector

    if fusion is False:
        return None, "fusion disabled"
    if isinstance(fusion, FusionDetector):
        f = fusion
    else:
        d = Path(fusion) if fusion else dbase.CHECKPOINT_ROOT / "fusion"
        if not (d / "config.json").is_file():
            return None, "no fusion checkpoint: fused = mean calibrated logit"
        f = FusionDetector.load(d)
    ok, why = f.applies_to(detectors)
    if not ok:
        return None, why
    f.components = {n: detectors[n] for n in f.inputs}
    return f, None


def _supports(det, row) -> bool:
    return row["modality"] in det.modalities


class _Scores:
    """z / p per detector over a list of item frames (NaN where a detector does not apply)."""

    def __init__(self, detectors, fusion, rows, items):
        self.det, self.fusion, self.rows = detectors, fusion, rows
        n = len(rows)
        self.z, self.p = {}, {}
        for name, d in detectors.items():
            m = np.array([_supports(d, r) for r in rows], bool)
            z = np.full(n, np.nan)
            if m.any():
                z[m] = d.item_logits([items[i] for i in np.nonzero(m)[0]])
            self.z[name] = z
            self.p[name] = np.where(m, d.calibrate(np.nan_to_num(z)), np.nan)
        # fused
        if fusion is not None:
            X = np.stack([np.clip(_logit(self.p[n]), -13.8, 13.8) for n in fusion.inputs], 1)
            zf = fusion.fused_logit(np.nan_to_num(X))
            zf[np.isnan(X).any(1)] = np.nan
            self.z[FUSED], self.p[FUSED] = zf, dbase.sigmoid(zf)
            self.thr_fused = fusion.threshold
        elif len(detectors) > 1:
            L = np.stack([np.clip(_logit(self.p[n]), -13.8, 13.8) for n in detectors], 1)
            zf = np.nanmean(L, 1)
            self.z[FUSED], self.p[FUSED] = zf, dbase.sigmoid(zf)
            self.thr_fused = float(dbase.sigmoid(np.mean([dbase.logit(d.threshold) for d in detectors.values()])))

    def threshold(self, name) -> float:
        return self.thr_fused if name == FUSED else self.det[name].threshold

    def names(self):
        return list(self.z)


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _metrics_for(sc: _Scores, y, groups: np.ndarray) -> dict:
    out = {}
    for name in sc.names():
        z, p, thr = sc.z[name], sc.p[name], sc.threshold(name)
        ok = ~np.isnan(z)
        res = {"threshold": thr, "overall": metrics.binary_metrics(y[ok], z[ok], p[ok], thr)}
        per = {}
        for g in sorted(set(groups[(y == 1) & ok].tolist())):
            m = ok & ((groups == g) | (y == 0))
            per[g] = metrics.binary_metrics(y[m], z[m], p[m], thr)
        res["groups"] = per
        out[name] = res
    return out


def _split_by(d: dict, key: str) -> dict:
    return {n: {"threshold": v["threshold"], "overall": v["overall"], key: v["groups"]} for n, v in d.items()}


def _view(corpus: Corpus, rows: list[dict]) -> Corpus:
    v = copy.copy(corpus)
    v.rows = rows
    return v


# ---------------------------------------------------------------------------------------------


def evaluate(corpus_dir, out_dir, *, detectors=None, fusion=None, attacks=None, leave_one_out=None,
             loo_detectors=("frequency", "artifact"), loo_opts: dict | None = None, split: str = "test",
             max_per_arch: int | None = None, full_resolution: bool = True, seed: int = 0,
             progress: bool = True) -> dict:
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(corpus_dir)
    dets = load_detectors(detectors)
    fus, fusion_note = load_fusion(dets, fusion)
    attack_specs = parse_attacks(attacks) if not isinstance(attacks, (list, tuple)) else list(attacks)
    if leave_one_out and str(leave_one_out).lower() != "none":
        loo_groups(corpus, str(leave_one_out))  # fail on a bad request before hours of work
    rng = np.random.default_rng(seed)
    rows = corpus.select(split=split)
    if max_per_arch:
        by: dict[str, list[dict]] = {}
        for r in rows:
            by.setdefault(cal.arch_of(r), []).append(r)
        rows = [r for g in by.values() for r in [g[i] for i in sorted(rng.permutation(len(g))[:max_per_arch])]]
    cal.require_both(rows, split)
    rows = [r for r in rows if any(_supports(d, r) for d in dets.values())]
    _log(progress, f"{len(rows)} {split} items, detectors {', '.join(dets)}"
                   f"{' + fusion' if fus else ''}")
    items = cal.item_frames(corpus, rows)
    y = cal.labels(rows)
    arch = np.array([cal.arch_of(r) for r in rows])
    fam = np.array(["real" if r["label"] == "real" else r["family"] for r in rows])

    # 1-2. clean scores and metrics
    sc = _Scores(dets, fus, rows, items)
    by_arch = _metrics_for(sc, y, arch)
    by_fam = _metrics_for(sc, y, fam)
    results: dict = {
        "corpus": str(corpus_dir), "corpus_name": corpus.card.get("name"), "split": split,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "detectors": {n: {"checkpoint": str(d.directory) if d.directory else None,
                          "sha256": dbase.card_sha256(d.directory) if d.directory else None,
                          "threshold": d.threshold, "threshold_fpr": d.config.get("threshold_fpr")}
                      for n, d in dets.items()},
        "fusion": ({"checkpoint": str(fus.directory), "inputs": fus.inputs, "weights": fus.config["weights"],
                    "threshold": fus.threshold} if fus else {"note": fusion_note}),
        "counts": {"items": len(rows), "real": int((y == 0).sum()),
                   "by_architecture": {a: int((arch == a).sum()) for a in sorted(set(arch.tolist()))}},
        "metrics": {n: {"threshold": by_arch[n]["threshold"], "overall": by_arch[n]["overall"],
                        "by_architecture": by_arch[n]["groups"], "by_family": by_fam[n]["groups"]}
                    for n in sc.names()},
        "files": {},
    }
    files = results["files"]
    # ROC + reliability
    curves = {}
    for n in sc.names():
        ok = ~np.isnan(sc.z[n])
        f, t, _ = metrics.roc_curve(y[ok], sc.z[n][ok])
        curves[f"{n} ({metrics.auc(y[ok], sc.z[n][ok]):.3f})"] = (f, t)
    files["roc"] = str(plots.save(plots.roc_plot(curves, f"ROC, {split} split"), out / "roc.png"))
    primary = FUSED if FUSED in sc.z else next(iter(dets))
    curves = {}
    for a in sorted(set(arch.tolist()) - {"real"}):
        m = ((arch == a) | (y == 0)) & ~np.isnan(sc.z[primary])
        f, t, _ = metrics.roc_curve(y[m], sc.z[primary][m])
        curves[f"{a} ({metrics.auc(y[m], sc.z[primary][m]):.3f})"] = (f, t)
    files["roc_by_architecture"] = str(plots.save(plots.roc_plot(curves, f"ROC per architecture ({primary})"),
                                                  out / "roc_by_architecture.png"))
    rel = {n: metrics.reliability(y[~np.isnan(sc.p[n])], sc.p[n][~np.isnan(sc.p[n])]) for n in sc.names()}
    results["reliability"] = rel
    files["reliability"] = str(plots.save(plots.reliability_plot(rel, "Reliability (calibrated p)"),
                                          out / "reliability.png"))
    archs = sorted(set(arch.tolist()) - {"real"})
    M = np.array([[by_arch[n]["groups"].get(a, {}).get("auc") or np.nan for a in archs] for n in sc.names()])
    files["auc_by_architecture"] = str(plots.save(
        plots.matrix_plot(M, sc.names(), archs, title=f"AUC per architecture ({split})", vmin=0.5, vmax=1.0,
                          fmt="{:.3f}"), out / "auc_by_architecture.png"))

    # 3. attribution
    _log(progress, "attribution")
    att = _attribution(dets, rows, items, arch, out, files)
    if att:
        results["attribution"] = att

    # spectra of the evaluated items
    from .detectors import frequency as F

    spectra = F.spectra_by_architecture(corpus, [r for r in rows if r["modality"] == "image"], seed=seed)
    if spectra:
        files["spectra"] = str(plots.save(F.spectra_figure(spectra), out / "spectra.png"))

    # 4. robustness
    if attack_specs:
        results["robustness"] = _robustness(dets, fus, rows, items, y, attack_specs, seed, out, files, progress,
                                            clean={n: results["metrics"][n]["overall"] for n in sc.names()})

    # 6. real photos at full resolution
    if full_resolution:
        _log(progress, "full-resolution real photos")
        results["full_resolution_real"] = _full_resolution(dets, fus, corpus, split, seed)

    # 5. leave one out
    if leave_one_out and str(leave_one_out).lower() != "none":
        results["leave_one_out"] = leave_one_out_matrix(corpus, leave_one_out, detectors=loo_detectors,
                                                        opts=loo_opts, seed=seed, out=out, files=files,
                                                        progress=progress, split=split)

    results["goals"] = _goals(results)
    results["seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    files["json"] = str(out / "results.json")
    files["html"] = str(write_html(results, out / "index.html"))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    return results


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _attribution(dets, rows, items, arch, out, files) -> dict:
    """Confusion matrices of each detector's attribution and of their combination (the normalized
    product of the detectors' distributions over their common classes)."""
    idx = np.nonzero(np.array([r["modality"] == "image" for r in rows]))[0]
    true = arch[idx]
    dists = {}
    for n, d in dets.items():
        classes = list(d.config.get("classes") or [])
        if hasattr(d, "item_attribution") and len(classes) > 2:
            dists[n] = (classes, d.item_attribution([items[i] for i in idx]))
    if len(dists) > 1:
        common = sorted(set.intersection(*[set(c) for c, _ in dists.values()]))
        if len(common) > 2:
            logp = sum(np.log(np.clip(P[:, [c.index(k) for k in common]], 1e-12, 1)) for c, P in dists.values())
            e = np.exp(logp - logp.max(1, keepdims=True))
            dists["combined"] = (common, e / e.sum(1, keepdims=True))
    res = {}
    for n, (classes, P) in dists.items():
        pred = np.array(classes)[P.argmax(1)]
        true_classes = sorted(set(true.tolist()), key=lambda c: (c != "real", c))
        cols = sorted(classes, key=lambda c: (c != "real", c))
        C = np.zeros((len(true_classes), len(cols)), int)
        for t, p in zip(true, pred):
            C[true_classes.index(t), cols.index(p)] += 1
        acc = cal.attribution_accuracy(P, classes, true)
        R = C / np.maximum(C.sum(1, keepdims=True), 1)
        a = acc["attribution_accuracy"]
        files[f"attribution_confusion_{n}"] = str(plots.save(
            plots.matrix_plot(R, true_classes, cols, title=f"Attribution ({n}): accuracy on synthetic "
                              f"{'n/a' if a is None else round(a, 3)}", xlabel="predicted", ylabel="rows: true",
                              fmt="{:.2f}"), out / f"attribution_confusion_{n}.png"))
        res[n] = {"classes": cols, "true_classes": true_classes, "confusion": C.tolist(),
                  "accuracy_synthetic": a, "accuracy_with_real": acc["attribution_accuracy_with_real"],
                  "unseen_architectures": sorted(set(true.tolist()) - set(classes))}
    if not res:
        return {}
    best = "combined" if "combined" in res else ("frequency" if "frequency" in res else next(iter(res)))
    return {"headline": best, "accuracy_synthetic": res[best]["accuracy_synthetic"], "by_detector": res}


def _robustness(dets, fus, rows, items, y, specs, seed, out, files, progress, clean) -> dict:
    from . import attacks as A

    res = {}
    for k, spec in enumerate(specs):
        fn = A.parse(spec)
        rng = np.random.default_rng(seed + 1000 + k)
        attacked = []
        for frames in items:
            try:
                attacked.append(fn(frames, rng))
            except UsageError:  # a clip attack on an image: leave it as it is
                attacked.append(frames)
        sc = _Scores(dets, fus, rows, attacked)
        res[spec] = {}
        for n in sc.names():
            ok = ~np.isnan(sc.z[n])
            m = metrics.binary_metrics(y[ok], sc.z[n][ok], sc.p[n][ok], sc.threshold(n))
            res[spec][n] = {k2: m[k2] for k2 in ("auc", "ap", "accuracy_at_threshold", "tpr_at_threshold",
                                                  "fpr_at_threshold", "tpr_at_fpr_5pct", "ece")}
        _log(progress, f"attack {spec}: " + ", ".join(f"{n} AUC {res[spec][n]['auc']:.3f}" for n in sc.names()))
    # sweep curves per attack kind (single-step specs only)
    kinds: dict[str, list[tuple[float, str]]] = {}
    for spec in specs:
        if "+" in spec:
            continue
        name, _, arg = spec.partition(":")
        kinds.setdefault(name, []).append((float(arg) if arg else float(A.DEFAULTS[name]), spec))
    names = list(next(iter(res.values())).keys()) if res else []
    for kind, pts in kinds.items():
        pts.sort()
        for metric in ("auc",):
            series = [(n, [v for v, _ in pts], [res[s][n][metric] if res[s][n][metric] is not None else np.nan
                                                 for _, s in pts]) for n in names]
            img = plots.line_plot(series, title=f"{metric.upper()} under {kind}", xlabel=f"{kind} parameter",
                                  ylabel=metric.upper(), ylim=(0.4, 1.0), markers=True,
                                  logx=kind in ("resize", "crop"), hline=clean.get(FUSED, clean[names[0]])["auc"]
                                  if names else None)
            files[f"sweep_{kind}"] = str(plots.save(img, out / f"sweep_{kind}.png"))
    return res


def _full_resolution(dets, fus, corpus, split, seed, crops_per_photo: int = 24, crop: int = 128) -> dict:
    from . import realdata

    srcs = [s for s in realdata.bundled_sources() if s.split == split]
    rng = np.random.default_rng(seed)
    whole, crops, names = [], [], []
    for s in srcs:
        img = s.load()
        whole.append(img[None])
        names.append(s.name)
        h, w = img.shape[:2]
        c = min(crop, h, w)
        for _ in range(crops_per_photo):
            yy, xx = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            crops.append(img[yy:yy + c, xx:xx + c][None])
    if not whole:
        return {"note": f"no bundled photo in the {split} split"}
    out = {"photos": names, "crop_side": crop, "crops": len(crops)}
    for what, items in (("whole_photos", whole), ("native_crops", crops)):
        rows = [{"modality": "image", "label": "real"}] * len(items)
        sc = _Scores(dets, fus, rows, items)
        out[what] = {n: {"fpr_at_threshold": float((sc.p[n] >= sc.threshold(n)).mean()),
                         "mean_p": float(np.mean(sc.p[n]))} for n in sc.names()}
        if what == "whole_photos":
            for n in sc.names():
                out[what][n]["p"] = {nm: round(float(p), 4) for nm, p in zip(names, sc.p[n])}
    return out


# ---------------------------------------------------------------------------------------------


def loo_groups(corpus: Corpus, by: str):
    """(key, group-of-row function, all groups, groups to hold out); UsageError when unusable."""
    key = "architecture" if by == "architecture" else "family"
    group = (lambda r: cal.arch_of(r)) if key == "architecture" else (lambda r: r["family"])
    groups = sorted({group(r) for r in corpus.rows if r["label"] == "synthetic"})
    held = groups if by in ("family", "architecture") else [g.strip() for g in by.split(",") if g.strip()]
    bad = [g for g in held if g not in groups]
    if bad:
        raise UsageError(f"--leave-one-out: {', '.join(bad)} not in the corpus; its {key} groups are "
                         f"{', '.join(groups)} (or use 'family' / 'architecture')")
    if len(groups) < 2:
        raise UsageError(f"--leave-one-out needs at least two synthetic {key} groups; the corpus has {groups}")
    return key, group, groups, held


def leave_one_out_matrix(corpus: Corpus, by: str = "family", *, detectors=("frequency", "artifact"),
                         opts: dict | None = None, seed: int = 0, out: Path | None = None,
                         files: dict | None = None, progress: bool = True, split: str = "test") -> dict:
    """Fit the detectors without one group at a time; AUC on every group's test items.

    by: "family", "architecture", or a comma list of family names to hold out (one at a time)."""
    from .detectors.fusion import FusionDetector

    key, group, groups, held = loo_groups(corpus, by)
    opts = dict(opts or {})
    opts.setdefault("artifact", {"steps": 600, "minutes": 3.0})  # a shorter budget per fold
    names = [d for d in (detectors.split(",") if isinstance(detectors, str) else detectors) if d]
    test_rows = corpus.select(split=split)
    cal.require_both(test_rows, split)
    test_items = cal.item_frames(corpus, test_rows)
    y = cal.labels(test_rows)
    g_test = np.array(["real" if r["label"] == "real" else group(r) for r in test_rows])
    res = {"by": key, "held_out": held, "groups": groups, "detectors": names, "options": opts, "rows": {}}
    for g in held:
        t0 = time.time()
        view = _view(corpus, [r for r in corpus.rows if r["label"] == "real" or group(r) != g])
        fitted = {}
        for n in names:
            cls = dbase.get_class(n)
            kw = dict(opts.get(n, {}))
            fitted[n] = cls().fit(view, seed=seed, **kw)
        fus = None
        if len(fitted) > 1:
            fus = FusionDetector().fit(view, seed=seed, detectors=fitted)
        sc = _Scores(fitted, fus, test_rows, test_items)
        row = {}
        for n in sc.names():
            row[n] = {}
            for tg in groups:
                m = ((g_test == tg) | (y == 0)) & ~np.isnan(sc.z[n])
                row[n][tg] = metrics.auc(y[m], sc.z[n][m]) if (g_test == tg).any() else None
            m = ((g_test == g) | (y == 0)) & ~np.isnan(sc.z[n])
            row[n]["held_out_metrics"] = metrics.binary_metrics(y[m], sc.z[n][m], sc.p[n][m], sc.threshold(n))
        row["seconds"] = round(time.time() - t0, 1)
        res["rows"][g] = row
        _log(progress, f"leave out {g}: " + ", ".join(f"{n} AUC {row[n][g]:.3f}" for n in sc.names()
                                                       if row[n][g] is not None) + f" ({row['seconds']}s)")
    dnames = [n for n in res["rows"][held[0]] if n != "seconds"]
    res["mean_held_out_auc"] = {n: float(np.nanmean([res["rows"][g][n][g] if res["rows"][g][n][g] is not None
                                                      else np.nan for g in held])) for n in dnames}
    if out is not None:
        for n in dnames:
            M = np.array([[res["rows"][g][n][tg] if res["rows"][g][n][tg] is not None else np.nan
                           for tg in groups] for g in held], float)
            img = plots.matrix_plot(M, [f"without {g}" for g in held], groups,
                                    title=f"Leave one {key} out: AUC ({n}); diagonal = unseen",
                                    vmin=0.5, vmax=1.0, fmt="{:.3f}", xlabel="tested on")
            p = plots.save(img, out / f"leave_one_out_{n}.png")
            if files is not None:
                files[f"leave_one_out_{n}"] = str(p)
    return res


# ---------------------------------------------------------------------------------------------


def _goals(r: dict) -> dict:
    g = {}
    primary = FUSED if FUSED in r["metrics"] else next(iter(r["metrics"]))
    per = r["metrics"][primary]["by_architecture"]
    aucs = {a: m["auc"] for a, m in per.items()}
    g["in_distribution_auc"] = {"by_architecture": aucs, "min": min((v for v in aucs.values() if v is not None),
                                                                    default=None),
                                "target": GOALS["in_distribution_auc_min"], "detector": primary}
    rob = r.get("robustness") or {}
    g["attacked_auc"] = {s: rob[s][primary]["auc"] for s in ("jpeg:75", "resize:0.5") if s in rob}
    g["attacked_auc_target"] = GOALS["attacked_auc_min"]
    if "attribution" in r:
        g["attribution_accuracy"] = {"value": r["attribution"]["accuracy_synthetic"],
                                     "model": r["attribution"]["headline"],
                                     "target": GOALS["attribution_accuracy_min"]}
    loo = r.get("leave_one_out")
    if loo:
        g["leave_one_out_mean_auc"] = {"value": loo["mean_held_out_auc"], "target": GOALS["leave_one_out_mean_auc_min"]}
    fr = r.get("full_resolution_real") or {}
    if primary in (fr.get("native_crops") or {}):
        g["real_full_resolution_fpr"] = {"whole_photos": fr["whole_photos"][primary]["fpr_at_threshold"],
                                         "native_crops": fr["native_crops"][primary]["fpr_at_threshold"],
                                         "target_max": GOALS["real_full_resolution_fpr_max"]}
    g["test_real_fpr_at_threshold"] = r["metrics"][primary]["overall"]["fpr_at_threshold"]
    return g


def _f(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def write_html(r: dict, path: Path) -> Path:
    from . import media

    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>forensics evaluate</title><style>"
             "body{font:14px sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
             "td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee}"
             "td:first-child,th:first-child{text-align:left}img{margin:4px;border:1px solid #ddd;max-width:100%}</style>",
             f"<h1>Evaluation of {e(str(r.get('corpus_name') or r['corpus']))} ({e(r['split'])} split)</h1>",
             f"<p>{r['counts']['items']} items ({r['counts']['real']} real); created {e(r['created'])}; "
             f"forensics {e(r['tool_version'])}; {r.get('seconds', '?')} s.</p>"]
    fu = r.get("fusion") or {}
    parts.append(f"<p>Fusion: {e(json.dumps(fu))}</p>")
    cols = ("auc", "ap", "eer", "accuracy_at_threshold", "tpr_at_threshold", "fpr_at_threshold",
            "tpr_at_fpr_1pct", "tpr_at_fpr_5pct", "ece", "n_synthetic")
    for n, m in r["metrics"].items():
        parts.append(f"<h2>{e(n)} (threshold {_f(m['threshold'])})</h2><table><tr><th>set</th>"
                     + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
        for label, mm in [("all", m["overall"]), *[(f"arch {a}", v) for a, v in m["by_architecture"].items()],
                          *[(f"family {a}", v) for a, v in m["by_family"].items()]]:
            parts.append(f"<tr><td>{e(label)}</td>" + "".join(f"<td>{_f(mm.get(c))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    if "attribution" in r:
        a = r["attribution"]
        parts.append("<h2>Attribution</h2><table><tr><th>model</th><th>accuracy on synthetic</th>"
                     "<th>accuracy with real</th></tr>")
        for n, v in a["by_detector"].items():
            parts.append(f"<tr><td>{e(n)}{' (headline)' if n == a['headline'] else ''}</td>"
                         f"<td>{_f(v['accuracy_synthetic'])}</td><td>{_f(v['accuracy_with_real'])}</td></tr>")
        parts.append("</table>")
    rob = r.get("robustness")
    if rob:
        names = list(next(iter(rob.values())).keys())
        parts.append("<h2>Robustness (AUC / TPR at threshold / FPR at threshold)</h2><table><tr><th>attack</th>"
                     + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>")
        for s, v in rob.items():
            parts.append(f"<tr><td>{e(s)}</td>" + "".join(
                f"<td>{_f(v[n]['auc'])} / {_f(v[n]['tpr_at_threshold'], 2)} / {_f(v[n]['fpr_at_threshold'], 2)}</td>"
                for n in names) + "</tr>")
        parts.append("</table>")
    loo = r.get("leave_one_out")
    if loo:
        parts.append(f"<h2>Leave one {e(loo['by'])} out</h2><p>mean held-out AUC: "
                     + ", ".join(f"{e(n)} {_f(v)}" for n, v in loo["mean_held_out_auc"].items()) + "</p>")
        names = list(loo["mean_held_out_auc"])
        parts.append("<table><tr><th>held out</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>")
        for g, row in loo["rows"].items():
            parts.append(f"<tr><td>{e(g)}</td>" + "".join(f"<td>{_f(row[n][g])}</td>" for n in names) + "</tr>")
        parts.append("</table>")
    fr = r.get("full_resolution_real")
    if fr and "whole_photos" in fr:
        parts.append(f"<h2>Real photos at full resolution</h2><p>{e(', '.join(fr['photos']))}; "
                     f"{fr['crops']} native {fr['crop_side']}px crops</p><table><tr><th>detector</th>"
                     "<th>FPR whole photos</th><th>FPR native crops</th></tr>")
        for n in fr["whole_photos"]:
            parts.append(f"<tr><td>{e(n)}</td><td>{_f(fr['whole_photos'][n]['fpr_at_threshold'])}</td>"
                         f"<td>{_f(fr['native_crops'][n]['fpr_at_threshold'])}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Goals</h2><pre>" + e(json.dumps(r.get("goals"), indent=1, default=_json_default)) + "</pre>")
    parts.append("<h2>Figures</h2>")
    for k, f in r["files"].items():
        if str(f).endswith(".png"):
            parts.append(f"<figure style='display:inline-block'><img src='{e(Path(f).name)}'>"
                         f"<figcaption>{e(k)}</figcaption></figure>")
    media.atomic_write_bytes(path, ("\n".join(parts) + "\n").encode("utf-8"))
    return path
