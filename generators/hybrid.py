"""Diffusion draft + autoregressive refinement: the survey's diffusion / autoregressive hybrid.

Two of the bank's checkpoints, composed; the hybrid has no weights of its own.
1. Draft: the `ddpm` model samples an image with a few DDIM steps (η = 0; 10 by default) — the
   global layout and colours, blurry in the details at so few steps.
2. Tokenize: the `vq_transformer`'s VQ encoder maps the draft to its code grid c (g x g indices,
   raster order; 8 x 8 on the shipped 32 x 32 checkpoints).
3. Refine with the causal transformer prior p(c_i | c_<i) (one pass, key/value cache):
   - `rows`: keep the first `keep_rows` rows of the draft's codes as a prefix and resample every
     later code from the prior with temperature τ — the draft conditions, the prior completes
     (the "draft then autoregressive completion" of hybrid pipelines such as HART, Tang et al.
     2024, at the scale of this bank);
   - `lowlik`: walk the codes in raster order and keep a draft code when the prior, given the
     codes already chosen, gives it probability ≥ `min_prob`; resample it (temperature τ)
     otherwise — the draft's codes that the prior finds implausible are replaced.
4. Decode the refined codes with the VQ decoder.

Sampler names are `<draft sampler>+<refinement>`: ddim+rows (default), ddim+lowlik, ddpm+rows,
ddpm+lowlik; `steps` counts the draft's diffusion steps. A corpus row records the family
`hybrid`, the sampler, the draft steps, both parents' checkpoint hashes (`parent_checkpoints`)
and, as `checkpoint_sha256`, one hash over the two.

Checkpoint: `load` composes the shipped `ddpm` and `vq_transformer` checkpoints. A folder with
only a `config.json` whose `parents` names the two parent folders (relative to it, or shipped
model names) is a composite checkpoint too; `save` writes one, with the parents' weights in
sub-folders when they did not come from a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from .autoregressive import VQTransformer, _gumbel_argmax
from .base import CHECKPOINT_ROOT, Config, Generator, GeneratorError, checkpoint_sha256, register
from .diffusion import DDPM

REFINEMENTS = ("rows", "lowlik")
DRAFT_SAMPLERS = ("ddim", "ddpm")


@dataclasses.dataclass
class HybridConfig(Config):
    draft_steps: int = 10          # DDIM steps of the diffusion draft
    keep_rows: int = 4             # `rows`: rows of draft codes kept as the prefix
    min_prob: float = 0.02         # `lowlik`: a draft code below this prior probability is resampled
    temperature: float = 1.0       # of the prior's resampling
    parent_preset: str = "cpu"     # preset of randomly initialized parents (create(), tests)
    PRESETS: ClassVar[dict] = {
        "tiny": {"image_size": 8, "draft_steps": 3, "keep_rows": 2, "parent_preset": "tiny"},
        "cpu": {},
        "gpu": {"parent_preset": "gpu", "draft_steps": 20},
    }


def parse_sampler(sampler: str | None) -> tuple[str, str]:
    """`ddim+rows` → ("ddim", "rows"); None → the default."""
    name = sampler or Hybrid.default_sampler
    draft, _, how = name.partition("+")
    if draft not in DRAFT_SAMPLERS or how not in REFINEMENTS:
        raise GeneratorError(f"unknown hybrid sampler {name!r}; use one of {', '.join(Hybrid.sampler_names())}")
    return draft, how


def combined_sha256(parents: dict[str, str]) -> str:
    """One hash over the parents' checkpoint hashes (model name → sha256), order-independent."""
    text = "".join(f"{k}:{v}\n" for k, v in sorted(parents.items()))
    return hashlib.sha256(text.encode()).hexdigest()


@register
class Hybrid(Generator):
    name = "hybrid"
    family = "hybrid"
    Config = HybridConfig
    default_sampler = "ddim+rows"
    parents: ClassVar[dict[str, str]] = {"draft": "ddpm", "prior": "vq_transformer"}

    def __init__(self, config: HybridConfig, draft: DDPM | None = None, prior: VQTransformer | None = None):
        super().__init__(config)
        s, p = config.image_size, config.parent_preset
        self.draft = draft if draft is not None else DDPM(DDPM.Config.preset(p, image_size=s))
        self.prior = prior if prior is not None else VQTransformer(VQTransformer.Config.preset(p, image_size=s))
        for role, m in (("draft", self.draft), ("prior", self.prior)):
            if m.config.image_size != s or m.config.channels != config.channels:
                raise GeneratorError(
                    f"hybrid {role} ({m.name}) makes {m.config.channels}x{m.config.image_size}² images, the "
                    f"hybrid {config.channels}x{s}²: compose checkpoints of the same image size")
        if config.keep_rows < 0:
            raise GeneratorError(f"keep_rows must be ≥ 0; got {config.keep_rows}")
        # parent folders, when the parents came from checkpoints: their hashes label corpus rows
        self.parent_dirs: dict[str, Path] | None = None
        self._parent_sha: dict[str, str] = {}

    # -- composition -----------------------------------------------------------------------------
    @classmethod
    def sampler_names(cls) -> list[str]:
        return [f"{d}+{r}" for d in DRAFT_SAMPLERS for r in REFINEMENTS]

    @classmethod
    def compose(cls, draft_dir: str | os.PathLike | None = None, prior_dir: str | os.PathLike | None = None,
                device: str | torch.device = "cpu", **overrides) -> "Hybrid":
        """The hybrid over two checkpoint folders (default: the shipped `ddpm` and `vq_transformer`)."""
        dirs = {"draft": Path(draft_dir) if draft_dir else CHECKPOINT_ROOT / cls.parents["draft"],
                "prior": Path(prior_dir) if prior_dir else CHECKPOINT_ROOT / cls.parents["prior"]}
        models = {}
        for role, d in dirs.items():
            want = cls.parents[role]
            if not (d / "config.json").is_file():
                raise GeneratorError(f"hybrid needs a {want} checkpoint at {d}: train one with "
                                     f"`forensics bank train {want}`")
            got = json.loads((d / "config.json").read_text()).get("name")
            if got != want:
                raise GeneratorError(f"hybrid {role} must be a {want} checkpoint; {d} holds {got!r}")
            models[role] = (DDPM if role == "draft" else VQTransformer).load(d, device=device)
        size = models["draft"].config.image_size
        model = cls(cls.Config.preset("cpu", image_size=size, **overrides), models["draft"], models["prior"])
        model.parent_dirs = dirs
        # hashed once, as loaded: a parent retrained later must not relabel these weights' items
        model._parent_sha = {cls.parents[role]: checkpoint_sha256(d) for role, d in dirs.items()}
        return model.to(device).eval()

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "Hybrid":
        d = Path(directory)
        try:
            meta = json.loads((d / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise GeneratorError(f"cannot read composite checkpoint {d}: {exc}") from None
        if meta.get("name") != cls.name:
            raise GeneratorError(f"checkpoint {d} holds {meta.get('name')!r}, not {cls.name!r}")
        parents = meta.get("parents") or {}

        def where(role: str) -> Path:
            ref = parents.get(role, cls.parents[role])
            # a shipped model name, or a folder relative to the composite's own folder
            return CHECKPOINT_ROOT / ref if ref in cls.parents.values() and not (d / ref).exists() else d / ref

        cfg = {k: v for k, v in (meta.get("config") or {}).items() if k != "image_size"}
        known = {f.name for f in dataclasses.fields(cls.Config)}
        return cls.compose(where("draft"), where("prior"), device=device,
                           **{k: v for k, v in cfg.items() if k in known and k != "PRESETS"})

    def save(self, directory: str | os.PathLike) -> Path:
        """A composite checkpoint: config.json naming the parents; their weights in sub-folders
        unless they came from checkpoint folders (then those folders are referenced)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        refs = {}
        for role, m in (("draft", self.draft), ("prior", self.prior)):
            src = (self.parent_dirs or {}).get(role)
            if src is not None:
                refs[role] = os.path.relpath(Path(src).resolve(), d.resolve())
            else:
                m.save(d / role)
                refs[role] = role
        meta = {"name": self.name, "family": self.family, "modality": self.modality,
                "config": self.config.to_dict(), "parents": refs}
        tmp = d / ".config.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, d / "config.json")
        return d

    def parent_checkpoints(self) -> dict[str, str]:
        """Parent model name → sha256 of its weights file."""
        if not self._parent_sha:
            raise GeneratorError("this hybrid was not composed from checkpoints; compose() or load() one")
        return dict(self._parent_sha)

    def checkpoint_sha256(self) -> str:
        return combined_sha256(self.parent_checkpoints())

    def describe(self, sampler: str | None = None, steps: int | None = None) -> str:
        """How an item was made, for a corpus row."""
        draft, how = parse_sampler(sampler)
        c, g = self.config, self.prior.grid
        first = f"{draft} {steps or c.draft_steps} steps" + (" (eta 0)" if draft == "ddim" else "")
        if how == "rows":
            k = min(c.keep_rows, g)
            rule = f"prior keeps rows 0-{k - 1} of the {g}x{g} codes, resamples {(g - k) * g} codes" if k else \
                f"prior resamples all {g * g} codes"
        else:
            rule = f"prior resamples the codes it gives p < {c.min_prob:g}"
        return f"ddpm {first} -> vq_transformer encoder -> {rule} at T={c.temperature:g} -> decoder"

    def corpus_fields(self, sampler: str | None = None, steps: int | None = None) -> dict:
        """Row fields of a composite: one hash over the parents, the parents' hashes, the recipe."""
        parents = self.parent_checkpoints()
        return {"checkpoint_sha256": combined_sha256(parents), "parent_checkpoints": parents,
                "sampler_detail": self.describe(sampler, steps)}

    # -- the protocol ----------------------------------------------------------------------------
    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        raise GeneratorError("hybrid has no weights of its own: it composes the ddpm and vq_transformer "
                             "checkpoints; train those (`forensics bank train ddpm`, `... vq_transformer`)")

    def samplers(self) -> list[str]:
        return self.sampler_names()

    def steps_for(self, sampler: str | None) -> int:
        return self.config.draft_steps

    @torch.no_grad()
    def sample(self, n, *, generator, steps=None, sampler=None, temperature: float | None = None):
        draft_sampler, how = parse_sampler(sampler)
        steps = steps or self.config.draft_steps
        x = self.draft.sample(n, generator=generator, steps=steps, sampler=draft_sampler, eta=None)
        return self.refine(x, generator=generator, how=how, temperature=temperature)

    @torch.no_grad()
    def refine(self, draft: torch.Tensor, *, generator: torch.Generator, how: str = "rows",
               temperature: float | None = None) -> torch.Tensor:
        """Draft images (B, 3, S, S) in [-1, 1] → refined images (steps 2-4 of the docstring)."""
        if how not in REFINEMENTS:
            raise GeneratorError(f"unknown refinement {how!r}; use {' or '.join(REFINEMENTS)}")
        codes = self.prior.encode(draft.to(self.prior.device).clamp(-1, 1))   # (B, N)
        codes = self.refine_codes(codes, generator=generator, how=how, temperature=temperature)
        return self.prior.decode_codes(codes).clamp(-1, 1)

    @torch.no_grad()
    def refine_codes(self, codes: torch.Tensor, *, generator: torch.Generator, how: str = "rows",
                     temperature: float | None = None) -> torch.Tensor:
        """Draft codes (B, N) → refined codes (B, N) under the causal prior; `self.last_kept` is
        the share of draft codes kept."""
        p = self.prior.prior                                                  # CodePrior
        b, n = codes.shape
        tau = max(self.config.temperature if temperature is None else temperature, 1e-4)
        keep = min(self.config.keep_rows, self.prior.grid) * self.prior.grid if how == "rows" else 0
        if keep >= n:
            self.last_kept = 1.0
            return codes
        cache = p.tf.new_cache()
        # input j is BOS (j = 0) or c_{j-1} with position j; its output predicts c_j (CodePrior.logits)
        bos = torch.full((b, 1), p.k, device=codes.device, dtype=torch.long)
        seq = torch.cat([bos, codes[:, :keep]], 1)                            # (B, keep + 1): one prefill pass
        h = p.tf(p.tok(seq) + p.pos[:, :keep + 1], cache)
        out = [codes[:, :keep]]
        kept = torch.zeros(b, device=codes.device)
        for i in range(keep, n):
            logits = p.head(h[:, -1])                                         # (B, K): p(c_i | c_<i)
            draw = _gumbel_argmax(logits / tau, generator)                    # drawn every step: one RNG stream
            if how == "lowlik":
                prob = F.softmax(logits.float(), -1).gather(1, codes[:, i:i + 1])[:, 0]
                ok = prob >= self.config.min_prob
                tok = torch.where(ok, codes[:, i], draw)
                kept += ok.float()
            else:
                tok = draw
            out.append(tok[:, None])
            if i + 1 < n:
                h = p.tf(p.tok(tok[:, None]) + p.pos[:, i + 1:i + 2], cache)
        self.last_kept = float((kept.mean() + keep) / n)
        return torch.cat(out, 1)
