"""`forensics train DETECTOR --corpus DIR`: fit a detector, measure it on the test split, save
it with a card (data, metrics, the command that made it)."""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import shlex
import sys
import time
from pathlib import Path

from .corpus import Corpus
from .detectors import base as dbase
from .errors import UsageError


def train_detector(name: str, corpus_dir: str | Path, out: str | Path | None = None, *,
                   seed: int = 0, **opts) -> dict:
    cls = dbase.get_class(name)
    accepted = inspect.signature(cls.fit).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        bad = [k for k in opts if k not in accepted]
        if bad:
            raise UsageError(f"the {name} detector takes no {', '.join('--' + k for k in bad)}")
    corpus = Corpus(corpus_dir)
    t0 = time.time()
    det = cls().fit(corpus, seed=seed, **opts)
    fit_s = time.time() - t0
    metrics = det.evaluate(corpus, "test") if hasattr(det, "evaluate") else {}
    out = Path(out) if out else dbase.CHECKPOINT_ROOT / name
    det.save(out)
    det.directory = out
    card = {
        "detector": name,
        "config": det.config,
        "data": {"corpus": str(corpus_dir), "name": corpus.card.get("name"),
                 "counts": corpus.card.get("counts"), "recipe": corpus.card.get("recipe")},
        "seed": seed,
        "fit_seconds": round(fit_s, 1),
        "metrics_on": "corpus test split (real sources and synthetic seeds unseen in training)",
        "metrics": metrics,
        "sha256": dbase.card_sha256(out),
        "command": "forensics " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
