"""The model that screens: one spec or several (an ensemble), resolved and checked up front.

Several specs (`--model A --model B`, or `A,B`) become one ensemble bundle whose members'
probabilities are averaged (the MURA paper's ensemble). Members must share input size and
normalization, since every image is prepared once. Checked on the driver before any work:
each spec resolves, the bundle loads, and a dry forward pass on a 3×S×S batch gives one
probability per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mura_core.checkpoints import BundleError, load_bundle, save_ensemble_folders
from mura_core.model_info import ModelInfo
from pipelines.registry.model_store import (
    ModelSpecError,
    ResolvedModel,
    process_folder,
    scoring_model,
)


@dataclass(frozen=True)
class ScreeningModel:
    """The bundle folder that is shipped to the actors, and what it is for the report."""

    folder: Path
    info: ModelInfo
    members: tuple[ResolvedModel, ...]

    @property
    def uri(self) -> str:
        return ",".join(m.uri for m in self.members)

    @property
    def name(self) -> str:
        names = {m.name or Path(m.uri).name for m in self.members}
        return "+".join(sorted(names))

    @property
    def version(self) -> str | None:
        """Registry version(s), `3` or `3+4`; None when no member is registered."""
        if not any(m.version for m in self.members):
            return None
        return "+".join(m.version or "-" for m in self.members)

    @property
    def label(self) -> str:
        """`mura-cnn v3`, or the URI for an unregistered model."""
        if len(self.members) == 1:
            m = self.members[0]
            return f"{m.name} v{m.version}" if m.version else m.uri
        return " + ".join(f"{m.name} v{m.version}" if m.version else m.uri for m in self.members)


def split_specs(specs: Sequence[str]) -> list[str]:
    """Repeated flags and comma-separated lists, flattened, blanks dropped."""
    return [part.strip() for spec in specs for part in spec.split(",") if part.strip()]


def _check_forward(folder: Path, info: ModelInfo, uri: str) -> None:
    try:
        model, _ = load_bundle(folder)
    except BundleError:
        raise  # a refused file: its one line names it (and never echoes torch's advice)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise ModelSpecError(
            f"model {uri}: its weights do not load into {info.model} at {info.size}px: "
            f"{' '.join(str(exc).split())[:160]}"
        ) from exc
    x = torch.zeros(2, 3, info.size, info.size)
    try:
        with torch.inference_mode():
            out = model(x)
    except RuntimeError as exc:
        raise ModelSpecError(
            f"model {uri} does not accept 3x{info.size}x{info.size} images: "
            f"{' '.join(str(exc).split())[:160]}"
        ) from exc
    if out.numel() != 2:
        raise ModelSpecError(
            f"model {uri} gives output of shape {tuple(out.shape)}, not one logit per image"
        )


def resolve_screening_model(specs: Sequence[str]) -> ScreeningModel:
    """Resolve every spec (fail fast, one line), merge several into an ensemble, dry-run it."""
    flat = split_specs(specs)
    if not flat:
        raise ModelSpecError("no model given: pass --model URI or a bundle folder")
    members = tuple(scoring_model(spec) for spec in flat)
    first = members[0].info
    for m in members[1:]:
        if (m.info.size, m.info.mean, m.info.std) != (first.size, first.mean, first.std):
            raise ModelSpecError(
                f"ensemble members differ in input: {members[0].uri} takes {first.size}px "
                f"mean {first.mean}, {m.uri} takes {m.info.size}px mean {m.info.mean}"
            )
    for m in members:
        _check_forward(m.folder, m.info, m.uri)
    if len(members) == 1:
        return ScreeningModel(members[0].folder, first, members)
    threshold = sum(m.info.threshold for m in members) / len(members)
    # one threshold (the members' mean), no temperature, no per-part thresholds and no
    # reference: those belong to each member's own probabilities, not to their average
    info = replace(
        first,
        threshold=threshold,
        extra=replace(first.extra, ensemble_of=tuple(m.uri for m in members)),
        temperature=1.0,
        part_thresholds=None,
    )
    folder = process_folder("mura-ensemble-")
    save_ensemble_folders(folder, [m.folder for m in members], info)
    return ScreeningModel(folder, info, members)
