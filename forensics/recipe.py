"""`forensics corpus build RECIPE`: a TOML recipe → a labeled corpus (resumable).

```toml
name = "foundation"
out = "datasets/corpora/foundation"   # relative to the recipe's folder's parent's parent
seed = 0
[real]
per_source = 200          # crops per bundled photo (split by source photo)
clips_per_source = 0      # virtual-camera clips per bundled photo
folders = []              # user folders of images (split by path hash)
video_folders = []        # user folders of videos, cut into clips of `frames` (split by path hash)
[[synthetic]]
arch = "vae"
n = 2000
```
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np

from . import realdata
from .corpus import CorpusWriter
from .errors import UsageError
from .generate import generate, parse_archs


def load_recipe(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such recipe")
    try:
        recipe = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: invalid TOML ({exc})") from None
    recipe.setdefault("name", p.stem)
    recipe.setdefault("seed", 0)
    recipe.setdefault("real", {})
    recipe.setdefault("synthetic", [])
    for item in recipe["synthetic"]:
        if not isinstance(item, dict) or "arch" not in item:
            raise UsageError(f"{p}: every [[synthetic]] entry needs an arch")
        parse_archs(str(item["arch"]))
    return recipe


def build(recipe_path: str | Path, out: str | Path | None = None, *, device: str = "auto",
          progress: bool = True) -> dict:
    recipe = load_recipe(recipe_path)
    out = Path(out or recipe.get("out") or Path("datasets/corpora") / recipe["name"])
    seed = int(recipe["seed"])
    real = recipe["real"]
    size = int(real.get("size", 32))
    sources = realdata.bundled_sources() if real.get("bundled", True) else []
    for folder in real.get("folders", []):
        sources += realdata.folder_sources(folder)
    with CorpusWriter(out, name=recipe["name"], recipe=recipe, real_sources=[s.name for s in sources]) as w:
        per = int(real.get("per_source", 200))
        _write_real_images(w, sources, per, size, seed, progress)
        clips = int(real.get("clips_per_source", 0))
        if clips:
            _write_real_clips(w, clips, int(real.get("frames", 16)), size, seed, progress)
        for folder in real.get("video_folders", []):
            _write_folder_clips(w, folder, int(real.get("frames", 16)), size, seed,
                                int(real.get("clips_per_video", 8)), progress)
        for item in recipe["synthetic"]:
            generate(parse_archs(str(item["arch"])), int(item.get("n", 100)), out,
                     seed=int(item.get("seed", seed)), sampler=item.get("sampler"), steps=item.get("steps"),
                     checkpoint=item.get("checkpoint"), device=device, progress=progress, writer=w,
                     frames=item.get("frames"))
        card = w.card
    return {"out": str(out), "counts": card.get("counts")}


def _write_real_images(w: CorpusWriter, sources, per: int, size: int, seed: int, progress: bool) -> None:
    from tqdm import tqdm

    for src in tqdm(sources, desc="real crops", file=sys.stderr, disable=not progress):
        names = [f"images/real/{src.scene.replace('/', '_')}/{src.name.split(':')[-1].replace('/', '_')}_{i:05d}.png"
                 for i in range(per)]
        if all(w.has(n) for n in names):
            continue
        rs = realdata.default_crops(per_source=per, size=size, seed=seed, sources=[src])
        for fn, img in zip(names, rs.images):
            if not w.has(fn):
                w.add_image(fn, img, label="real", family="real", architecture="real", source=src.name,
                            split=src.split, seed=seed)


def _write_folder_clips(w: CorpusWriter, folder: str, frames: int, size: int, seed: int, per_video: int,
                        progress: bool) -> None:
    """Every video of a user folder cut into clips (center square, resized), split by its path."""
    from tqdm import tqdm

    if not Path(folder).is_dir():
        raise UsageError(f"video folder {folder}: no such directory")
    counter: dict[str, int] = {}
    for clip, fps, source, split in tqdm(realdata.folder_clips(folder, frames, size, per_video),
                                         desc=f"real clips {folder}", file=sys.stderr, disable=not progress):
        k = counter[source] = counter.get(source, -1) + 1
        stem = source.split(":", 1)[-1].replace("/", "_").replace(".", "_")
        fn = f"clips/real_folder/{stem}_{k:04d}.mp4"
        if not w.has(fn):
            w.add_clip(fn, np.asarray(clip), fps=float(fps), label="real", family="real", architecture="real",
                       source=source, split=split, seed=seed)


def _write_real_clips(w: CorpusWriter, per: int, frames: int, size: int, seed: int, progress: bool) -> None:
    from tqdm import tqdm

    counter: dict[str, int] = {}
    for clip, source, split in tqdm(realdata.default_clips(per, frames, size, seed), desc="real clips",
                                    file=sys.stderr, disable=not progress):
        k = counter[source] = counter.get(source, -1) + 1
        fn = f"clips/real/{source.split(':')[-1]}_{k:04d}.mp4"
        if not w.has(fn):
            w.add_clip(fn, np.asarray(clip), fps=8.0, label="real", family="real", architecture="real",
                       source=source, split=split, seed=seed)
