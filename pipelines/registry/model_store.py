"""Models in and out of MLflow: log + register a bundle, resolve a model spec back to one.

A logged model is MLflow's PyTorch flavour (pt2, loadable with `mlflow.pytorch.load_model`)
plus the project's own bundle (`weights.pt` + `model.json`, see `mura_core.checkpoints`) as
`extra_files/bundle.tar`, which is what evaluation and screening rebuild from: tensors and
JSON only, no unpickling, and the threshold chosen at training travels with the weights.
A model.json that `mura_core.checkpoints` refuses makes `resolve_model` fail in one line.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from mura_core.checkpoints import MODEL_JSON, BundleError, is_bundle, load_bundle, read_info
from mura_core.errors import MuraError
from mura_core.model_info import ModelInfo
from mura_core.run_contract import ModelVersionTags
from mura_core.ssl import is_encoder

BUNDLE_TAR = "bundle.tar"


# Folders a resolved model lives in for this process: its callers read them until they exit
# (`resolve_model(...).folder` outlives the ResolvedModel), and each is removed at exit by
# its TemporaryDirectory's finalizer. A mkdtemp per resolution leaked ~300 MB a run.
_PROCESS_FOLDERS: list[tempfile.TemporaryDirectory] = []


def process_folder(prefix: str) -> Path:
    """A temporary folder that lasts until this process exits, then is removed."""
    folder = tempfile.TemporaryDirectory(prefix=prefix)
    _PROCESS_FOLDERS.append(folder)
    return Path(folder.name)


class ModelSpecError(MuraError):
    """A model spec (URI or path) that does not resolve to a usable model."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model bundle on local disk and where it came from."""

    folder: Path
    info: ModelInfo
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None


def _tar(folder: Path, into: Path) -> Path:
    path = into / BUNDLE_TAR
    with tarfile.open(path, "w") as tar:
        for item in sorted(folder.rglob("*")):
            if item.is_file():
                tar.add(item, arcname=item.relative_to(folder).as_posix())
    return path


def log_bundle(
    bundle_dir: Path, *, registered_name: str | None, tags: ModelVersionTags
) -> tuple[str, str | None]:
    """Log the bundle's model (inside an active MLflow run) and register it; (uri, version).
    The logged model carries `tags`; the registered version those and the bundle's
    threshold."""
    model, info = load_bundle(bundle_dir)
    example = np.random.default_rng(0).random((2, 3, info.size, info.size), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="mura-bundle-") as tmp:
        logged = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            extra_files=[str(_tar(bundle_dir, Path(tmp)))],
            registered_model_name=registered_name,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchvision", "numpy"],
            metadata={"mura": info.to_json()},
            tags=tags.to_tags(),
            # MLflow would load the pt2 back and score the example (15 s of DenseNet-169's
            # 35); tests/pipelines/test_train.py loads a registered model back and compares
            # its scores with the bundle's instead
            validate_serving_input=False,
        )
    version = getattr(logged, "registered_model_version", None)
    if registered_name and version is not None:
        client = MlflowClient()
        for key, value in replace(tags, threshold=info.threshold).to_tags().items():
            client.set_model_version_tag(registered_name, str(version), key, value)
    return logged.model_uri, None if version is None else str(version)


def _extract(archive: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


DEFAULT_ALIAS = "champion"


def alias_uri(alias: str) -> str:
    """`@champion` → `models:/<the registered model holding that alias>@champion`.

    `mura compare --promote` keeps one model per alias, so the alias alone names a model:
    what `mura screen` and `mura nightly` use when no --model is given.
    """
    client = MlflowClient()
    try:
        holders = [m.name for m in client.search_registered_models() if alias in (m.aliases or {})]
    except Exception as exc:
        raise ModelSpecError(
            f"model @{alias}: the registry cannot be read: {' '.join(str(exc).split())[:160]}"
        ) from exc
    if not holders:
        raise ModelSpecError(
            f"no registered model has the alias {alias!r}: promote one with "
            "`mura compare --promote RUN_ID`, or pass --model"
        )
    if len(holders) > 1:
        raise ModelSpecError(
            f"several models have the alias {alias!r} ({', '.join(sorted(holders))}): "
            f"pass --model models:/NAME@{alias}"
        )
    return f"models:/{holders[0]}@{alias}"


def resolve_model(spec: str, *, cache: Path | None = None) -> ResolvedModel:
    """`models:/name@alias`, `models:/name/3`, `@alias` (the one model holding it),
    `runs:/<id>/model`, a logged-model URI, or a local bundle folder → a local bundle folder,
    or a one-line ModelSpecError."""
    if spec.startswith("@"):
        spec = alias_uri(spec[1:])
    local = Path(spec).expanduser()
    if "://" not in spec and not spec.startswith(("models:", "runs:")):
        if is_bundle(local):
            try:
                info = read_info(local)
            except BundleError as exc:  # its one line names the file
                raise ModelSpecError(str(exc)) from exc
            return ResolvedModel(local.resolve(), info, str(local.resolve()))
        raise ModelSpecError(
            f"{spec}: not a model URI (models:/…, runs:/…) and not a model "
            f"bundle folder (no {MODEL_JSON})"
        )
    target = cache or process_folder("mura-model-")
    try:
        downloaded = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(target / "mlflow"))
        )
    except Exception as exc:  # MLflow raises several types for a missing model
        raise ModelSpecError(
            f"model {spec} does not resolve: {' '.join(str(exc).split())[:200]}"
        ) from exc
    archives = list(downloaded.rglob(BUNDLE_TAR))
    if not archives:
        raise ModelSpecError(f"model {spec} has no {BUNDLE_TAR}: not logged by `mura train`")
    folder = _extract(archives[0].read_bytes(), target / "bundle")
    name = version = run_id = None
    if spec.startswith("models:/") and not spec.startswith("models:/m-"):
        name, version, run_id = _registry_lookup(spec)
    try:
        info = read_info(folder)
    except BundleError as exc:
        raise ModelSpecError(f"model {spec}: {exc}") from exc
    return ResolvedModel(folder, info, spec, name, version, run_id or info.extra.run_id)


def scoring_model(spec: str) -> ResolvedModel:
    """`resolve_model` for scoring (evaluate, screen): a pretrained encoder from `mura
    pretrain` (model.json extra.kind = encoder) is refused in one line — its head is zeros,
    it would score every image 0.5."""
    model = resolve_model(spec)
    if is_encoder(model.info.extra):
        raise ModelSpecError(
            f"{spec} is a pretrained encoder (mura pretrain), not a classifier: fine-tune it "
            f"first with mura train --weights {spec}"
        )
    return model


def _registry_lookup(spec: str) -> tuple[str, str | None, str | None]:
    """Name, version and run of a registry URI (`models:/name@alias` or `models:/name/N`)."""
    body = spec.removeprefix("models:/")
    client = MlflowClient()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = body.partition("/")
            mv = client.get_model_version(name, version) if version else None
    except Exception as exc:
        raise ModelSpecError(
            f"model {spec} does not resolve: {' '.join(str(exc).split())[:200]}"
        ) from exc
    if mv is None:
        return body, None, None
    return mv.name, str(mv.version), mv.run_id
