"""The generator protocol, configs with presets, safetensors checkpoints and the registry.

Every family of the bank subclasses `Generator`:
- `loss(batch)`: the family's own training objective on a batch in [-1, 1], (B, 3, H, W);
- `sample(n, generator=..., steps=..., sampler=...)`: values in [-1, 1], reproducible from the
  torch.Generator (image: (n, 3, H, W); video: (n, T, 3, H, W));
- `save(dir)` / `load(dir)`: `model.safetensors` + `config.json`; never pickle.

An *architecture* (a corpus label such as `ddim`) is a family's model plus a way of sampling it;
`ARCHITECTURES` maps each to (model name, sampler) so `ddpm` and `ddim` can share one checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_ROOT = Path(__file__).resolve().parent / "checkpoints"

_REGISTRY: dict[str, type["Generator"]] = {}
# architecture label -> (registered model name, default sampler name or None)
ARCHITECTURES: dict[str, tuple[str, str | None]] = {}


class GeneratorError(Exception):
    """A generator or its checkpoint cannot be used; the message says why."""


def register(cls: type["Generator"]) -> type["Generator"]:
    """Class decorator: make a family available as create(cls.name) / load(cls.name)."""
    _REGISTRY[cls.name] = cls
    ARCHITECTURES.setdefault(cls.name, (cls.name, None))
    return cls


def register_architecture(arch: str, model: str, sampler: str | None) -> None:
    ARCHITECTURES[arch] = (model, sampler)


def _import_families() -> None:
    # Importing the family modules runs their @register decorators.
    from . import families  # noqa: F401


def names() -> list[str]:
    """Registered model names."""
    _import_families()
    return sorted(_REGISTRY)


def architectures() -> list[str]:
    _import_families()
    return sorted(ARCHITECTURES)


def get_class(name: str) -> type["Generator"]:
    _import_families()
    if name not in _REGISTRY:
        raise GeneratorError(f"unknown generator {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, preset: str = "cpu", **overrides) -> "Generator":
    cls = get_class(name)
    return cls(cls.Config.preset(preset, **overrides))


def load(name_or_dir: str | os.PathLike, device: str | torch.device = "cpu") -> "Generator":
    """Load a model by registered name (its shipped checkpoint) or from a checkpoint folder."""
    d = Path(name_or_dir)
    if not (d / "config.json").is_file():
        # a composite (e.g. hybrid) has no folder of its own: it is built from its parents' checkpoints
        name = str(name_or_dir) if str(name_or_dir) in architectures() else (
            d.name if d.parent == CHECKPOINT_ROOT and d.name in _REGISTRY else None)
        if name is not None and get_class(ARCHITECTURES[name][0]).parents:
            return get_class(ARCHITECTURES[name][0]).compose(device=device)
        if str(name_or_dir) in architectures():
            d = CHECKPOINT_ROOT / ARCHITECTURES[str(name_or_dir)][0]
        if not (d / "config.json").is_file():
            raise GeneratorError(
                f"no checkpoint at {d}: train one with `forensics bank train {name_or_dir}`"
            )
    meta = json.loads((d / "config.json").read_text())
    cls = get_class(meta.get("name", ""))
    return cls.load(d, device=device)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error, not a silent fallback."""
    if isinstance(device, torch.device):
        return device
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GeneratorError("--device cuda was asked for, but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise GeneratorError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


@dataclasses.dataclass
class Config:
    """Base of family configs. Subclasses add fields and fill PRESETS."""

    image_size: int = 32
    channels: int = 3
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls, name: str = "cpu", **overrides) -> "Config":
        if name not in ("cpu", *cls.PRESETS):
            raise GeneratorError(f"unknown preset {name!r}; choose from cpu, {', '.join(cls.PRESETS)}")
        values = dict(cls.PRESETS.get(name, {}))
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Generator(torch.nn.Module):
    name: ClassVar[str] = "base"
    family: ClassVar[str] = ""
    modality: ClassVar[str] = "image"
    Config: ClassVar[type[Config]] = Config
    default_sampler: ClassVar[str | None] = None
    # state-dict prefixes left out of the shipped checkpoint (e.g. a GAN's discriminator)
    training_only: ClassVar[tuple[str, ...]] = ()
    # A composite has no weights of its own: role -> model name of the checkpoints it combines;
    # it provides `compose(device=...)` (from the shipped parents) and `corpus_fields(...)`.
    parents: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    # -- the protocol ------------------------------------------------------------------------
    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator, steps: int | None = None,
               sampler: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, data: torch.Tensor) -> dict[str, float]:
        """Metrics for the card on held-out real data (family-specific)."""
        return {}

    def samplers(self) -> list[str | None]:
        return [self.default_sampler]

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()
                 if not k.startswith(self.training_only)}
        tmp = d / ".model.safetensors.tmp"
        save_file(state, str(tmp), metadata={"name": self.name})
        os.replace(tmp, d / "model.safetensors")
        meta = {"name": self.name, "family": self.family, "modality": self.modality,
                "config": self.config.to_dict()}
        tmpc = d / ".config.json.tmp"
        tmpc.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmpc, d / "config.json")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "Generator":
        d = Path(directory)
        try:
            meta = json.loads((d / "config.json").read_text())
            state = load_file(str(d / "model.safetensors"), device="cpu")
        except (OSError, ValueError) as exc:
            raise GeneratorError(f"cannot read checkpoint {d}: {exc}") from None
        if meta.get("name") != cls.name:
            raise GeneratorError(f"checkpoint {d} holds {meta.get('name')!r}, not {cls.name!r}")
        model = cls(cls.Config.from_dict(meta["config"]))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(cls.training_only)]
        if missing or unexpected:
            raise GeneratorError(f"checkpoint {d} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model.to(device).eval()


def checkpoint_sha256(directory: str | os.PathLike) -> str:
    """Hash of the weights file: the `checkpoint_sha256` of corpus rows."""
    h = hashlib.sha256()
    with open(Path(directory) / "model.safetensors", "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_uint8(x: torch.Tensor) -> "numpy.ndarray":  # noqa: F821
    """[-1, 1] (..., 3, H, W) → uint8 (..., H, W, 3) numpy."""
    y = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.movedim(-3, -1).cpu().numpy()


def from_uint8(a) -> torch.Tensor:
    """uint8 (..., H, W, 3) numpy → float [-1, 1] (..., 3, H, W)."""
    t = torch.as_tensor(a)
    return t.movedim(-1, -3).float() / 127.5 - 1.0
