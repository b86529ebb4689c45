"""Keyed pseudonyms for patient, study and image identifiers.

HMAC-SHA256 with a per-site secret: the same identifier always gets the same pseudonym at
one site (so nightly runs and re-ingests line up), nobody without the secret can recompute
or dictionary-attack it (a plain hash of a PatientID could be), and two sites never share
pseudonyms. The secret comes from `MURA_SITE_SECRET`, else from a key file created on first
use with 0600 permissions (`MURA_SITE_KEY_FILE`, default ~/.config/mura/site.key).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mura_core.errors import MuraError

SECRET_ENV = "MURA_SITE_SECRET"
KEY_FILE_ENV = "MURA_SITE_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/mura/site.key")
_PREFIX = {"patient": "pt", "study": "st", "image": "im", "path": "fp", "accession": "ac"}
# The re-identification map's kind for a study's AccessionNumber (keyed by the study).
ACCESSION = "accession"

# Which column holds which kind of identifier: the one table every writer pseudonymizes by
# (shard and report rows, quarantine rows, the re-identification map).
PSEUDONYM_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "image_id": "image",
        "study_key": "study",
        "patient_key": "patient",
        "relpath": "path",  # an image's path inside the archive
        "path": "path",  # a quarantine row's input (shown as the archive path)
    }
)


def pseudonym_columns(names: Iterable[str]) -> dict[str, str]:
    """The identifier columns among `names`, each with its pseudonym kind, in `names` order."""
    return {name: PSEUDONYM_KINDS[name] for name in names if name in PSEUDONYM_KINDS}


def pseudonymize_keys(
    values: Mapping[str, Any], pseudonym: Callable[[str, str], str]
) -> dict[str, Any]:
    """A row's columns with its identifier columns (`PSEUDONYM_KINDS`) replaced by their
    pseudonyms; empty values and other columns stay as they are. Every input row goes
    through here (`mura_core.archive.pseudonyms` says where it runs)."""
    return {
        name: pseudonym(value, PSEUDONYM_KINDS[name])
        if value and name in PSEUDONYM_KINDS
        else value
        for name, value in values.items()
    }


class PrivacyError(MuraError):
    """The site secret cannot be obtained safely."""


def key_file_path() -> Path:
    return Path(os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE).expanduser()


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (0600, 32 random bytes hex) if it does not exist.

    Creation uses O_EXCL so two processes starting at once cannot write different keys; a key
    file readable by group or others is refused, since anyone who reads it can re-identify.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PrivacyError(
            f"site key file {path} has permissions {mode:o}: "
            f"must be readable by its owner only (chmod 600 {path})"
        )
    key = path.read_text().strip()
    if len(key) < 32:
        raise PrivacyError(f"site key file {path} holds fewer than 32 characters")
    return key.encode()


def site_secret() -> bytes:
    """The secret from the environment, else from (or into) the key file."""
    env = os.environ.get(SECRET_ENV)
    if env:
        if len(env) < 16:
            raise PrivacyError(f"{SECRET_ENV} is shorter than 16 characters")
        return env.encode()
    return load_or_create_key(key_file_path())


@dataclass(frozen=True)
class Pseudonymizer:
    """Maps identifiers to stable keyed pseudonyms like 'pt-3f2a…' (kind prefix + 20 hex)."""

    secret: bytes = field(repr=False)

    @classmethod
    def from_site(cls) -> Pseudonymizer:
        return cls(site_secret())

    def __call__(self, value: str, kind: str) -> str:
        if kind not in _PREFIX:
            raise ValueError(f"unknown identifier kind {kind!r}: one of {', '.join(_PREFIX)}")
        digest = hmac.new(self.secret, f"{kind}\x00{value}".encode(), hashlib.sha256)
        return f"{_PREFIX[kind]}-{digest.hexdigest()[:20]}"

    def patient(self, value: str) -> str:
        return self(value, "patient")

    def study(self, value: str) -> str:
        return self(value, "study")


def write_reidentify(path: Path, entries: list[tuple[str, str, str]]) -> None:
    """The map back to real identifiers (kind, pseudonym, original): owner-readable only.

    An `accession` entry holds a study's key (its pseudonym) and the study's AccessionNumber.
    Written beside shards and reports, never logged anywhere.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "pseudonym", "original"])
        writer.writerows(entries)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_reidentify(path: Path) -> list[tuple[str, str, str]]:
    """The entries of a `reidentify.csv` written by `write_reidentify`."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        return [(kind, pseudonym, original) for kind, pseudonym, original in reader]
