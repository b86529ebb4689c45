"""`mura screen` / `python -m jobs.screen`: parse flags, call pipelines.screen, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import access_policy, add_source_arguments, job_main, pacs_options
from mura_core.archive.pseudonyms import PSEUDONYMIZE_CHOICES
from mura_core.errors import ConfigError
from mura_core.monitoring.drift import Bands
from mura_core.notify.config import DEFAULT_PRIORITY, PRIORITIES, NotifyConfig
from mura_core.results.objects import OBJECT_NAMES, HeatmapFormat, ResultObjects
from pipelines.registry.model_store import DEFAULT_ALIAS
from pipelines.runtime.console import console
from pipelines.screen.config import ScreenConfig
from pipelines.screen.result import format_result
from pipelines.screen.run import run_screen

DESCRIPTION = (
    "Screen SOURCE — a raw archive (MURA layout, DICOM tree or image folder, decoded on the "
    "fly) or a shards folder from `mura ingest` — with MODEL on Ray Data: images are scored by "
    "a pool of model actors (one per GPU when the cluster has GPUs), averaged per study, and "
    "studies above the threshold are flagged. OUT gets studies.parquet/.csv, images.parquet, "
    "quarantine.parquet, report.html (flagged studies first, with thumbnails and CAM "
    "overlays), summary.json and reidentify.csv (owner-only, never logged). The run is logged "
    "to MLflow (experiment mura-screen) with the model version that scored it. Identifiers in "
    "everything written are keyed pseudonyms."
)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `screen` and `nightly`: the model and how it runs."""
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="MODEL",
        help="MLflow model URI (models:/mura-cnn@champion, models:/mura-cnn/2, runs:/<id>/model) "
        "or a model bundle folder; repeat it (or give A,B) for an ensemble whose "
        "probabilities are averaged (default @champion: the registered model promoted with "
        "`mura compare --promote`)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="flag a study when its mean probability is above this (default: the threshold "
        "chosen at training and recorded with the model; an ensemble's mean)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="GPUs to use, one model actor each (default: every GPU of the Ray cluster; 0: CPU)",
    )
    p.add_argument("--actors", type=int, default=None, help="model actors (default: automatic)")
    p.add_argument(
        "--pictures",
        type=int,
        default=12,
        help="flagged studies shown with thumbnails and CAMs in report.html (default 12)",
    )
    p.add_argument(
        "--pseudonymize",
        choices=PSEUDONYMIZE_CHOICES,
        default="always",
        help="replace patient/study/image identifiers with keyed pseudonyms (default always)",
    )
    p.add_argument(
        "--write-back",
        nargs="?",
        const="",
        default=None,
        metavar="DEST",
        help="store the results into each screened study as DICOM: a TID 1500 SR per study "
        "(naming the one it supersedes), and for flagged ones Secondary Captures with the "
        "CAM, heatmaps over each view and a key-object document (deterministic UIDs: re-runs "
        "never duplicate). DEST: a PACS address (default: the source PACS)",
    )
    p.add_argument(
        "--write-back-objects",
        default=None,
        metavar="LIST",
        help=f"what --write-back stores, any of {','.join(OBJECT_NAMES)} (comma-separated; "
        "default: all): sr the TID 1500 SR of every study; sc Secondary Captures, heatmap the "
        "Grad-CAM map as a Segmentation over each view, kos a Key Object Selection of the "
        "views (flagged studies)",
    )
    p.add_argument(
        "--heatmap-format",
        default=None,
        choices=[f.value for f in HeatmapFormat],
        help="binary: a BINARY Segmentation of the map's hot region (>= 0.5), what OHIF 3.x "
        "overlays (default); fractional: a FRACTIONAL Segmentation, the map's value per pixel, "
        "for SEG viewers that read one (OHIF 3.13 does not)",
    )
    p.add_argument(
        "--outbox",
        type=Path,
        default=None,
        help="folder for results the PACS did not take, delivered first by the next run "
        "(default: ~/.local/state/mura/outbox/<destination>, or STATE/outbox for nightly)",
    )
    add_notify_arguments(p)
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        metavar="N",
        help="write image scores to OUT/.scores every N images (and every 30 s): a killed run, "
        "run again with the same OUT, scores only the images without a score (default 1000)",
    )
    p.add_argument(
        "--band",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="monitoring: when a run alerts (tag mura.alert, a banner in report.html); repeat "
        "for several. A figure alerts when its effect is out of band and its test significant "
        "at alpha (default 0.001): psi (PSI of scores and intensities, default 0.2) or ks (KS "
        "statistic, 0.25); mix_v (body-part mix, Cramér's V 0.15); flag_rate (off the model's "
        "reference by 0.15); min_studies (no alert below 20 studies). See docs/monitoring.md",
    )
    p.add_argument("--address", default=None, help="Ray cluster to join (default: local Ray)")
    p.add_argument("--tracking-uri", default=None, help="override MLFLOW_TRACKING_URI")
    p.add_argument(
        "--experiment", default="mura-screen", help="MLflow experiment (default mura-screen)"
    )


def add_notify_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "telling the worklist",
        "a PACS source's screened studies, each as a preliminary result to a RIS: see "
        "docs/pacs.md#telling-the-worklist---notify",
    )
    g.add_argument(
        "--notify",
        default=None,
        metavar="ADDR",
        help="send each screened study's finding (accession number, StudyInstanceUID, "
        "probability, threshold, model; result status preliminary): mllp://HOST:PORT (HL7 "
        "v2.5 ORU^R01, each ACK awaited) or fhir+https://HOST/BASE (a FHIR R4 transaction: "
        "DiagnosticReport + Observation). What is not taken waits in an outbox, sent by the "
        "next run; nothing is sent twice",
    )
    g.add_argument(
        "--notify-token",
        type=Path,
        default=None,
        metavar="FILE",
        help="FHIR: file holding a bearer token (mode 0600), sent in the Authorization header",
    )
    g.add_argument(
        "--notify-outbox",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for notices not yet taken (default: ~/.local/state/mura/notify/"
        "<destination>, or STATE/notify for nightly)",
    )
    g.add_argument(
        "--notify-priority",
        default=DEFAULT_PRIORITY,
        choices=list(PRIORITIES),
        help="HL7 priority (OBR-5, table 0027) of a flagged study: S stat (default), A ASAP, "
        "T timing critical, C callback, P preop, R routine; a study not flagged is R",
    )


def notify_config(args: argparse.Namespace) -> NotifyConfig | None:
    """--notify and its flags (the address parsed here; the token file read at preflight)."""
    if args.notify is None:
        for flag in ("notify_token", "notify_outbox"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --notify ADDR")
        return None
    return NotifyConfig(
        address=args.notify,
        token_file=args.notify_token,
        outbox=args.notify_outbox,
        priority=args.notify_priority,
    )


def write_back_choice(args: argparse.Namespace) -> tuple[ResultObjects, HeatmapFormat]:
    """--write-back-objects and --heatmap-format (each needs --write-back)."""
    if args.write_back is None:
        for flag in ("write_back_objects", "heatmap_format"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --write-back")
    objects = ResultObjects.parse(args.write_back_objects)
    return objects, HeatmapFormat.parse(args.heatmap_format or HeatmapFormat.BINARY.value)


def config(args: argparse.Namespace, out: Path) -> ScreenConfig:
    objects, heatmap = write_back_choice(args)
    return ScreenConfig(
        source=args.source,
        out=out,
        models=tuple(args.model or ["@" + DEFAULT_ALIAS]),
        kind=args.kind,
        labels=args.labels,
        threshold=args.threshold,
        batch_size=args.batch_size,
        gpus=args.gpus,
        actors=args.actors,
        address=args.address,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        pictures=args.pictures,
        pseudonymize=args.pseudonymize,
        pacs=pacs_options(args),
        access=access_policy(args),
        write_back=args.write_back,
        outbox=args.outbox,
        write_back_objects=objects,
        heatmap_format=heatmap,
        notify=notify_config(args),
        checkpoint_every=args.checkpoint_every,
        bands=Bands.parse(args.band or []),
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p, help="raw archive folder, or shards folder from `mura ingest`")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="report folder (new, empty, or an earlier report, which is replaced; a run "
        "killed part-way resumes there: only images without a score are scored; locked "
        "while a run writes it: a second run into it fails at once)",
    )
    add_model_arguments(p)


def command(args: argparse.Namespace) -> int:
    console.print(format_result(run_screen(config(args, args.out))))
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("screen", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("screen", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
