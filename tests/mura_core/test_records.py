"""The image reference record and body-part keyword mapping."""

from __future__ import annotations

import pytest

from mura_core.records import BodyPart, ImageRef, Split, body_part_from_text


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
        path="/a/b.png",
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
            path="p",
            relpath="p",
            image_id="i",
            study_key="s",
            patient_key="p",
            body_part=BodyPart.HAND,
            label=2,
        )
