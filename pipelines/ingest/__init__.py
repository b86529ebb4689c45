"""Ingest: any archive `mura_core.archive` opens → Parquet shards, via Ray Data."""

from pipelines.ingest.accounting import format_result
from pipelines.ingest.config import IngestConfig, IngestError, IngestResult
from pipelines.ingest.run import run_ingest

__all__ = ["IngestConfig", "IngestError", "IngestResult", "format_result", "run_ingest"]
