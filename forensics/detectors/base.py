"""The detector protocol, the evidence it returns, checkpoints and the registry.

A detector is fitted on a corpus and scores *media*: a list of RGB uint8 frames of any size
(one frame for an image). Checkpoints are a folder: `model.safetensors` (arrays) + `config.json`
(everything else) + `card.json` (data, metrics, the command that made it). Never pickle.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import CheckpointError, UsageError

CHECKPOINT_ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
_REGISTRY: dict[str, type["Detector"]] = {}


@dataclasses.dataclass
class Media:
    path: str
    modality: str                 # "image" | "video"
    frames: list[np.ndarray]      # RGB uint8 (H, W, 3), possibly a subsample of a video
    fps: float | None = None
    declared_frames: int = 1
    frame_index: list[int] | None = None  # frame numbers of `frames` in the video (None: consecutive)
    pair_gap: int = 1                     # frames apart that count as consecutive (runs for temporal)
    max_patches: int | None = None        # per frame, for per-frame detectors (None: their own cap)


@dataclasses.dataclass
class Evidence:
    detector: str
    p_synthetic: float                       # calibrated probability
    score: float                             # raw score (logit)
    per_frame: list[float] | None = None     # calibrated p per scored frame
    heatmap: np.ndarray | None = None        # (h, w) p per patch of the first frame
    attribution: dict[str, float] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # False when the input is outside the conditions the calibration was fitted on (a note says
    # which); `detect.fuse` then leaves this evidence out of the verdict where others remain.
    calibrated: bool = True

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"p_synthetic": round(self.p_synthetic, 4), "score": round(self.score, 4)}
        if self.per_frame is not None:
            d["per_frame"] = [round(p, 4) for p in self.per_frame]
        if self.attribution is not None:
            d["attribution"] = {k: round(v, 4) for k, v in self.attribution.items()}
        if self.heatmap is not None:
            d["heatmap_shape"] = list(self.heatmap.shape)
        if self.notes:
            d["notes"] = self.notes
        if not self.calibrated:
            d["calibrated"] = False
        return d


# -- memo of per-frame and per-run work, for scoring a video while it is still being decoded ----
# `forensics detect clip.mp4` scores the runs ffmpeg has already written while it decodes the
# rest, then scores the whole clip; inside `frame_memo()` the detectors' per-frame and per-run
# computations are kept, keyed by the frame's memory (the early frames and the final ones are
# the same buffers), so the second pass only does the new frames. The memo holds the frames, so
# no other array can take a key's address while it lives.
_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("forensics_frame_memo", default=None)


@contextlib.contextmanager
def frame_memo():
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _frame_key(a: np.ndarray) -> tuple:
    i = a.__array_interface__
    return i["data"][0], a.shape, i["strides"], a.dtype.str


def memo_frames(tag, frames: list[np.ndarray], fn) -> list:
    """fn(frames), one result per frame, through the active memo: fn sees only the frames it has
    not seen under `tag`; outside `frame_memo()` simply fn(frames)."""
    memo = _MEMO.get()
    if memo is None:
        return fn(frames)
    keys = [(tag, _frame_key(f)) for f in frames]
    todo = [i for i, k in enumerate(keys) if k not in memo]
    if todo:
        for i, r in zip(todo, fn([frames[i] for i in todo])):
            memo[keys[i]] = (r, frames[i])
    return [memo[k][0] for k in keys]


def memo_run(tag, frames: list[np.ndarray], fn):
    """fn(frames), one result for the whole run of frames, through the active memo."""
    memo = _MEMO.get()
    if memo is None:
        return fn(frames)
    key = (tag, tuple(_frame_key(f) for f in frames))
    if key not in memo:
        memo[key] = (fn(frames), frames)
    return memo[key][0]


def register(cls: type["Detector"]) -> type["Detector"]:
    _REGISTRY[cls.name] = cls
    return cls


def _import_all() -> None:
    from . import frequency  # noqa: F401
    from . import temporal  # noqa: F401
    from . import artifact  # noqa: F401
    from . import fusion  # noqa: F401


def names() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def get_class(name: str) -> type["Detector"]:
    _import_all()
    if name not in _REGISTRY:
        raise UsageError(f"unknown detector {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def load(name_or_dir: str | os.PathLike) -> "Detector":
    """A detector from its shipped checkpoint (by name) or from a folder."""
    d = Path(name_or_dir)
    if not (d / "config.json").is_file():
        d = CHECKPOINT_ROOT / str(name_or_dir)
    if not (d / "config.json").is_file():
        raise CheckpointError(f"no checkpoint for detector {name_or_dir!r} (looked in {d}); "
                              f"train one with `forensics train {name_or_dir} --corpus DIR`")
    try:
        cfg = json.loads((d / "config.json").read_text())
    except ValueError:
        raise CheckpointError(f"{d / 'config.json'} is not valid JSON") from None
    return get_class(cfg.get("name", "")).load(d)


def card_sha256(directory: str | os.PathLike) -> str:
    """Hash of a checkpoint's weights and config (the `models` field of detect JSON)."""
    h = hashlib.sha256()
    for f in ("model.safetensors", "config.json"):
        p = Path(directory) / f
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def sigmoid(x: float | np.ndarray):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def platt_fit(scores, labels, iters: int = 500) -> tuple[float, float]:
    """Platt scaling with Platt's smoothed targets (1999): p = sigmoid(a * score + b).

    The targets (N+ + 1)/(N+ + 2) and 1/(N- + 2) keep a perfectly separated validation set
    from producing an infinitely steep, overconfident calibration.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.float64)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    sd = s.std() or 1.0
    z = (s - s.mean()) / sd
    a, b = 1.0, 0.0
    for _ in range(iters):  # Newton steps on the 2-parameter cross-entropy
        p = sigmoid(a * z + b)
        g = np.array([((p - t) * z).sum(), (p - t).sum()])
        w = p * (1 - p) + 1e-9
        h = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a / sd), float(b - a * s.mean() / sd)


def threshold_at_fpr(p_real, fpr: float) -> float:
    """The p above which at most `fpr` of real validation items fall, never below 0.5: a
    calibrated p under 0.5 says real is the likelier class, so it is never called synthetic."""
    p_real = np.asarray(p_real, np.float64)
    q = float(np.quantile(p_real, 1 - fpr)) if len(p_real) else 0.5
    return max(0.5, q)


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class Detector:
    name: ClassVar[str] = "base"
    modalities: ClassVar[tuple[str, ...]] = ("image", "video")

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = dict(config or {})
        self.directory: Path | None = None

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold", 0.5))

    def fit(self, corpus, **opts) -> "Detector":
        raise NotImplementedError

    def score(self, media: Media) -> Evidence:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Detector":
        raise NotImplementedError

    @staticmethod
    def _write_arrays(d: Path, arrays: dict[str, np.ndarray], name: str = "model.safetensors") -> None:
        from safetensors.numpy import save_file

        tmp = d / f".{name}.tmp"
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        os.replace(tmp, d / name)

    @staticmethod
    def read_checkpoint(directory, required: tuple[str, ...]) -> tuple[dict, dict[str, np.ndarray]]:
        """config.json and model.safetensors of a numpy-weights detector, checked for `required` arrays."""
        from safetensors.numpy import load_file

        d = Path(directory)
        try:
            cfg = json.loads((d / "config.json").read_text())
            arrays = load_file(str(d / "model.safetensors"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read detector checkpoint {d}: {exc}") from None
        for k in required:
            if k not in arrays:
                raise CheckpointError(f"detector checkpoint {d} lacks {k}")
        return cfg, arrays

    def _write_config(self, d: Path) -> None:
        tmp = d / ".config.json.tmp"
        tmp.write_text(json.dumps({"name": self.name, **self.config}, indent=2) + "\n")
        os.replace(tmp, d / "config.json")
