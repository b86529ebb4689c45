"""Before any work: every whole-run check, writing nothing, and what it produces (`Prepared`).

The recipe, top to bottom: `preflight` (OUT checked: `pipelines.screen.folder.check_out`;
with `--notify`, a PACS source, the token file and the notify outbox checked
(`pipelines.results.notify`); MLflow reachable; the model resolves and runs on a 3×S×S
batch; with `--write-back`, the destination and its outbox checked) → the input listed by
the caller, then `check_fits` (shards at the model's input size) → OUT claimed
(`pipelines.screen.folder.claim`) → `deliver`: with `--write-back`, what waits in the
outbox is stored first, under the lock (the worklist's outbox is delivered after the
results, by `Notifier.notify`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mura_core.archive import PacsSource, parse_source
from mura_core.pacs.client import Pacs
from pipelines.registry.tracking import check_tracking, resolve_tracking_uri, use_tracking
from pipelines.results.notify import Notifier, open_notifier
from pipelines.results.writeback import Delivered, Outbox, default_outbox, destination
from pipelines.screen.config import ScreenConfig, ScreenError
from pipelines.screen.folder import check_out
from pipelines.screen.inputs import ScreenInput
from pipelines.screen.models import ScreeningModel, resolve_screening_model


@dataclass(frozen=True)
class Prepared:
    """What the fail-fast checks produced: the model, the tracking URI, the output folder."""

    model: ScreeningModel
    tracking_uri: str | None
    out: Path
    dest: Pacs | None = None  # --write-back: the checked destination
    outbox: Outbox | None = None  # its outbox, already delivered once
    delivered: Delivered | None = None
    notifier: Notifier | None = None  # --notify: tells the worklist after the results


def preflight(cfg: ScreenConfig) -> Prepared:
    """Every whole-run check that needs no input (OUT, MLflow, the model, the write-back
    destination), writing nothing: the outbox is delivered by `deliver`, under the lock."""
    out = check_out(cfg.out)
    notifier = _notifier(cfg) if cfg.notify is not None else None  # cheap: before the model
    uri = None
    if cfg.track or any(s.startswith(("models:", "runs:", "@")) for s in cfg.models):
        uri = resolve_tracking_uri(cfg.tracking_uri)
        check_tracking(uri)
        use_tracking(uri)
    model = resolve_screening_model(cfg.models)
    prepared = Prepared(model, uri if cfg.track else None, out, notifier=notifier)
    if cfg.write_back is None:
        return prepared
    dest = destination(cfg.source, cfg.write_back, cfg.pacs)
    outbox = Outbox(cfg.outbox or default_outbox(dest)).check()
    return replace(prepared, dest=dest, outbox=outbox)


def _notifier(cfg: ScreenConfig) -> Notifier:
    """--notify: the source must be a PACS (its headers give each study's UID and accession
    number); the token and the outbox are checked by `open_notifier`."""
    assert cfg.notify is not None
    if not isinstance(parse_source(cfg.source), PacsSource):
        raise ScreenError(
            f"--notify needs a PACS source (dicomweb+http://…, dimse://…): the worklist is "
            f"told each study's accession number and StudyInstanceUID from its headers; "
            f"{cfg.source} is not one"
        )
    return open_notifier(cfg.notify)


def deliver(prepared: Prepared) -> Prepared:
    """With --write-back: what waits in the outbox, stored first (it writes: under the
    lock, after every check)."""
    if prepared.dest is None or prepared.outbox is None:
        return prepared
    return replace(prepared, delivered=prepared.outbox.deliver(prepared.dest))


def check_fits(model: ScreeningModel, inp: ScreenInput) -> None:
    """Shards must be at the model's input size (raw archives are decoded to it)."""
    if inp.shard_size is not None and inp.shard_size != model.info.size:
        raise ScreenError(
            f"model {model.label} takes {model.info.size}px images but the shards at "
            f"{inp.root} are {inp.shard_size}px: re-ingest with --size {model.info.size}, "
            "or screen the raw archive"
        )
