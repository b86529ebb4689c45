"""The write-back outbox is ours: marked when first used, and a folder of the user's given as
`--outbox` is refused before anything is stored or deleted from it."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mura_core.errors import ConfigError
from pipelines.results.writeback import Outbox


def test_a_folder_of_the_users_is_refused_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "holiday").mkdir(parents=True)
    (folder / "holiday" / "study.json").write_text("{}")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds what mura did not put there: holiday, notes.txt"):
        Outbox(folder).check()
    assert (folder / "notes.txt").read_text() == "mine"


def test_our_outbox_is_marked_and_an_old_one_accepted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox").check()  # new: nothing written yet
    assert not outbox.folder.exists()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    outbox.put("st-1", "report-1", [ds])
    assert (outbox.folder / Outbox.MARKER).is_file() and outbox.pending() == 1
    (outbox.folder / Outbox.MARKER).unlink()  # as the previous version left it
    assert Outbox(outbox.folder).check().pending() == 1
