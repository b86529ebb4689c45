"""What one `mura ingest` run takes and gives: `IngestConfig` (the CLI builds it from flags,
checked when made), `IngestResult` (the shards folder, its manifest, the time taken), and
`IngestError`, a whole-run problem. The recipe that turns one into the other is
`pipelines.ingest.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mura_core.archive import AccessPolicy, ArchiveSource
from mura_core.errors import ConfigError, MuraError
from mura_core.pacs.client import PacsOptions
from mura_core.shards import Manifest
from mura_core.splits import SplitConfig


class IngestError(MuraError):
    """A whole-run problem: nothing was written that looks complete."""


@dataclass(frozen=True)
class IngestConfig:
    """Everything one ingest run needs; the CLI builds it from flags."""

    source: Path | str | ArchiveSource  # a folder, or a PACS address (dicomweb+http://…)
    out: Path
    size: int = 320
    kind: str | None = None
    labels: Path | None = None
    address: str | None = None
    rows_per_shard: int = 1024
    batch_size: int = 16
    splits: SplitConfig = field(default_factory=SplitConfig)
    pseudonymize: str = "auto"
    force: bool = False
    pacs: PacsOptions = field(default_factory=PacsOptions)  # a PACS source: how to use it
    access: AccessPolicy = AccessPolicy()  # a folder source: links, read cap

    def __post_init__(self) -> None:
        from mura_core.model_info import MAX_SIZE, MIN_SIZE  # the bounds bundles obey too

        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ConfigError(f"size must be between {MIN_SIZE} and {MAX_SIZE} px, got {self.size}")
        if self.rows_per_shard < 1 or self.batch_size < 1:
            raise ConfigError("rows_per_shard and batch_size must be >= 1")


@dataclass(frozen=True)
class IngestResult:
    """A finished run: the shards folder, its manifest (counts and more), the exact time."""

    out: Path
    manifest: Manifest
    seconds: float
    resumed: int = 0  # images an interrupted run had already written, kept
