"""Ingest: any archive `mura_core.archive` opens → Parquet shards, via Ray Data."""

from pipelines.ingest.run import IngestConfig, IngestError, IngestResult, format_result, run_ingest

__all__ = ["IngestConfig", "IngestError", "IngestResult", "format_result", "run_ingest"]
