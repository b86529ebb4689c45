"""The typed records (image reference, dataset row, quarantine row) and body-part keywords."""

from __future__ import annotations

import pytest

from mura_core.body_parts import BodyPart, body_part_from_text
from mura_core.listing import ImageRef, Problem, Split
from mura_core.locations import FileLocation
from mura_core.privacy import PSEUDONYM_KINDS, Pseudonymizer, pseudonym_columns
from mura_core.records import ImageRow, QuarantineRow
from mura_core.shards import IMAGE_COLUMNS, QUARANTINE_SCHEMA


@pytest.mark.parametrize(
    ("texts", "part"),
    [
        (("WRIST",), BodyPart.WRIST),
        (("", "XR WRIST 3 VIEWS"), BodyPart.WRIST),
        (("UPPER_ARM",), BodyPart.HUMERUS),
        (("L FOREARM 2V",), BodyPart.FOREARM),
        (("THUMB",), BodyPart.FINGER),
        (("clavicle",), BodyPart.SHOULDER),
        (("HIP", "HIP JOINT"), BodyPart.OTHER),
        (("EXTREMITY", "Non-ossifying fibroma of distal tibia"), BodyPart.OTHER),
        (("handheld device",), BodyPart.OTHER),
        ((None, None), BodyPart.OTHER),
        (("HAND", "WRIST"), BodyPart.HAND),
    ],
)
def test_body_part_keywords(texts: tuple, part: BodyPart) -> None:
    assert body_part_from_text(*texts) is part


def test_image_ref_round_trips_through_plain_dicts() -> None:
    ref = ImageRef(
        location=FileLocation("/a/b.png"),
        relpath="b.png",
        image_id="b",
        study_key="s",
        patient_key="p",
        body_part=BodyPart.HAND,
        view="PA",
        label=1,
        split=Split.TRAIN,
        frame=0,
    )
    row = ref.to_dict()
    assert row["body_part"] == "XR_HAND" and row["split"] == "train"
    assert all(isinstance(v, str | int | type(None)) for v in row.values())
    assert ImageRef.from_dict(row) == ref


def test_image_ref_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="label"):
        ImageRef(
            location=FileLocation("/p"),
            relpath="p",
            image_id="i",
            study_key="s",
            patient_key="p",
            body_part=BodyPart.HAND,
            label=2,
        )


def _ref(**kw) -> ImageRef:
    base = dict(
        location=FileLocation("/archive/XR_HAND/p1/s1/image1.png"),
        relpath="XR_HAND/p1/s1/image1.png",
        image_id="XR_HAND/p1/s1/image1.png",
        study_key="XR_HAND/p1/s1",
        patient_key="p1",
        body_part=BodyPart.HAND,
        view="PA",
        label=0,
        split=Split.VALID,
        frame=2,
    )
    return ImageRef(**{**base, **kw})


def _fake_pseudonym(value: str, kind: str) -> str:
    return f"{kind}:{value[::-1]}"


def test_image_row_holds_the_shard_metadata_columns_plus_the_real_path() -> None:
    decoded = {"orig_height", "orig_width", "windowing", "inverted", "pixels"}
    shard_columns = [name for name in IMAGE_COLUMNS if name not in decoded]
    row = ImageRow.from_ref(_ref(), "test")
    assert sorted(row.to_dict()) == sorted([*shard_columns, "path"])
    assert row.to_dict()["body_part"] == "XR_HAND" and row.to_dict()["source_split"] == "valid"
    assert (row.split, row.frame, row.label) == ("test", 2, 0)


def test_image_row_pseudonyms_replace_identifiers_but_not_the_file_it_reads() -> None:
    row = ImageRow.from_ref(_ref(), "train").pseudonymized(_fake_pseudonym)
    assert row.location == FileLocation("/archive/XR_HAND/p1/s1/image1.png")
    assert row.image_id == "image:gnp.1egami/1s/1p/DNAH_RX"
    assert row.study_key == "study:1s/1p/DNAH_RX" and row.patient_key == "patient:1p"
    assert row.relpath == "path:gnp.1egami/1s/1p/DNAH_RX"
    assert (row.body_part, row.view, row.label) == (BodyPart.HAND, "PA", 0)


def test_quarantine_row_has_the_quarantine_table_columns() -> None:
    problem = Problem("a/._x.png", "list", "not_an_image", "macOS metadata")
    row = QuarantineRow.from_problem(problem)
    assert list(row.to_dict()) == QUARANTINE_SCHEMA.names
    assert (row.image_id, row.study_key, row.stage) == (None, None, "list")
    assert QuarantineRow.from_dict(row.to_dict()) == row
    failed = QuarantineRow.decode_failure(
        {"relpath": "r.png", "image_id": "i", "study_key": "s", "frame": 0}, "corrupt", "short"
    )
    assert failed == QuarantineRow("r.png", "i", "s", "decode", "corrupt", "short")
    assert failed.after("ingest").stage == "ingest/decode"


def test_quarantine_row_pseudonyms_cover_path_image_and_study_only_when_present() -> None:
    listed = QuarantineRow.from_problem(Problem("dir/f.dcm", "list", "corrupt", "why"))
    assert listed.pseudonymized(_fake_pseudonym) == QuarantineRow(
        "path:mcd.f/rid", None, None, "list", "corrupt", "why"
    )
    decoded = QuarantineRow("f.dcm", "i1", "s1", "decode", "corrupt", "why")
    assert decoded.pseudonymized(_fake_pseudonym) == QuarantineRow(
        "path:mcd.f", "image:1i", "study:1s", "decode", "corrupt", "why"
    )


def test_every_pseudonym_kind_is_one_the_pseudonymizer_knows() -> None:
    pseudo = Pseudonymizer(b"site-secret-0123456789")
    assert {pseudo("x", kind)[:3] for kind in PSEUDONYM_KINDS.values()} == {
        "im-",
        "st-",
        "pt-",
        "fp-",
    }
    assert pseudonym_columns(["pixels", "relpath", "label", "image_id"]) == {
        "relpath": "path",
        "image_id": "image",
    }
