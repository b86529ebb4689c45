"""`mura compare`: runs side by side, the bar chart, promotion to champion — real SQLite MLflow.

Fast tests build runs by hand (the metric and param names `mura train` logs, a random-init
seed-CNN bundle logged with `log_bundle`); the slow one compares the session's trained run
with a second run in a *copy* of its store, so the shared store other tests read is untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pytest
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from jobs.cli import main as cli
from mura_core.checkpoints import save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.recipes import recipe
from mura_core.run_contract import ModelVersionTags, ci_names
from mura_core.synth import SynthArchive
from pipelines.registry.model_store import log_bundle, resolve_model
from pipelines.registry.promote import promote
from pipelines.registry.runs import CompareError, load_runs
from pipelines.registry.runs_table import format_table, plot
from pipelines.registry.tracking import (
    ensure_experiment,
    sqlite_path,
    tracking_client,
    use_tracking,
)

if TYPE_CHECKING:
    from tests.pipelines.conftest import Trained

EXPERIMENT = "cmp"


client_of = tracking_client  # tracking and registry both `uri`


def random_bundle(folder: Path, *, threshold: float = 0.4) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("cnn", size=32)
    info = ModelInfo.from_recipe(recipe("seed-cnn").override(size=32), threshold=threshold)
    return save_bundle(folder, model, info)


def metrics_of(kappa: float, auroc: float, acc: float) -> dict[str, float]:
    """What `mura train` logs (a subset), with a forearm and a wrist kappa."""
    return {
        "train.image.accuracy": acc + 0.05,
        "val.image.accuracy": acc + 0.01,
        "test.image.accuracy": acc,
        "test.study.accuracy": acc + 0.02,
        "test.study.auroc": auroc,
        "test.study.kappa": kappa,
        "test.study.kappa_ci_low": kappa - 0.1,
        "test.study.kappa_ci_high": kappa + 0.08,
        "test.study.kappa.XR_FOREARM": kappa + 0.03,
        "test.study.kappa.XR_WRIST": kappa - 0.04,
        "test.threshold": 0.4,
    }


def log_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    metrics: dict[str, float],
    *,
    bundle: Path | None = None,
    register: str | None = None,
    body_part: str = "all",
) -> str:
    """A finished run like `mura train`'s: params, flat metrics, optionally a logged model."""
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    for key, value in {"recipe": "seed-cnn", "model": "cnn", "body_part": body_part}.items():
        client.log_param(run_id, key, value)
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    if bundle is not None:
        use_tracking(client.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            log_bundle(bundle, registered_name=register, tags=ModelVersionTags(run_id))
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Runs `good` (kappa .80, registered mura-cnn v1), `fair` (kappa .70, model logged but
    not registered), `nomodel` (AUROC only, no model), an empty experiment, and a run left
    unfinished."""
    work = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = client_of(uri)
    exp = ensure_experiment(client, EXPERIMENT)
    ensure_experiment(client, "empty")
    bundle = random_bundle(work / "bundle")
    ids = {
        "uri": uri,
        "good": log_run(
            client, exp, "good", metrics_of(0.80, 0.90, 0.85), bundle=bundle, register="mura-cnn"
        ),
        "fair": log_run(client, exp, "fair", metrics_of(0.70, 0.95, 0.80), bundle=bundle),
        "nomodel": log_run(client, exp, "nomodel", {"test.study.auroc": 0.6}),
    }
    client.create_run(exp, run_name="still-running")
    return ids


def test_ci_names() -> None:
    assert ci_names("test.study.kappa") == ("test.study.kappa_ci_low", "test.study.kappa_ci_high")
    assert ci_names("test.study.kappa.XR_WRIST") == (
        "test.study.kappa_ci_low.XR_WRIST",
        "test.study.kappa_ci_high.XR_WRIST",
    )


def test_load_runs_sorts_by_the_metric_missing_last(store: dict[str, str]) -> None:
    client = client_of(store["uri"])
    rows = load_runs(client, EXPERIMENT)
    assert [r.run_name for r in rows] == ["good", "fair", "nomodel"]  # unfinished left out
    good = rows[0]
    assert good.model == "cnn" and good.recipe == "seed-cnn" and good.body_part == "all"
    assert good.study_kappa == pytest.approx(0.80)
    assert good.kappa_ci == pytest.approx((0.70, 0.88))
    assert good.kappa_by_part == pytest.approx({"XR_FOREARM": 0.83, "XR_WRIST": 0.76})
    assert good.train_accuracy == pytest.approx(0.90) and good.test_accuracy == pytest.approx(0.85)
    assert [(r.name, r.version) for r in good.registered] == [("mura-cnn", "1")]
    assert rows[1].logged_model and not rows[1].registered
    assert not rows[2].logged_model and rows[2].study_kappa is None
    table = format_table(rows).splitlines()
    assert len(table) == 4 and table[1].startswith(store["good"][:8] + "  good ")
    by_auroc = load_runs(client, EXPERIMENT, metric="test.study.auroc")
    assert [r.run_name for r in by_auroc] == ["fair", "good", "nomodel"]
    picked = load_runs(client, run_ids=[store["fair"][:8], store["nomodel"]])
    assert [r.run_name for r in picked] == ["fair", "nomodel"]


def test_cli_prints_the_table(store: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    assert cli(["compare", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT]) == 0
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert "3 run(s) of experiment cmp, best first by test.study.kappa" in lines[0]
    head = lines[1].split()
    for column in ("model", "recipe", "acc", "AUROC", "FOREARM", "WRIST", "registered"):
        assert column in head
    good, fair, nomodel = lines[2:5]
    assert good.startswith(store["good"][:8]) and "0.800 (0.700, 0.880)" in good
    assert "0.830" in good and "0.760" in good and "mura-cnn v1" in good
    assert fair.startswith(store["fair"][:8]) and "logged, not registered" in fair
    assert nomodel.startswith(store["nomodel"][:8]) and "no model" in nomodel
    # columns line up: the registered column starts at the same offset in every line
    words = ("mura-cnn v1", "logged,", "no model")
    offsets = {line.index(word) for line, word in zip(lines[2:5], words, strict=True)}
    assert offsets == {lines[1].index("registered")}


def test_cli_errors_are_one_line(
    store: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    def error(*argv: str) -> str:
        assert cli(["compare", "--tracking-uri", store["uri"], *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mura: error: "), err
        return err

    err = error("--experiment", EXPERIMENT, "--metric", "test.study.kapa")
    assert "unknown metric 'test.study.kapa'" in err and "test.study.kappa" in err
    err = error("--experiment", "nope")
    assert "no experiment 'nope'" in err and "cmp" in err and "empty" in err
    assert "has no finished runs" in error("--experiment", "empty")
    assert "unknown run id 'ffffffff'" in error("--runs", "ffffffff")
    err = error("--promote", store["nomodel"])
    assert "has no logged model to promote" in err
    missing = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    (tmp_path / "none").mkdir()
    assert cli(["compare", "--tracking-uri", missing]) == 1
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "none" / "mlflow.db").exists()  # nothing created


def test_promote_registers_and_moves_the_alias(
    store: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    client = client_of(store["uri"])
    # a registry URI left behind in this process (another test, a library) is not used
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert cli(["compare", "--tracking-uri", store["uri"], "--promote", store["good"]]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"champion → mura-cnn v1 (run {store['good']})"), out
    assert client.get_model_version_by_alias("mura-cnn", "champion").run_id == store["good"]

    # `fair` logged a model that was never registered: promoting registers it as mura-cnn v2
    done = promote(client, store["fair"][:10])
    assert (done.name, done.version, done.previous, done.registered_now) == (
        "mura-cnn",
        "2",
        "1",
        True,
    )
    version = client.get_model_version_by_alias("mura-cnn", "champion")
    assert version.run_id == store["fair"] and str(version.version) == "2"
    assert version.tags["threshold"] == "0.4" and version.tags["body_part"] == "all"
    use_tracking(store["uri"])
    resolved = resolve_model("models:/mura-cnn@champion", cache=tmp_path / "m")
    assert (resolved.name, resolved.version, resolved.run_id) == ("mura-cnn", "2", store["fair"])
    assert resolved.info.threshold == pytest.approx(0.4)
    row = next(r for r in load_runs(client, EXPERIMENT) if r.run_id == store["fair"])
    assert [str(r) for r in row.registered] == ["mura-cnn v2 @champion"]

    # and back: the alias moves, no new version
    assert cli(["compare", "--tracking-uri", store["uri"], "--promote", store["good"]]) == 0
    assert "(run " + store["good"] + "; was v2)" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("mura-cnn", "champion").version) == "1"
    assert len(client.search_model_versions("name='mura-cnn'")) == 2
    with pytest.raises(CompareError, match="no logged model"):
        promote(client, store["nomodel"])


def test_plot_writes_a_png(store: dict[str, str], tmp_path: Path) -> None:
    rows = load_runs(client_of(store["uri"]), EXPERIMENT)
    path = plot(rows, "test.study.kappa", tmp_path / "kappa.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(CompareError, match="no run has metric"):
        plot(rows, "test.image.auroc", tmp_path / "none.png")


@pytest.mark.slow
def test_compare_and_promote_the_trained_run(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = trained.own_store(tmp_path / "store").uri
    client = client_of(uri)
    first = trained.result.run_id
    assert client.get_run(first).data.metrics == client_of(trained.uri).get_run(first).data.metrics
    # a second run of the same experiment: the trained bundle again, weaker numbers, registered
    use_tracking(uri)
    bundle = resolve_model(f"models:/test-cnn/{trained.result.version}", cache=tmp_path / "m")
    theirs = client.get_run(first).data.metrics
    weaker = {
        k: v - 0.1
        for k, v in theirs.items()
        if k.startswith(("train.", "val.", "test.")) and not k.endswith(".n")
    }
    experiment = client.get_run(first).info.experiment_id
    second = log_run(
        client,
        experiment,
        "second",
        weaker,
        bundle=bundle.folder,
        register="test-cnn",
        body_part="XR_FOREARM",
    )
    assert sqlite_path(uri).parent.joinpath("mlartifacts").is_dir()
    assert str(tmp_path) in client.get_experiment(experiment).artifact_location

    plot_path = tmp_path / "kappa.png"
    argv = ["compare", "--tracking-uri", uri, "--experiment", "test-train", "--plot"]
    assert cli([*argv, str(plot_path)]) == 0
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert "2 run(s)" in lines[0]
    top, bottom = lines[2], lines[3]
    assert top.startswith(first[:8]) and bottom.startswith(second[:8])  # sorted by kappa
    for line, metrics in ((top, theirs), (bottom, client.get_run(second).data.metrics)):
        for key in (
            "train.image.accuracy",
            "val.image.accuracy",
            "test.image.accuracy",
            "test.study.auroc",
            "test.study.kappa.XR_FOREARM",
        ):
            assert f" {metrics[key]:.3f} " in f" {line} ", (key, line)
        kappa = (
            f"{metrics['test.study.kappa']:.3f} ({metrics['test.study.kappa_ci_low']:.3f}, "
            f"{metrics['test.study.kappa_ci_high']:.3f})"
        )
        assert kappa in line
    assert "test-cnn v1" in top and "test-cnn v2" in bottom and "XR_FOREARM" in bottom
    assert "cnn" in top.split() and "seed-cnn" in top.split()
    assert plot_path.read_bytes()[:4] == b"\x89PNG"

    for run_id, version in ((first, "1"), (second, "2"), (first, "1")):
        assert cli(["compare", "--tracking-uri", uri, "--promote", run_id]) == 0
        assert f"champion → test-cnn v{version} (run {run_id}" in capsys.readouterr().out
        champion = client.get_model_version_by_alias("test-cnn", "champion")
        assert champion.run_id == run_id and str(champion.version) == version
    # the shared store is untouched
    with pytest.raises(mlflow.exceptions.MlflowException):
        client_of(trained.uri).get_model_version_by_alias("test-cnn", "champion")
    assert len(client_of(trained.uri).search_model_versions("name='test-cnn'")) == 1


def test_one_model_holds_the_alias_and_screen_defaults_to_it(
    tmp_path: Path, ray_local: None, mura_archive: SynthArchive
) -> None:
    """Promoting a DenseNet over a CNN takes `champion` from mura-cnn: `@champion` (the
    default --model of screen and nightly) then names exactly one model."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_of(uri)
    exp = ensure_experiment(client, EXPERIMENT)
    bundle = random_bundle(tmp_path / "bundle")
    cnn = log_run(client, exp, "cnn", metrics_of(0.7, 0.9, 0.8), bundle=bundle, register="mura-cnn")
    other = log_run(
        client, exp, "other", metrics_of(0.8, 0.9, 0.8), bundle=bundle, register="mura-other"
    )
    promote(client, cnn)
    use_tracking(uri)
    assert resolve_model("@champion", cache=tmp_path / "a").name == "mura-cnn"
    done = promote(client, other)
    assert done.demoted == ("mura-cnn v1",)
    assert "champion" not in client.get_registered_model("mura-cnn").aliases
    use_tracking(uri)
    chosen = resolve_model("@champion", cache=tmp_path / "b")
    assert (chosen.name, chosen.run_id) == ("mura-other", other)

    # `mura screen` without --model scores with the champion
    out = tmp_path / "report"
    assert cli(["screen", str(mura_archive.root), "--out", str(out), "--tracking-uri", uri]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "mura-other" and summary["model"]["version"] == "1"
