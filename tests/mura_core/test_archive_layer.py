"""The archive layer without Ray: the kind chosen once, one listing loop, reading through
the archive, typed locations to and from the Ray row's string column, one pseudonym path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mura_core.archive import (
    AccessPolicy,
    ArchiveFiles,
    FolderSource,
    PacsSource,
    SourceError,
    list_archive,
    open_archive,
    pacs_destination,
    parse_source,
)
from mura_core.archive.dicom_tree import DicomTreeArchive
from mura_core.archive.files import Entry
from mura_core.archive.folder import FolderArchive
from mura_core.archive.mura import MuraArchive
from mura_core.archive.pseudonyms import Pseudonyms, pseudonymize_table
from mura_core.archive.rows import image_lines, prepare_rows
from mura_core.archive.walk import FileLister, list_files
from mura_core.body_parts import BodyPart
from mura_core.errors import ConfigError
from mura_core.listing import ImageRef, Problem
from mura_core.locations import (
    FileLocation,
    PacsInstance,
    location_column,
    parse_location,
)
from mura_core.privacy import Pseudonymizer
from mura_core.records import ImageRow
from mura_core.splits import SplitConfig
from mura_core.synth import SynthArchive

INSTANCE = PacsInstance("1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.1")


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)


def test_the_kind_is_chosen_once_by_what_the_source_is(
    mura_archive: SynthArchive, dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    _png(tmp_path / "images" / "a.png")
    assert isinstance(open_archive(mura_archive.root), MuraArchive)
    assert isinstance(open_archive(dicom_archive.root), DicomTreeArchive)
    folder = open_archive(tmp_path / "images")
    assert isinstance(folder, FolderArchive) and folder.kind == "folder"
    assert folder.root == os.path.realpath(tmp_path / "images")
    forced = open_archive(dicom_archive.root, kind="folder")  # --kind wins over detection
    assert isinstance(forced, FolderArchive)
    with pytest.raises(SourceError, match="unknown source kind 'zip'"):
        open_archive(tmp_path / "images", kind="zip")
    with pytest.raises(SourceError, match="not --labels"):
        open_archive(mura_archive.root, labels=dicom_archive.root / "labels.csv")
    with pytest.raises(SourceError, match="is a PACS: --kind does not apply"):
        open_archive("dimse://PACS@127.0.0.1:1", kind="dicom")


def test_a_source_is_parsed_once_into_a_typed_source(tmp_path: Path) -> None:
    assert parse_source("dicomweb+https://pacs:8042/dicom-web") == PacsSource(
        "dicomweb+https://pacs:8042/dicom-web"
    )
    assert parse_source(tmp_path) == FolderSource(tmp_path)
    typed = parse_source(str(tmp_path))
    assert parse_source(typed) is typed
    assert pacs_destination("dimse://A@pacs:104", "").called_aet == "A"
    assert pacs_destination("dimse://A@pacs:104", "dimse://B@other:11112").called_aet == "B"
    with pytest.raises(ConfigError, match="this source is a folder"):
        pacs_destination(tmp_path, "")
    with pytest.raises(ConfigError, match="not a PACS address"):
        pacs_destination("dimse://A@pacs:104", "/some/folder")


def test_locations_round_trip_through_the_path_column() -> None:
    file = FileLocation("/archive/XR_HAND/p1/s1/image1.png")
    for location in (file, INSTANCE):
        assert parse_location(location_column(location)) == location
    assert location_column(INSTANCE) == "1.2.3/1.2.3.4/1.2.3.4.5/1.2.840.10008.5.1.4.1.1.1"
    assert FileLocation("relative/x.png").path == os.path.abspath("relative/x.png")
    for text in ("relative/x.png", "1.2/3.4", ""):
        with pytest.raises(ValueError):
            parse_location(text)
    with pytest.raises(ValueError, match="no request can name"):
        PacsInstance("1.2", "1.2/3", "4", "5")
    ref = ImageRef(INSTANCE, str(INSTANCE), INSTANCE.sop, "1.2.3", "p", BodyPart.HAND)
    row = ImageRow.from_ref(ref, "test")
    column = pa.Table.from_pylist([row.to_dict()]).column("path").to_pylist()
    assert column == [str(INSTANCE)] and parse_location(column[0]) == INSTANCE
    assert ImageRef.from_dict(ref.to_dict()) == ref
    with pytest.raises(TypeError, match="location"):
        ImageRef(str(INSTANCE), "r", "i", "s", "p", BodyPart.HAND)  # type: ignore[arg-type]


class _Pngs(FileLister):
    """A kind of its own, plugged into the one loop: PNGs, one study each."""

    kind = "pngs"
    suffixes = (".png",)

    def is_own(self, entry: Entry) -> bool:
        return entry.path.name == "index.csv"

    def image(self, entry: Entry) -> list[ImageRef] | Problem:
        if entry.path.name.startswith("bad"):
            return Problem(entry.rel, "list", "corrupt", "says so")
        location = FileLocation(str(entry.path))
        return [ImageRef(location, entry.rel, entry.rel, entry.rel, "p", BodyPart.OTHER)]


def test_the_one_listing_loop_accounts_for_every_file(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "good.png")
    _png(tmp_path / "a" / "bad.png")
    (tmp_path / "index.csv").write_text("a/good.png\n")
    (tmp_path / "notes.txt").write_text("documentation: junk")
    (tmp_path / "scan.tif").write_bytes(b"II*\x00")
    (tmp_path / "._good.png").write_bytes(b"resource fork")
    os.mkfifo(tmp_path / "pipe.png")
    listing = list_files(_Pngs(ArchiveFiles.at(tmp_path)))
    assert [r.relpath for r in listing.refs] == ["a/good.png"]
    assert listing.kind == "pngs" and listing.junk_skipped == 2
    assert sorted((p.path, p.error_type) for p in listing.problems) == [
        ("a/bad.png", "corrupt"),
        ("pipe.png", "not_a_regular_file"),
        ("scan.tif", "not_an_image"),
    ]


def test_an_archive_reads_its_files_through_the_archive_layer(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    _png(root / "a.png")
    _png(root / "big.png")
    outside = tmp_path / "secret.png"
    _png(outside)
    archive = open_archive(root, access=AccessPolicy(max_bytes=10_000))
    listed = [r.location for r in archive.list().refs]
    (root / "big.png").write_bytes(b"x" * 20_000)  # grew after listing: the cap still holds
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(outside)  # swapped for a link out of the archive
    got = dict(archive.read([*listed, INSTANCE]))
    assert {type(v).__name__ for v in got.values()} == {
        "OutsideArchiveError",
        "FileTooLargeError",
        "NotThisArchiveError",
    }
    _png(root / "c.png")
    fine = FileLocation(str(root / "c.png"))
    assert dict(archive.read([fine]))[fine] == (root / "c.png").read_bytes()


def test_listed_rows_and_shard_batches_get_the_same_pseudonyms(tmp_path: Path) -> None:
    _png(tmp_path / "wrist" / "a.png")
    listing = list_archive(tmp_path)
    pseudo = Pseudonymizer(b"k" * 32)
    prepared = prepare_rows(listing, SplitConfig(), pseudonymize="always", pseudonymizer=pseudo)
    [row] = prepared.rows
    original = ImageRow.from_ref(listing.refs[0], row.split)
    shard_row = {k: v for k, v in original.to_dict().items() if k != "path"}  # as stored
    batch = pa.Table.from_pylist([shard_row])
    shard = pseudonymize_table(batch, pseudonymizer=pseudo).to_pylist()[0]
    for name in ("image_id", "study_key", "patient_key", "relpath"):
        assert shard[name] == getattr(row, name) != getattr(original, name)
    assert (shard["body_part"], shard["split"]) == (row.body_part, row.split)
    assert row.location == original.location  # read, never pseudonymized
    kept = prepare_rows(listing, SplitConfig(), pseudonymize="auto", pseudonymizer=pseudo)
    assert not kept.pseudonymized and kept.rows[0].image_id == original.image_id
    assert Pseudonyms(None)("x", "image") == "x"
    lines = image_lines(prepared.rows)
    assert lines[row.image_id].endswith(f"\t0\t{(tmp_path / 'wrist' / 'a.png').stat().st_size}")
