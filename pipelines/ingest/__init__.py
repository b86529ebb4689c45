"""Ingest: any archive `mura_core.archive` knows → Parquet shards, via Ray Data."""

from .decode import decode_batch, staging_schema
from .rows import PSEUDONYMIZE_CHOICES, prepare_rows
from .run import IngestConfig, IngestError, IngestResult, format_result, run_ingest

__all__ = [
    "PSEUDONYMIZE_CHOICES",
    "IngestConfig",
    "IngestError",
    "IngestResult",
    "decode_batch",
    "format_result",
    "prepare_rows",
    "run_ingest",
    "staging_schema",
]
