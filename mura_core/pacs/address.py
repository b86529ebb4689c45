"""Where a PACS is and how we log in: the two address forms, credentials, what to list.

- `dicomweb+http://HOST:PORT/PATH` or `dicomweb+https://…` → a DICOMweb service (QIDO-RS,
  WADO-RS, STOW-RS) at `http[s]://HOST:PORT/PATH`;
- `dimse://AET@HOST:PORT` → classic DICOM networking (C-FIND, C-GET, C-STORE) to the called
  AE title AET; our calling AE title is `--ae-title` (default MURA).

Credentials (DICOMweb only) come from `--pacs-auth FILE` (one line `user:password`, or a
bearer token with `--pacs-token FILE`; either file must be private, mode 0600 or stricter),
else from `MURA_PACS_USERNAME` / `MURA_PACS_PASSWORD` (or `MURA_PACS_TOKEN`). They live in a
`PacsAuth` whose repr hides them, and never go into an address string, a report or a log.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mura_core.body_parts import BodyPart
from mura_core.errors import ConfigError, MuraError

DICOMWEB_SCHEMES = ("dicomweb+http", "dicomweb+https")
DIMSE_SCHEME = "dimse"
DEFAULT_AE_TITLE = "MURA"
DEFAULT_MODALITIES = ("CR", "DX")
USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = (
    "MURA_PACS_USERNAME",
    "MURA_PACS_PASSWORD",
    "MURA_PACS_TOKEN",
)
_AE_TITLE = re.compile(r"^[ -~]{1,16}$")
_DIMSE = re.compile(r"^dimse://(?P<aet>[^@/]+)@(?P<host>[^:/]+|\[[^\]]+\]):(?P<port>\d+)/?$")
_DICOMWEB = re.compile(
    r"^(?P<scheme>dicomweb\+https?)://(?P<host>[^:/@]+|\[[^\]]+\])(:(?P<port>\d+))?(?P<path>/[^?#]*)?$"
)


class PacsError(MuraError):
    """A whole-run PACS problem (unreachable, refused, wrong credentials): before any work."""


def check_ae_title(title: str, what: str = "AE title") -> str:
    if not _AE_TITLE.match(title) or title != title.strip() or "\\" in title:
        raise ConfigError(f"{what} {title!r}: 1 to 16 printable ASCII characters, no backslash")
    return title


@dataclass(frozen=True)
class PacsAddress:
    """A parsed PACS address; `str()` is the address as given (never holds credentials)."""

    protocol: str  # "dicomweb" or "dimse"
    host: str
    port: int
    url: str = ""  # DICOMweb: the http(s) base URL of the service
    called_aet: str = ""  # DIMSE: the PACS's AE title

    @classmethod
    def parse(cls, text: str) -> PacsAddress:
        if (m := _DIMSE.match(text)) is not None:
            aet = check_ae_title(m["aet"], "called AE title")
            return cls("dimse", m["host"].strip("[]"), _port(m["port"], text), called_aet=aet)
        if (m := _DICOMWEB.match(text)) is not None:
            scheme = m["scheme"].split("+", 1)[1]
            port = _port(m["port"], text) if m["port"] else (443 if scheme == "https" else 80)
            path = (m["path"] or "").rstrip("/")
            url = f"{scheme}://{m['host']}:{port}{path}"
            return cls("dicomweb", m["host"].strip("[]"), port, url=url)
        if text.startswith("dicomweb") and "@" in text.split("://", 1)[-1]:
            raise ConfigError(
                f"{_safe(text)}: put no credentials in the address; use --pacs-auth FILE or "
                f"{USERNAME_ENV}/{PASSWORD_ENV}"
            )
        raise ConfigError(
            f"{_safe(text)} is not a PACS address: use dicomweb+http[s]://HOST:PORT/PATH "
            "or dimse://AET@HOST:PORT"
        )

    def __str__(self) -> str:
        if self.protocol == "dimse":
            return f"dimse://{self.called_aet}@{self.host}:{self.port}"
        return "dicomweb+" + self.url


def _safe(text: str) -> str:
    """An address with any `user:password@` removed, for error messages: everything up to
    the last `@`, since a password may hold any character (`/`, `@`, `#` included)."""
    return re.sub(r"//.*@", "//…@", text) if text.startswith("dicomweb") else text


def _port(text: str, address: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ConfigError(f"{_safe(address)}: port {port} out of range")
    return port


@dataclass(frozen=True)
class PacsAuth:
    """HTTP credentials for a DICOMweb PACS: basic (user, password) or a bearer token."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be printed or logged (the privacy tests grep for these)."""
        return tuple(s for s in (self.password, self.token) if s)

    def __bool__(self) -> bool:
        return bool(self.username or self.token)


def private_text(path: Path, flag: str) -> str:
    """A secret's file (`flag` names it in errors): readable, owner-only, not empty; its
    text, stripped."""
    path = path.expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{flag} {path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it"
        )
    if not text:
        raise ConfigError(f"{flag} {path} is empty")
    return text


def load_auth(
    auth_file: Path | None = None,
    token_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> PacsAuth:
    """Credentials from the files given, else from the environment, else none."""
    env = os.environ if environ is None else environ
    if auth_file is not None and token_file is not None:
        raise ConfigError("give --pacs-auth or --pacs-token, not both")
    if token_file is not None:
        return PacsAuth(token=private_text(token_file, "--pacs-token"))
    if auth_file is not None:
        user, sep, password = private_text(auth_file, "--pacs-auth").partition(":")
        if not sep or not user:
            raise ConfigError(f"--pacs-auth {auth_file}: expected one line user:password")
        return PacsAuth(username=user, password=password)
    if env.get(TOKEN_ENV):
        return PacsAuth(token=env[TOKEN_ENV])
    if env.get(USERNAME_ENV):
        return PacsAuth(username=env[USERNAME_ENV], password=env.get(PASSWORD_ENV, ""))
    return PacsAuth()


def _date(text: str | dt.date | None, flag: str) -> dt.date | None:
    if text is None or isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: use a date YYYY-MM-DD") from exc


@dataclass(frozen=True)
class PacsQuery:
    """Which studies to list: a StudyDate window, modalities, optionally one body part."""

    since: dt.date | None = None
    until: dt.date | None = None
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    body_part: BodyPart | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", _date(self.since, "--since"))
        object.__setattr__(self, "until", _date(self.until, "--until"))
        if self.since and self.until and self.since > self.until:
            raise ConfigError(f"--since {self.since} is after --until {self.until}")
        mods = tuple(m.strip().upper() for m in self.modalities if m.strip())
        if not mods or any(not re.fullmatch(r"[A-Z0-9]{1,16}", m) for m in mods):
            raise ConfigError(f"--modality {','.join(self.modalities)!r}: e.g. CR,DX")
        object.__setattr__(self, "modalities", mods)

    @property
    def study_date(self) -> str | None:
        """The DICOM date-range matching value (`YYYYMMDD-YYYYMMDD`, open ends allowed)."""
        if self.since is None and self.until is None:
            return None
        lo = f"{self.since:%Y%m%d}" if self.since else ""
        hi = f"{self.until:%Y%m%d}" if self.until else ""
        return lo if lo == hi else f"{lo}-{hi}"
