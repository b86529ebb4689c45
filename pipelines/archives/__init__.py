"""The archive layer's Ray side: an archive's prepared rows decoded in Ray Data tasks.

What an archive is, how it lists and reads, and how its rows are prepared (splits,
pseudonyms, digests) is `mura_core.archive`'s; here those rows become a lazy dataset
(`decoded_dataset`) whose tasks read the bytes through the archive and decode them
(`decode_batch`). Ingest and screening both come here; neither imports the other.
"""

from pipelines.archives.dataset import decoded_dataset
from pipelines.archives.decode import decode_batch, decode_locations, rows_per_batch, staging_schema

__all__ = [
    "decode_batch",
    "decode_locations",
    "decoded_dataset",
    "rows_per_batch",
    "staging_schema",
]
