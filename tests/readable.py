"""What a privacy grep reads of a file the run wrote.

A Parquet file is read as its decoded values and key-value metadata: its pages are
compressed, so a byte search would miss an identifier stored there, and the compressed bytes
themselves can spell a short all-digit identifier by chance (zstd's tables held
`0123456789`, and with them a PatientID `12345678`). Any other file is read as its bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq


def readable(path: Path) -> bytes:
    if path.suffix != ".parquet":
        return path.read_bytes()
    values = json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
    metadata = pq.read_metadata(path).metadata or {}
    return values + b"\n".join(key + b"=" + value for key, value in metadata.items())
