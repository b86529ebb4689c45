"""`mura demo`: the whole system on the embedded default (local Ray, SQLite MLflow, synthetic data).

Each stage is the same library call its own command makes; the demo only chains them and
chooses small sizes so that it runs in minutes on a laptop: forearm and humerus studies
(long bones) with bold synthetic signs (sign strength 4) that stay visible at 64 px, the
seed CNN and a short DenseNet-169 run (random init: no ImageNet weights offline) with flips
only, compared and the better promoted to @champion, which then screens a fresh incoming
archive. It ends with a summary: each stage's time, both models' study-level figures, the
champion, the flagged studies, and where the report and the MLflow store are.

With `--pacs` the incoming studies go through a throwaway Orthanc (loaded, screened by
DICOMweb, the results written back); with `--pacs --viewer`, once the summary is printed,
OHIF Viewer v3 is served in front of that Orthanc (`jobs.ohif.start_viewer`, fetched once
before any work), the URL of the first flagged study is printed, and the demo waits for
Ctrl-C or SIGTERM, then stops the viewer and the Orthanc (its Ray is shut down before the
wait: a browsing user needs none of it).
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow.parquet as pq

from jobs.common import progress
from jobs.demo_orthanc import (
    Orthanc,
    OrthancConfig,
    OrthancError,
    orthanc_binary,
    start_orthanc,
)
from jobs.ohif import OHIF_VERSION, cache_root, cached_dist, ohif_dist, start_viewer
from mura_core.archive import format_summary, list_archive
from mura_core.body_parts import BodyPart
from mura_core.errors import ConfigError
from mura_core.pacs.address import PacsAuth
from mura_core.pacs.client import PacsOptions
from mura_core.privacy import read_reidentify
from mura_core.recipes import Recipe, recipe
from mura_core.shards import REIDENTIFY_FILE
from mura_core.synth import SynthConfig, synthesize
from pipelines.ingest import IngestConfig, format_result, run_ingest
from pipelines.registry.promote import promote
from pipelines.registry.runs import DEFAULT_ALIAS, DEFAULT_METRIC, load_runs
from pipelines.registry.runs_table import format_table, plot
from pipelines.registry.tracking import tracking_client
from pipelines.runtime.cluster import done_with_ray
from pipelines.runtime.console import console
from pipelines.screen.config import ScreenConfig
from pipelines.screen.result import ScreenResult
from pipelines.screen.run import run_screen
from pipelines.train.config import TrainConfig
from pipelines.train.errors import TrainCollapsed
from pipelines.train.finish import TrainResult
from pipelines.train.run import run_training

DESCRIPTION = (
    "Synthesize an archive, ingest it into Parquet shards with Ray Data, train the seed CNN "
    "and a short DenseNet-169 run with Ray Train (logged and registered in a local SQLite "
    "MLflow store), compare them and promote the better to @champion, then screen a fresh "
    "synthetic 'incoming' archive with the champion into a report, and print a summary. "
    "With --pacs the incoming studies go through a throwaway Orthanc PACS and the results "
    "are written back into it; with --pacs --viewer, OHIF Viewer v3 then shows them (the "
    "first flagged study's URL is printed) until Ctrl-C, which stops the viewer and the PACS. "
    "Everything goes under --out; re-running reuses the archives."
)
DEMO_PARTS = (BodyPart.FOREARM, BodyPart.HUMERUS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="working folder")
    p.add_argument("--studies", type=int, default=500, help="studies to synthesize (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=160, help="longest image side (default 160)")
    p.add_argument("--shard-size", type=int, default=64, help="shard pixel size (default 64)")
    p.add_argument("--epochs", type=int, default=32, help="CNN epochs (default 32)")
    p.add_argument("--densenet-epochs", type=int, default=4, help="DenseNet-169 epochs (default 4)")
    p.add_argument(
        "--incoming", type=int, default=80, help="studies in the incoming archive (default 80)"
    )
    p.add_argument(
        "--pacs",
        action="store_true",
        help="screen the incoming studies through a throwaway Orthanc PACS (needs Debian's "
        "orthanc and orthanc-dicomweb): DICOM loaded into it, screened by DICOMweb, results "
        "written back as DICOM SR, Secondary Captures, heatmaps and key images; the PACS is "
        "stopped at the end",
    )
    p.add_argument(
        "--viewer",
        action="store_true",
        help="with --pacs: once the demo is done, serve OHIF Viewer v3 on 127.0.0.1 in front "
        "of its Orthanc (as `mura viewer` does; OHIF is fetched once with npm, ~50 MB, into "
        "~/.cache/mura/ohif, before any work), print the URL of the first flagged study and "
        "wait; Ctrl-C stops the viewer and the Orthanc",
    )


@dataclass
class Stages:
    """Each stage's name and wall time, in order, for the closing summary."""

    times: list[tuple[str, float]] = field(default_factory=list)
    current: tuple[str, float] | None = None
    started: float = field(default_factory=time.perf_counter)

    def start(self, number: int, title: str) -> None:
        self.close()
        console.print(f"\n[demo] {number}/6 {title}")
        self.current = (title.split(" (")[0].split(" →")[0], time.perf_counter())

    def close(self) -> None:
        if self.current is not None:
            name, began = self.current
            self.times.append((name, time.perf_counter() - began))
            self.current = None

    def table(self) -> list[str]:
        self.close()
        width = max(len(name) for name, _ in self.times)
        lines = [f"  {name:<{width}}  {seconds:6.0f} s" for name, seconds in self.times]
        return [*lines, f"  {'total':<{width}}  {time.perf_counter() - self.started:6.0f} s"]


def _synthesize(folder: Path, studies: int, seed: int, size: int, *, dicom: bool = False) -> None:
    if folder.exists():
        console.print(f"reusing {folder}")
        return
    synthesize(
        folder,
        SynthConfig(
            studies=studies,
            format="dicom" if dicom else "png",
            seed=seed,
            size=size,
            sign_strength=4.0,
            body_parts=DEMO_PARTS,
        ),
        progress=progress("synthesize"),
    )


def _screen_pacs(cfg: ScreenConfig, pacs: Orthanc, incoming: Path, out: Path) -> ScreenResult:
    """Load the incoming DICOM into the PACS, screen it by DICOMweb, write the results back."""
    files = [p for p in sorted(incoming.rglob("*")) if p.is_file() and p.suffix != ".csv"]
    loaded = sum(pacs.upload(p.read_bytes()) is not None for p in files)
    console.print(f"Orthanc at {pacs.http_url}: loaded {loaded} of {len(files)} files")
    options = PacsOptions(auth=PacsAuth(pacs.cfg.username, pacs.cfg.password))
    screened = run_screen(
        replace(
            cfg,
            source=pacs.dicomweb,
            labels=incoming / "labels.csv",
            pacs=options,
            write_back="",
            outbox=out / "outbox",
        )
    )
    console.print(
        f"PACS now holds {pacs.instance_count()} instances; to browse them later: "
        f"Orthanc {pacs.storage / 'orthanc.json'} and open {pacs.http_url}/app/explorer.html "
        f"(user {pacs.cfg.username}, password in that file), or see them in OHIF Viewer v3: "
        f"mura viewer {pacs.dicomweb} (MURA_PACS_USERNAME / MURA_PACS_PASSWORD from that file)"
    )
    return screened


def _train(
    args: argparse.Namespace, out: Path, shards: Path, tracking: str, chosen: Recipe, title: str
) -> TrainResult | None:
    """Train one model; a collapsed run is said and skipped (the other model goes on)."""
    try:
        result = run_training(
            TrainConfig(
                shards=shards,
                recipe=chosen.with_augment("flips"),
                tracking_uri=tracking,
                storage=out / "ray_results",
                seed=args.seed,
            )
        )
    except TrainCollapsed as exc:
        console.print(f"{title}: {exc}")
        return None
    console.print(
        f"{title}: {figures(result)}; registered {result.registered_name} v{result.version}"
    )
    return result


def figures(result: TrainResult) -> str:
    """Test study AUROC and kappa (95% CI) of a training run, in one phrase."""
    study = result.splits["test"].evaluation.study
    auroc = "n/a" if study.auroc is None else f"{study.auroc:.3f}"
    kappa = "n/a" if study.kappa is None else f"{study.kappa:.3f}"
    ci = f" ({study.kappa_ci[0]:.2f}–{study.kappa_ci[1]:.2f})" if study.kappa_ci else ""
    return f"test study AUROC {auroc}, kappa {kappa}{ci}"


def _checks(args: argparse.Namespace) -> Path | None:
    """What the flags need, before any work: --viewer needs --pacs, --pacs needs Orthanc,
    --viewer OHIF (fetched now, once). OHIF's `dist/` with --viewer, else None."""
    if args.viewer and not args.pacs:
        raise ConfigError(
            "--viewer needs --pacs: the viewer shows the demo's PACS (mura demo --pacs --viewer)"
        )
    if args.pacs and orthanc_binary() is None:
        raise OrthancError(
            "mura demo --pacs needs Orthanc and its DICOMweb plugin: "
            "apt-get install orthanc orthanc-dicomweb (or run the demo without --pacs)"
        )
    if not args.viewer:
        return None
    if cached_dist() is None:
        console.note(
            f"fetching OHIF {OHIF_VERSION} (npm pack @ohif/app, ~50 MB) into {cache_root()}…"
        )
    return ohif_dist()


def command(args: argparse.Namespace) -> int:
    viewer = _checks(args)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    console.keep_log(out, "demo")
    stages, tracking = Stages(), f"sqlite:///{out / 'mlflow.db'}"
    archive, shards = out / "archive", out / "shards"
    stages.start(1, f"synthesize {args.studies} forearm and humerus studies → {archive}")
    _synthesize(archive, args.studies, args.seed, args.size)
    console.print(format_summary(list_archive(archive)))

    stages.start(2, f"ingest with Ray Data at {args.shard_size} px → {shards}")
    ingested = run_ingest(IngestConfig(source=archive, out=shards, size=args.shard_size))
    console.print("\n".join(format_result(ingested).splitlines()[1:3]))

    stages.start(3, f"train the seed CNN ({args.epochs} epochs) with Ray Train → MLflow")
    cnn = recipe("seed-cnn").override(size=args.shard_size, batch_size=32, epochs=args.epochs)
    models = {"seed CNN": _train(args, out, shards, tracking, cnn, "seed CNN")}
    stages.start(
        4,
        f"train DenseNet-169 ({args.densenet_epochs} epochs, --weights none: random init, "
        "no ImageNet weights offline)",
    )
    densenet = recipe("seed-densenet").override(
        size=args.shard_size, batch_size=32, epochs=args.densenet_epochs, lr=1e-3, weights="none"
    )
    models["DenseNet-169"] = _train(args, out, shards, tracking, densenet, "DenseNet-169")

    stages.start(5, "compare the runs in MLflow, promote the better to @champion")
    champion = _compare(out, tracking, [r for r in models.values() if r is not None])

    incoming = out / ("incoming-dicom" if args.pacs else "incoming")
    stages.start(6, f"screen {args.incoming} incoming studies with @champion → {out / 'screening'}")
    _synthesize(incoming, args.incoming, args.seed + 1000, args.size, dicom=args.pacs)
    cfg = ScreenConfig(
        source=incoming,
        out=out / "screening",
        models=("@" + DEFAULT_ALIAS,),
        tracking_uri=tracking,
    )
    if not args.pacs:
        _summary(stages, models, champion, run_screen(cfg), out, tracking)
        return 0
    with start_orthanc(OrthancConfig(storage=out / "orthanc")) as pacs:
        screened = _screen_pacs(cfg, pacs, incoming, out)
        _summary(stages, models, champion, screened, out, tracking)
        if viewer is not None:
            _view(pacs, screened, viewer)
    return 0


def first_flagged_study(screened: ScreenResult) -> str | None:
    """The StudyInstanceUID of the report's first flagged study (the most probable), from
    the owner-only map back; None when no study was flagged."""
    table = pq.read_table(screened.out / "studies.parquet", columns=["study_key", "flagged"])
    rows = zip(table["study_key"].to_pylist(), table["flagged"].to_pylist(), strict=True)
    first = next((key for key, flagged in rows if flagged), None)
    entries = read_reidentify(screened.out / REIDENTIFY_FILE)
    studies = {p: o for kind, p, o in entries if kind == "study"}
    return studies.get(first) if first is not None else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _view(pacs: Orthanc, screened: ScreenResult, dist: Path) -> None:
    """OHIF in front of the demo's Orthanc until Ctrl-C or SIGTERM (the caller then stops
    the Orthanc); Ray, no longer needed, is shut down first."""
    done_with_ray()
    study = first_flagged_study(screened)
    auth = PacsAuth(pacs.cfg.username, pacs.cfg.password)
    # Ctrl-C (SIGINT) and SIGTERM alike stop the viewer, then the PACS
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with start_viewer(pacs.dicomweb, auth, dist=dist) as viewer:
            console.print(f"\n[demo] OHIF Viewer v3 at {viewer.url}/ (the demo's PACS)")
            console.print(
                f"the first flagged study: {viewer.study_url(study)}"
                if study
                else "no study was flagged: the study list shows them all"
            )
            console.note("Ctrl-C stops the viewer and the PACS.")
            threading.Event().wait()
    except KeyboardInterrupt:
        console.note("viewer stopped; stopping the PACS")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _compare(out: Path, tracking: str, trained: list[TrainResult]) -> str:
    if not trained:
        raise TrainCollapsed("both demo models collapsed: nothing to compare or screen with")
    client = tracking_client(tracking)
    rows = load_runs(client, run_ids=[r.run_id for r in trained], metric=DEFAULT_METRIC)
    console.print(format_table(rows, DEFAULT_METRIC))
    promoted = promote(client, rows[0].run_id)
    plot(rows, DEFAULT_METRIC, out / "compare.png")
    champion = f"{promoted.name} v{promoted.version}"
    console.print(f"champion → {champion} (best {DEFAULT_METRIC}); chart {out / 'compare.png'}")
    return champion


def _summary(
    stages: Stages,
    models: dict[str, TrainResult | None],
    champion: str,
    screened: ScreenResult,
    out: Path,
    tracking: str,
) -> None:
    counts = screened.summary.counts
    lines = ["", "[demo] done. Stages:", *stages.table(), "Models (test studies):"]
    for title, result in models.items():
        lines.append(
            f"  {title:<13} " + (figures(result) if result else "collapsed, not registered")
        )
    lines += [
        f"Champion: {champion}; flagged {counts.flagged} of {counts.studies} incoming studies "
        f"({counts.images} images, {counts.quarantined} quarantined)",
        *(
            [
                f"PACS results:  {wb.reports} SRs, {wb.captures} Secondary Captures, "
                f"{wb.heatmaps} heatmaps and {wb.key_objects} key-object documents written "
                f"back to {wb.destination}"
            ]
            if (wb := screened.summary.write_back)
            else []
        ),
        f"report:        {screened.out / 'report.html'}",
        f"MLflow store:  {out / 'mlflow.db'}",
        f"MLflow UI:     mlflow ui --backend-store-uri {tracking}",
    ]
    console.print("\n".join(lines))


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("demo", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)
