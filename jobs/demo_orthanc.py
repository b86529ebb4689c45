"""A throwaway Orthanc PACS for tests, benchmarks and `mura demo --pacs`.

`start_orthanc(OrthancConfig(storage=...))` writes `<storage>/orthanc.json` and runs
`Orthanc <storage>/orthanc.json` in the foreground as its own process (its own session, so
a Ctrl-C meant for us does not reach it first), with

- HTTP and DICOM on 127.0.0.1-only ports (`RemoteAccessAllowed: false`; 0 picks free ones),
- HTTP authentication on (`RegisteredUsers`: one user, a random password unless given),
- its own storage and index folder, `<storage>/db`,
- the DICOMweb plugin (`/usr/share/orthanc/plugins/libOrthancDicomWeb.so`) at `/dicom-web/`,
- a `DicomModalities` entry for our calling AE title (C-FIND, C-GET, C-STORE allowed), and
  `DicomCheckCalledAet` on, so an association to the wrong AE title is rejected,

waits until `GET /system` answers, and returns an `Orthanc` handle whose `stop()` ends the
process it started (by its pid), `kill()` SIGKILLs it (a PACS dying mid-run) and `restart()`
starts it again on the same ports and storage. Its output goes to `<storage>/orthanc.log`;
if the process that started it dies (a killed test or demo), it gets SIGTERM too.

No Ray and no MLflow here; the PACS is a subprocess.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mura_core.errors import MuraError
from pipelines.runtime.ports import HOST, free_ports

BINARY = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
CONFIG_NAME = "orthanc.json"
LOG_NAME = "orthanc.log"


class OrthancError(MuraError):
    """Orthanc is not installed, or did not start / answer in time."""


@dataclass(frozen=True)
class OrthancConfig:
    storage: Path
    aet: str = "ORTHANC"
    http_port: int = 0  # 0: a free port
    dicom_port: int = 0
    username: str = "mura"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    peer_aet: str = "MURA"  # our calling AE title, known to Orthanc as a modality
    timeout: float = 60.0


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux
    PR_SET_PDEATHSIG), so a killed test or demo leaves no Orthanc behind."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def orthanc_binary() -> str | None:
    """The Orthanc executable and its DICOMweb plugin, or None when either is missing."""
    binary = shutil.which(BINARY) or shutil.which(BINARY, path="/usr/sbin:/usr/local/sbin")
    return binary if binary and DICOMWEB_PLUGIN.is_file() else None


@dataclass
class Orthanc:
    """A running Orthanc: its URLs, its credentials, and the process it runs as."""

    cfg: OrthancConfig
    http_port: int
    dicom_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        """The source/destination address `mura` takes for DICOMweb."""
        return f"dicomweb+http://{HOST}:{self.http_port}/dicom-web"

    @property
    def dimse(self) -> str:
        """The source/destination address `mura` takes for DIMSE."""
        return f"dimse://{self.cfg.aet}@{HOST}:{self.dicom_port}"

    @property
    def auth_env(self) -> dict[str, str]:
        return {"MURA_PACS_USERNAME": self.cfg.username, "MURA_PACS_PASSWORD": self.cfg.password}

    @property
    def storage(self) -> Path:
        return self.cfg.storage

    def config(self) -> dict[str, object]:
        return {
            "Name": "mura-test-pacs",
            "StorageDirectory": str(self.storage / "db"),
            "IndexDirectory": str(self.storage / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.cfg.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.cfg.username: self.cfg.password},
            "DicomCheckCalledAet": True,
            "DicomModalities": {
                self.cfg.peer_aet: {
                    "AET": self.cfg.peer_aet,
                    "Host": HOST,
                    "Port": 104,
                    "AllowEcho": True,
                    "AllowFind": True,
                    "AllowGet": True,
                    "AllowMove": False,
                    "AllowStore": True,
                }
            },
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "UnknownSopClassAccepted": False,
            "StableAge": 1,
            "TcpNoDelay": True,
            "KeepAlive": True,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": HOST, "Ssl": False},
        }

    def start(self) -> Orthanc:
        binary = orthanc_binary()
        if binary is None:
            raise OrthancError(
                f"Orthanc with its DICOMweb plugin is not installed (need `{BINARY}` and "
                f"{DICOMWEB_PLUGIN}): apt-get install orthanc orthanc-dicomweb"
            )
        (self.storage / "db").mkdir(parents=True, exist_ok=True)
        config = self.storage / CONFIG_NAME
        config.write_text(json.dumps(self.config(), indent=2))
        config.chmod(0o600)  # it holds the password
        log = (self.storage / LOG_NAME).open("ab")
        self.process = subprocess.Popen(
            [binary, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise OrthancError(
                    f"Orthanc exited with status {self.process.returncode} while starting; "
                    f"its log: {self.storage / LOG_NAME}"
                )
            try:
                self.get("/system", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise OrthancError(f"Orthanc did not answer /system in {self.cfg.timeout:.0f}s")

    def request(
        self, method: str, path: str, body: bytes | None = None, *, timeout: float = 60
    ) -> object:
        """Orthanc's own REST API (administration: upload, list, delete), JSON back."""
        token = base64.b64encode(f"{self.cfg.username}:{self.cfg.password}".encode()).decode()
        req = urllib.request.Request(
            self.http_url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as response:
            data = response.read()
        return json.loads(data) if data else None

    def get(self, path: str, *, timeout: float = 60) -> object:
        return self.request("GET", path, timeout=timeout)

    def upload(self, data: bytes) -> str | None:
        """POST one file to /instances: its Orthanc id, or None when Orthanc refuses it."""
        try:
            answer = self.request("POST", "/instances", data)
        except urllib.error.HTTPError:
            return None
        return answer.get("ID") if isinstance(answer, dict) else None

    def instance_count(self) -> int:
        stats = self.get("/statistics")
        return int(stats["CountInstances"]) if isinstance(stats, dict) else 0

    def kill(self) -> None:
        """SIGKILL the process (a PACS that dies); `restart()` brings it back."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> Orthanc:
        self.stop()
        return self.start()

    def __enter__(self) -> Orthanc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


Server = TypeVar("Server", bound=Orthanc)


def start_orthanc(cfg: OrthancConfig, *, server: type[Server] = Orthanc) -> Server:  # type: ignore[assignment]
    """Start Orthanc (or a subclass) on free (or the given) ports; see the module docstring.

    Free ports can be taken by another process before Orthanc binds them: then Orthanc
    says so in its log, and it is started again on new ones (three tries).
    """
    tries = 1 if cfg.http_port and cfg.dicom_port else 3
    for attempt in range(1, tries + 1):
        http_port, dicom_port = free_ports(2)
        try:
            return server(cfg, cfg.http_port or http_port, cfg.dicom_port or dicom_port).start()
        except OrthancError:
            if attempt == tries or not _port_taken(cfg):
                raise
            (cfg.storage / LOG_NAME).unlink()
    raise OrthancError(f"Orthanc did not start in {tries} tries")


def _port_taken(cfg: OrthancConfig) -> bool:
    log = cfg.storage / LOG_NAME
    return log.is_file() and "already in use" in log.read_text(errors="replace")
