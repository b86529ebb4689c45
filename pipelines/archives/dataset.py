"""An archive's prepared rows as a lazy Ray dataset of decoded images (ingest and screening).

The rows become Arrow here (`ImageRow.to_dict`: the location as the `path` string column),
in `override_num_blocks` blocks; each block is read and decoded in CPU tasks
(`decode_batch`), the bytes coming from the archive the rows were listed from.
"""

from __future__ import annotations

from collections.abc import Sequence

import ray.data

from mura_core.archive import Archive
from mura_core.records import ImageRow
from pipelines.archives.decode import decode_batch
from pipelines.runtime.progress import ProgressSink


def decoded_dataset(
    rows: Sequence[ImageRow],
    archive: Archive,
    *,
    size: int,
    batch_size: int,
    blocks: int,
    progress: ProgressSink | None = None,
    keep: int | None = None,
) -> ray.data.Dataset:
    """`rows` decoded at `size` px in batches of `batch_size` (rows with a `problem`
    where they do not decode), one CPU per task; `progress` counts them on the console;
    `keep` adds each frame at keep px too (`kept`)."""
    ds = ray.data.from_items([row.to_dict() for row in rows], override_num_blocks=blocks)
    kwargs: dict[str, object] = {"size": size, "archive": archive}
    if keep:
        kwargs["keep"] = keep
    if progress is not None:
        kwargs.update(progress=progress, total=len(rows))
    return ds.map_batches(
        decode_batch,
        batch_size=batch_size,
        batch_format="pyarrow",
        fn_kwargs=kwargs,
        num_cpus=1,
    )
