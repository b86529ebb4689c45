"""The archive layer on real special files: FIFOs, sockets, devices, links in and out."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from mura_core.archive import (
    AccessPolicy,
    ArchiveFiles,
    BadPathError,
    FileTooLargeError,
    NotARegularFileError,
    OutsideArchiveError,
    read_regular,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An archive with one of everything, and a folder outside it."""
    root, outside = tmp_path / "archive", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "good.png").write_bytes(b"x" * 10)
    (outside / "secret.png").write_bytes(b"s" * 10)
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.png").write_bytes(b"d" * 10)
    os.mkfifo(root / "a" / "image9.png")
    (root / "a" / "zero.png").symlink_to("/dev/zero")
    (root / "a" / "out.png").symlink_to(outside / "secret.png")
    (root / "a" / "in.png").symlink_to(root / "a" / "good.png")
    (root / "a" / "broken.png").symlink_to(root / "nothing.png")
    (root / "outdir").symlink_to(outside / "sub")
    (root / "loop").symlink_to(root / "a")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._good.png").write_bytes(b"j")
    return root


def _walk(root: Path, **policy: object) -> dict[str, str]:
    files = ArchiveFiles.at(root, AccessPolicy(**policy))  # type: ignore[arg-type]
    return {
        e.rel: "junk" if e.junk else (e.problem.error_type if e.problem else "ok")
        for e in files.walk()
    }


def test_walk_accounts_for_every_entry_and_never_opens_a_fifo(tree: Path) -> None:
    started = time.monotonic()
    seen = _walk(tree)
    assert time.monotonic() - started < 5
    assert seen == {
        "a/good.png": "ok",
        "a/in.png": "ok",
        "a/image9.png": "not_a_regular_file",
        "a/zero.png": "outside_archive",
        "a/out.png": "outside_archive",
        "a/broken.png": "not_a_regular_file",
        "outdir": "outside_archive",
        "loop": "not_a_regular_file",  # a link to a folder inside: not walked twice
        "__MACOSX/._good.png": "junk",
    }


def test_follow_links_allows_outside_targets_but_still_no_devices(tree: Path) -> None:
    seen = _walk(tree, follow_links=True)
    assert seen["a/out.png"] == "ok"
    assert seen["outdir/deep.png"] == "ok"  # the outside folder is walked, under its link
    assert seen["a/zero.png"] == "not_a_regular_file"  # a device stays refused
    assert seen["loop"] == "not_a_regular_file"


def test_walk_refuses_files_over_the_cap(tree: Path) -> None:
    seen = _walk(tree, max_bytes=5)
    assert seen["a/good.png"] == "too_large"


def test_reads_refuse_fifo_device_socket_and_cap(tree: Path, tmp_path: Path) -> None:
    files = ArchiveFiles.at(tree)
    assert files.read(tree / "a" / "good.png") == b"x" * 10
    assert files.read(tree / "a" / "in.png") == b"x" * 10
    with pytest.raises(NotARegularFileError, match="FIFO"):
        files.read(tree / "a" / "image9.png")  # returns at once: O_NONBLOCK, then refused
    with pytest.raises(OutsideArchiveError):
        files.read(tree / "a" / "zero.png")
    with pytest.raises(NotARegularFileError, match="device"):
        read_regular("/dev/zero", max_bytes=1 << 20)  # never read until memory runs out
    with pytest.raises(FileTooLargeError, match="read cap of 5 bytes"):
        ArchiveFiles.at(tree, AccessPolicy(max_bytes=5)).read(tree / "a" / "good.png")
    sock_path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        with pytest.raises(NotARegularFileError, match="socket"):
            read_regular(sock_path, max_bytes=100)
    finally:
        server.close()


@pytest.mark.parametrize(
    "listed",
    [
        "../outside/secret.png",
        "a/../../outside/secret.png",
        "MURA-v1.1/train/XR_WRIST/../../../../etc/passwd",
        "/etc/passwd",
        "C:/Windows/win.ini",
        "..",
        "a/out.png",  # inside by name, outside through its link
    ],
)
def test_locate_refuses_paths_leaving_the_root(tree: Path, listed: str) -> None:
    with pytest.raises(OutsideArchiveError):
        ArchiveFiles.at(tree).locate(listed)


def test_locate_keeps_paths_inside(tree: Path) -> None:
    files = ArchiveFiles.at(tree)
    assert files.locate("a/./x/../good.png") == tree.resolve() / "a" / "good.png"
    assert files.locate("a\\good.png") == tree.resolve() / "a" / "good.png"
    assert ArchiveFiles.at(tree, AccessPolicy(follow_links=True)).locate("a/out.png")


def test_a_nul_byte_in_a_listed_path_is_refused(tree: Path) -> None:
    """Found by fuzzing (tests/fuzz): a labels.csv path with a NUL byte crashed realpath."""
    with pytest.raises(BadPathError):
        ArchiveFiles.at(tree).locate("a/good\x00.png")
