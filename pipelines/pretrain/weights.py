"""`--weights` of `mura train` from the model registry: `models:/NAME/VERSION`,
`models:/NAME@alias`, `runs:/ID/model`, or a bundle folder (a `mura pretrain` encoder's, or
a trained classifier's).

Resolved on the driver, before any worker starts, into the same thing the FILE path gives:
`pipelines.registry.model_store.resolve_model` brings the bundle to a temporary folder; its
`encoder.pt` (a pretrained encoder's `--weights FILE` state dict) — or, for a classifier, its
weights without the head (`mura_core.ssl.encoder_state`) — goes through
`mura_core.initial_weights` exactly as a FILE does (loaded with `weights_only`,
checked against the architecture); the folder is removed. Anything else (`imagenet`, `none`,
a FILE) is `initial_weights` unchanged. The label the run prints and logs says which model,
version and MLflow run the weights came from, and the file's digest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mura_core.checkpoints import MEMBERS, is_bundle, load_bundle
from mura_core.initial_weights import InitialWeights, WeightsError, initial_weights
from mura_core.models import Backbone
from mura_core.ssl import ENCODER_FILE, encoder_state, is_encoder
from pipelines.registry.model_store import ModelSpecError, resolve_model
from pipelines.registry.tracking import use_tracking

REGISTRY_PREFIXES = ("models:/", "runs:/")


def is_model_spec(spec: str) -> bool:
    """Whether `--weights` names a logged model (a URI, or a bundle folder) rather than
    imagenet, none or a state-dict file."""
    if spec.startswith(REGISTRY_PREFIXES):
        return True
    local = Path(spec).expanduser()
    return local.is_dir() and is_bundle(local)


def resolve_initial_weights(spec: str, model: str, tracking_uri: str) -> InitialWeights:
    """`--weights` → the checked tensors and their label, or one WeightsError line."""
    if model == "cnn" or not is_model_spec(spec):
        return initial_weights(spec, model)  # its own lines, the seed CNN's refusal included
    if spec.startswith(REGISTRY_PREFIXES):
        use_tracking(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mura-weights-") as tmp:
        try:
            resolved = resolve_model(spec, cache=Path(tmp))
        except ModelSpecError as exc:
            raise WeightsError(f"--weights {spec}: {exc}") from None
        info = resolved.info
        kind = "encoder" if is_encoder(info.extra) else "classifier"
        if info.model != model:
            raise WeightsError(
                f"--weights {spec} is a {info.model} {kind}, this run trains {model}: "
                f"pass --model {info.model}"
            )
        if (resolved.folder / MEMBERS).is_dir():
            raise WeightsError(
                f"--weights {spec} is an ensemble: start from one model (a single bundle)"
            )
        path = resolved.folder / ENCODER_FILE
        if not path.is_file():  # a classifier: its tensors without the head
            loaded_model, _ = load_bundle(resolved.folder)
            backbone = getattr(loaded_model, "model", loaded_model)  # FlipTTA wraps it
            if not isinstance(backbone, Backbone):
                raise WeightsError(f"--weights {spec}: {info.model} has no backbone to start from")
            path = Path(tmp) / ENCODER_FILE
            torch.save(encoder_state(backbone), path)
        loaded = initial_weights(str(path), model)
    origin = ", ".join(
        part
        for part in (
            f"{kind} {info.model}",
            info.extra.method,
            f"{resolved.name} v{resolved.version}" if resolved.version else None,
            f"MLflow run {resolved.run_id}" if resolved.run_id else None,
        )
        if part
    )
    return InitialWeights(f"{spec} ({origin}; {loaded.label})", loaded.state)
