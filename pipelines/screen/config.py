"""One screening run as the CLI builds it (`ScreenConfig`), and its one whole-run error.

The recipe, top to bottom: the flags become a frozen `ScreenConfig`, whose own checks (batch
size, threshold, GPUs, checkpoint interval) fail as one line before anything is looked at;
every check that needs the outside world (OUT, MLflow, the model, the input) is
`pipelines.screen.prepare`'s. `ScreenError` is what every stage of a run raises for a
whole-run problem (found before any work, or a broken invariant after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mura_core.archive import AccessPolicy, ArchiveSource
from mura_core.errors import ConfigError, MuraError
from mura_core.monitoring.drift import Bands
from mura_core.notify.config import NotifyConfig
from mura_core.pacs.client import PacsOptions
from mura_core.results.objects import HeatmapFormat, ResultObjects


class ScreenError(MuraError):
    """A whole-run problem found before any work (or a broken invariant after it)."""


@dataclass(frozen=True)
class ScreenConfig:
    """One screening run; the CLI builds it from flags."""

    source: Path | str | ArchiveSource  # a folder, or a PACS address (dicomweb+http://…)
    out: Path
    models: tuple[str, ...]
    kind: str | None = None
    labels: Path | None = None
    threshold: float | None = None
    batch_size: int = 32
    gpus: int | None = None  # None: one actor per GPU of the cluster, CPU when it has none
    actors: int | None = None
    address: str | None = None
    tracking_uri: str | None = None
    experiment: str = "mura-screen"
    pictures: int = 12
    pseudonymize: str = "always"
    track: bool = True
    job: str = "screen"
    pacs: PacsOptions = field(default_factory=PacsOptions)  # a PACS source: how to use it
    write_back: str | None = None  # store results as DICOM: a PACS address, "" = the source
    outbox: Path | None = None  # results not yet stored (default: per destination)
    write_back_objects: ResultObjects = ResultObjects()  # which of SR, SC, heatmap, KOS
    heatmap_format: HeatmapFormat = HeatmapFormat.BINARY  # BINARY or FRACTIONAL Segmentation
    notify: NotifyConfig | None = None  # tell a worklist (HL7 v2 / FHIR) each study's finding
    checkpoint_every: int = 1000  # image scores written to OUT/.scores every N (resumable)
    bands: Bands = field(default_factory=Bands)  # when a monitoring figure alerts
    access: AccessPolicy = AccessPolicy()  # a folder source: links, read cap

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.gpus is not None and self.gpus < 0:
            raise ConfigError(f"--gpus must be >= 0, got {self.gpus}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
