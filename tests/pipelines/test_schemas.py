"""The pipelines' tables and column reads, taken from the records: pinned to files the code
of before wrote (`tests.schemas`), and to the columns it read. No Ray is started here."""

from __future__ import annotations

from pipelines.archives import staging_schema
from pipelines.screen.inputs import SHARD_COLUMNS
from pipelines.screen.nightly import LEDGER_SCHEMA
from pipelines.screen.parts import PART_SCHEMA
from pipelines.screen.scores import SCORED_SCHEMA
from pipelines.screen.scoring import IMAGE_SCHEMA
from pipelines.shards.shardsets import READ_COLUMNS
from tests.schemas import assert_writes_as_before


def test_the_pipelines_tables_are_those_of_before() -> None:
    assert_writes_as_before(staging_schema(4), "staging")
    assert_writes_as_before(IMAGE_SCHEMA, "screen_rows")
    assert_writes_as_before(PART_SCHEMA, "score_part")
    assert_writes_as_before(SCORED_SCHEMA, "report_images")
    assert_writes_as_before(LEDGER_SCHEMA, "ledger")


def test_screening_and_training_read_the_columns_of_before() -> None:
    assert SHARD_COLUMNS == [
        "pixels",
        "image_id",
        "study_key",
        "patient_key",
        "body_part",
        "view",
        "label",
        "relpath",
        "windowing",
        "inverted",
        "orig_height",
        "orig_width",
    ]
    assert READ_COLUMNS == ["pixels", "label", "body_part", "study_key", "split"]
