"""The scoring pass, on the driver: every image of the input scored once, into `images.parquet`.

The recipe, top to bottom: OUT's score parts (`.scores`, see `parts`) and the rows an
interrupted run left there that still hold (`_resume`) → Ray Data over what has no score
yet: read or decode → `map_batches(ScreenPredictor)` on an actor pool (GPUs when the
cluster has them) → every row streamed back to the parts as it arrives (`_stream_scores`:
rows without pixels, bounded memory; a PACS's rows also bring each frame at the pictures'
size, kept beside the scores, so no instance is fetched twice) → the accounting checked
(every image in is kept, scored or quarantined) → every image's row, sorted, written to
`images.parquet`; the failed ones become quarantine rows (`Scored`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mura_core.outputs import atomic
from mura_core.records import QuarantineRow, ScoredImage
from mura_core.schema import arrow_schema
from pipelines.runtime.cluster import data_context
from pipelines.runtime.console import console
from pipelines.screen.config import ScreenConfig, ScreenError
from pipelines.screen.inputs import ScreenInput
from pipelines.screen.models import ScreeningModel
from pipelines.screen.parts import Earlier, ScoreKey, ScoreParts, bundle_digest, scored_and_problems
from pipelines.screen.pictures import kept_size
from pipelines.screen.scoring import ScreenPredictor
from pipelines.shards.predict import bundle_bytes, predict

SCORED_SCHEMA = arrow_schema(ScoredImage)  # images.parquet: the actor's rows less their failure


def _stream_scores(
    cfg: ScreenConfig, model: ScreeningModel, inp: ScreenInput, parts: ScoreParts, gpus: int
) -> int:
    """Run the Ray Data pipeline over `inp`, writing every row back to the parts as it
    arrives (rows without pixels: bounded memory); the number of rows."""
    from pipelines.screen.inputs import input_dataset

    with data_context():
        ds = input_dataset(inp, model.info.size, keep=kept_size(inp, model.info.size))
    scored = predict(
        ds,
        bundle_bytes(model.folder),
        batch_size=cfg.batch_size,
        actors=cfg.actors or (gpus or None),
        gpus_per_actor=1.0 if gpus else 0.0,
        predictor=ScreenPredictor,
    )
    n = 0
    bar = console.progress("scoring", inp.images, "images")
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        parts.add(batch, inp.content)
        n += batch.num_rows
        bar.advance(batch.num_rows)
    parts.flush()
    bar.close()
    return n


def _resume(
    cfg: ScreenConfig, model: ScreeningModel, inp: ScreenInput, out: Path
) -> tuple[ScoreParts, Earlier]:
    """OUT's score parts, and the rows an interrupted run left that still hold."""
    key = ScoreKey(
        model=bundle_digest(bundle_bytes(model.folder)),
        pseudonymize=cfg.pseudonymize,
        kind=inp.kind,
        root=str(inp.root),
        pixels=kept_size(inp, model.info.size) or 0,
    )
    parts = ScoreParts(out, key, every=cfg.checkpoint_every)
    earlier = parts.earlier(inp.content)
    if earlier.note:
        console.print(earlier.note)
    if earlier.rows.num_rows:
        console.print(
            f"resuming: {earlier.rows.num_rows} of {inp.images} images were scored by an "
            f"interrupted run into {out} and are kept; scoring the other "
            f"{inp.images - earlier.rows.num_rows}"
            + (
                f" ({earlier.dropped} earlier scores dropped: image gone or changed)"
                if earlier.dropped
                else ""
            )
        )
    return parts, earlier


@dataclass(frozen=True)
class Scored:
    """What scoring left: every scored image's row, the quarantined ones, the number kept
    from an interrupted run, and OUT's parts (the pixels a PACS's pictures are made from)."""

    images: pa.Table
    problems: list[QuarantineRow]
    kept: int
    parts: ScoreParts


def score_images(
    cfg: ScreenConfig, model: ScreeningModel, inp: ScreenInput, out: Path, gpus: int
) -> Scored:
    """Score what has no score yet in OUT; every image's row (kept or new), sorted, goes to
    images.parquet."""
    parts, earlier = _resume(cfg, model, inp, out)
    todo = inp.without(earlier.ids)
    n = _stream_scores(cfg, model, todo, parts, gpus) if todo.images else 0
    if n != todo.images or earlier.rows.num_rows + n != inp.images:
        raise ScreenError(
            f"accounting failed: {inp.images} images in, {earlier.rows.num_rows} kept from an "
            f"interrupted run + {n} scored or quarantined now"
        )
    rows = pa.concat_tables([earlier.rows, parts.this_run()])
    images, failed = scored_and_problems(rows)
    images = images.select(SCORED_SCHEMA.names).cast(SCORED_SCHEMA)
    with atomic(out / "images.parquet") as tmp:
        pq.write_table(images, tmp, compression="zstd")
    problems = [
        QuarantineRow.decode_failure(row, row["error_type"], row["reason"])
        for row in failed.drop(["prob", "content"]).to_pylist()
    ]
    return Scored(images, problems, earlier.rows.num_rows, parts)
