"""Model bundles that are not safe or not sane: one BundleError line naming the file, never a
traceback, never torch's advice to load the file unsafely, and nothing built before the
model.json is checked. Real files and real torch throughout."""

from __future__ import annotations

import json
import os
import resource
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mura_core.checkpoints import (
    MODEL_JSON,
    WEIGHTS,
    BundleError,
    TrainingState,
    load_bundle,
    load_training_checkpoint,
    read_info,
    save_bundle,
    save_training_checkpoint,
)
from mura_core.model_info import MAX_SIZE, MIN_SIZE, ModelInfo, ModelOrigin
from mura_core.models import FlipTTA, build_model, is_model_name
from mura_core.recipes import Recipe, recipe
from mura_core.run_contract import EpochReport

SIZE = 32
INFO = ModelInfo(model="cnn", size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class Payload:
    """Unpickled unsafely, it runs `touch MARKER` (the attack a weights.pt can carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return save_bundle(tmp_path / "bundle", build_model("cnn", size=SIZE), INFO)


def write_malicious(path: Path, marker: Path) -> None:
    """A real state dict with one more entry: an object whose unpickling runs a command."""
    state = dict(build_model("cnn", size=SIZE).state_dict())
    torch.save({**state, "extra": Payload(marker)}, path)


def refused(call: Any, *args: Any, path: Path) -> str:
    """The BundleError line `call(*args)` raises: one line, naming `path`, no unsafe advice."""
    with pytest.raises(BundleError) as caught:
        call(*args)
    line = str(caught.value)
    assert "\n" not in line and str(path) in line, line
    assert "weights_only" not in line, line
    return line


def test_a_sane_bundle_round_trips(bundle: Path) -> None:
    model, info = load_bundle(bundle)
    assert info.to_json() == INFO.to_json() and not model.training
    assert is_model_name("cnn") and is_model_name("resnet18") and not is_model_name("cnn9")


def test_a_pickle_carrying_code_is_refused_and_never_run(bundle: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write_malicious(bundle / WEIGHTS, marker)
    line = refused(load_bundle, bundle, path=bundle / WEIGHTS)
    assert "refused" in line and "pickle carrying code or objects" in line, line
    assert "system" in line and "nothing in it was run" in line, line
    model = build_model("cnn", size=SIZE)
    refused(load_training_checkpoint, bundle, model, path=bundle / WEIGHTS)
    assert not marker.exists()
    # control: the file really carries the command (unpickled unsafely, it runs it)
    torch.load(bundle / WEIGHTS, weights_only=False)
    assert marker.exists()


def test_a_truncated_weights_file_is_refused(bundle: Path) -> None:
    data = (bundle / WEIGHTS).read_bytes()
    (bundle / WEIGHTS).write_bytes(data[: len(data) // 2])
    line = refused(load_bundle, bundle, path=bundle / WEIGHTS)
    assert "not a readable torch weights file" in line, line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, not torch", "not a readable torch weights file"),
        (b"", "not a readable torch weights file"),
    ],
)
def test_a_file_that_is_not_torch_is_refused(bundle: Path, content: bytes, message: str) -> None:
    (bundle / WEIGHTS).write_bytes(content)
    assert message in refused(load_bundle, bundle, path=bundle / WEIGHTS)


def _state() -> dict[str, Any]:
    return dict(build_model("cnn", size=SIZE).state_dict())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: torch.zeros(3), "it holds a Tensor, not a state dict of tensors"),
        (lambda: {**_state(), "epoch": 3}, "it holds 'epoch': int, not a state dict of tensors"),
        (lambda: {"state_dict": _state()}, "it holds 'state_dict': dict"),
        (
            lambda: {k: v for k, v in _state().items() if k != "classifier.1.bias"},
            "its keys do not fit cnn at 32px: 1 missing (classifier.1.bias), 0 unexpected ()",
        ),
        (
            lambda: {**_state(), "head.weight": torch.zeros(1)},
            "1 unexpected (head.weight)",
        ),
        (
            lambda: dict(build_model("cnn", size=64).state_dict()),
            "it does not fit cnn at 32px: classifier.1.weight is 64x4608, the model's is 64x512",
        ),
    ],
    ids=["tensor", "non-tensor", "nested", "missing", "unexpected", "shape"],
)
def test_weights_that_are_not_the_models_state_dict_are_refused(
    bundle: Path, make: Any, message: str
) -> None:
    torch.save(make(), bundle / WEIGHTS)
    line = refused(load_bundle, bundle, path=bundle / WEIGHTS)
    assert line.startswith(f"{bundle / WEIGHTS} refused: ") and message in line, line


def test_a_training_checkpoint_is_checked_by_the_same_helper(tmp_path: Path) -> None:
    model = build_model("cnn", size=SIZE)
    history = [EpochReport(2, train_loss=0.5, val_loss=1.0)]
    state = TrainingState(epoch=2, optimizer={}, scheduler={}, history=history)
    folder = save_training_checkpoint(tmp_path / "ckpt", model, INFO, state)
    back = load_training_checkpoint(folder, build_model("cnn", size=SIZE))
    assert back.epoch == 2 and back.history == history
    assert json.loads((folder / "history.json").read_text()) == [
        {"epoch": 2, "train_loss": 0.5, "val_loss": 1.0}
    ]
    torch.save(dict(build_model("cnn", size=64).state_dict()), folder / WEIGHTS)
    line = refused(load_training_checkpoint, folder, build_model("cnn", size=SIZE), path=folder)
    assert "does not fit SeedCNN" in line, line


def _with(bundle: Path, **changes: Any) -> Path:
    data = json.loads((bundle / MODEL_JSON).read_text())
    data.update(changes)
    (bundle / MODEL_JSON).write_text(json.dumps(data))
    return bundle


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "resnet9000"}, "model 'resnet9000' is not a known architecture (cnn, "),
        ({"model": 3}, "model 3 is not a known architecture"),
        ({"size": 20000}, f"size 20000 is not an integer within {MIN_SIZE}..{MAX_SIZE}"),
        ({"size": MIN_SIZE - 1}, f"size {MIN_SIZE - 1} is not an integer within"),
        ({"size": 32.5}, "size 32.5 is not an integer within"),
        ({"size": "32"}, "size '32' is not an integer within"),
        ({"size": True}, "size True is not an integer within"),
        ({"mean": [0.5, 0.5]}, "mean (0.5, 0.5) is not three finite numbers"),
        ({"mean": [0.5, "x", 0.5]}, "mean (0.5, 'x', 0.5) is not three finite numbers"),
        ({"mean": [0.5, float("nan"), 0.5]}, "mean (0.5, nan, 0.5) is not three finite numbers"),
        ({"mean": 0.5}, "mean 0.5 is not three finite numbers"),
        ({"std": [0.2, 0, 0.2]}, "std (0.2, 0, 0.2) is not three finite numbers > 0"),
        ({"std": [0.2, 0.2, float("inf")]}, "std (0.2, 0.2, inf) is not three finite"),
        ({"threshold": 1.5}, "threshold 1.5 is not a number within 0..1"),
        ({"threshold": -0.1}, "threshold -0.1 is not a number within 0..1"),
        ({"threshold": "0.5"}, "threshold '0.5' is not a number within 0..1"),
        ({"temperature": 0}, "temperature 0 is not a finite number > 0"),
        ({"temperature": float("inf")}, "temperature inf is not a finite number > 0"),
        ({"part_thresholds": {"XR_WRIST": 2}}, "part_thresholds 'XR_WRIST': 2 is not a thres"),
        ({"part_thresholds": [0.5]}, "part_thresholds [0.5] is not an object"),
        ({"extra": [1]}, "extra [1] is not an object"),
        ({"in_channels": 2}, "in_channels 2 is not 1 or 3"),
        ({"tta": "yes"}, "tta 'yes' is not true or false"),
        ({"format_version": 2}, "model bundle format 2 is not 1"),
    ],
)
def test_each_bad_model_json_value_is_one_line(
    bundle: Path, changes: dict[str, Any], message: str
) -> None:
    _with(bundle, **changes)
    for call in (read_info, load_bundle):
        line = refused(call, bundle, path=bundle / MODEL_JSON)
        assert line == f"{bundle / MODEL_JSON} refused: {line.split('refused: ', 1)[1]}"
        assert message in line, line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "refused: not JSON (Expecting property name"),
        ("[1, 2]", "refused: not a JSON object but a list"),
        ("", "refused: not JSON"),
    ],
)
def test_a_model_json_that_is_not_a_json_object_is_one_line(
    bundle: Path, text: str, message: str
) -> None:
    (bundle / MODEL_JSON).write_text(text)
    assert message in refused(read_info, bundle, path=bundle / MODEL_JSON)


@pytest.mark.parametrize("key", ["format_version", "model", "size", "mean", "std"])
def test_a_model_json_missing_a_key_is_one_line(bundle: Path, key: str) -> None:
    data = json.loads((bundle / MODEL_JSON).read_text())
    del data[key]
    (bundle / MODEL_JSON).write_text(json.dumps(data))
    assert f"misses the key(s) {key}" in refused(load_bundle, bundle, path=bundle / MODEL_JSON)


def test_a_huge_size_is_refused_before_any_model_is_built(bundle: Path) -> None:
    """size 20000 once built a 9.6 GB seed CNN; now nothing is allocated at all."""
    _with(bundle, size=20000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(load_bundle, bundle, path=bundle / MODEL_JSON)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024


def test_model_info_itself_refuses_bad_values() -> None:
    """The same checks hold for a ModelInfo built in code (a body part key must be a str)."""
    with pytest.raises(BundleError, match="part_thresholds key 3 is not a body part name"):
        ModelInfo(**{**INFO.__dict__, "part_thresholds": {3: 0.5}})
    with pytest.raises(BundleError, match="temperature -1.0 is not a finite number > 0"):
        ModelInfo(**{**INFO.__dict__, "temperature": -1.0})
    ok = ModelInfo(**{**INFO.__dict__, "threshold": 1, "part_thresholds": {"XR_HAND": 0}})
    assert ok.threshold == 1.0 and isinstance(ok.threshold, float)
    assert ok.part_thresholds == {"XR_HAND": 0.0}


def test_numpy_numbers_are_numbers_and_stored_plain() -> None:
    """Training computes thresholds with numpy: float32 and int64 pass, stored plain."""
    info = ModelInfo(**{**INFO.__dict__, "size": np.int64(SIZE), "threshold": np.float32(0.25)})
    assert (info.size, info.threshold) == (SIZE, 0.25)
    assert type(info.size) is int and type(info.threshold) is float


def test_ingest_takes_its_size_bounds_from_the_same_place() -> None:
    from mura_core.errors import ConfigError
    from pipelines.ingest.config import IngestConfig

    for size in (MIN_SIZE - 1, MAX_SIZE + 1):
        with pytest.raises(ConfigError, match=f"between {MIN_SIZE} and {MAX_SIZE} px"):
            IngestConfig(source=Path("."), out=Path("out"), size=size)
    assert IngestConfig(source=Path("."), out=Path("out"), size=MAX_SIZE).size == MAX_SIZE


def test_a_scratch_model_carries_its_one_channel_stem_tta_and_ema_weights(tmp_path: Path) -> None:
    """The `scratch` recipe's bundle says one channel and TTA; loading it gives the flip TTA
    around the one-channel network, fed by a one-channel eval preset; a training checkpoint
    with EMA keeps the trained weights beside the averaged ones (resume)."""
    scratch = recipe("scratch").override(size=SIZE)
    info = ModelInfo.from_recipe(scratch)
    assert (info.in_channels, info.tta) == (1, True)
    model = build_model("resnet18", size=SIZE, in_channels=1)
    folder = save_bundle(tmp_path / "scratch", model, info)
    loaded, read = load_bundle(folder)
    assert isinstance(loaded, FlipTTA) and (read.in_channels, read.tta) == (1, True)
    x = read.eval_preset()(torch.randint(0, 255, (2, SIZE, SIZE), dtype=torch.uint8))
    assert x.shape == (2, 1, SIZE, SIZE)
    with torch.no_grad():
        mirrored = loaded(x.flip(-1))
        assert torch.allclose(loaded(x), mirrored, atol=1e-5)  # a mirror gets the same score
    trained = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state = TrainingState(1, {}, {}, [], trained=trained, ema_updates=7)
    ckpt = save_training_checkpoint(tmp_path / "ckpt", model, info, state)
    back = load_training_checkpoint(ckpt, build_model("resnet18", size=SIZE, in_channels=1))
    assert back.ema_updates == 7 and back.trained is not None
    assert torch.equal(back.trained["net.conv1.weight"], trained["net.conv1.weight"])
    again = save_bundle(tmp_path / "again", loaded, read)  # a loaded TTA model saved again
    assert isinstance(load_bundle(again)[0], FlipTTA)


SAMPLES = Path(__file__).parent.parent / "data" / "model_json"


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_model_json_written_before_typed_records_reads_and_writes_back_unchanged(
    name: str,
) -> None:
    """model.json files as the code wrote them when `recipe` and `extra` were plain objects
    (tests/data/model_json): read into a `Recipe` and a `ModelOrigin`, written back the same."""
    data = json.loads((SAMPLES / name).read_text())
    info = ModelInfo.from_json(data)
    assert isinstance(info.extra, ModelOrigin)
    assert info.recipe is None or isinstance(info.recipe, Recipe)
    written = json.loads(json.dumps(info.to_json()))
    if name == "classifier_older.json":  # the keys added since are written with defaults
        assert {k: written["recipe"][k] for k in data["recipe"]} == data["recipe"]
        assert {k: written[k] for k in data if k != "recipe"} == {
            k: v for k, v in data.items() if k != "recipe"
        }
        assert written["tta"] is False and written["recipe"]["optimizer"] == "adam"
    else:
        assert written == data


def test_model_origin_names_the_model_and_keeps_keys_it_does_not_know() -> None:
    data = json.loads((SAMPLES / "classifier.json").read_text())
    info = ModelInfo.from_json(data)
    assert info.recipe.name == "seed-cnn" and info.recipe.epochs == 3
    assert (info.extra.run_id, info.extra.ensemble_size, info.extra.kind) == (
        "0123456789abcdef0123456789abcdef",
        2,
        None,
    )
    encoder = ModelInfo.from_json(json.loads((SAMPLES / "encoder.json").read_text()))
    assert (encoder.extra.kind, encoder.extra.method, encoder.recipe) == ("encoder", "vicreg", None)
    screening = ModelInfo.from_json(json.loads((SAMPLES / "screening_ensemble.json").read_text()))
    assert screening.extra.ensemble_of == ("models:/mura-cnn/1", "models:/mura-cnn/2")
    newer = ModelInfo.from_json({**data, "extra": {**data["extra"], "site": "north"}})
    assert newer.extra.others == {"site": "north"}
    assert newer.to_json()["extra"]["site"] == "north"
    future = {**data, "recipe": {**data["recipe"], "mixup": 0.2}}  # a newer version's field
    assert ModelInfo.from_json(future).recipe == info.recipe


def test_a_recipe_that_is_no_recipe_is_one_line(bundle: Path) -> None:
    _with(bundle, recipe={"name": "odd", "model": "cnn"})
    line = refused(read_info, bundle, path=bundle / MODEL_JSON)
    assert "recipe 'odd' is not a recipe" in line, line
    _with(bundle, recipe={"name": "tiny", "model": "cnn", "size": 8, "batch_size": 1, "epochs": 1})
    assert "recipe 'tiny' is not a recipe (recipe tiny: size >= 32" in refused(
        read_info, bundle, path=bundle / MODEL_JSON
    )
