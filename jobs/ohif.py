"""OHIF Viewer v3 in front of a PACS: fetched once, configured for it, served on 127.0.0.1.

What a radiologist opens to see a screened study with our results (the images, the SR, the
Secondary Captures), for `mura viewer`, the demo and the tests. The recipe, top to bottom:

1. **Fetch once** (`ohif_dist`): `npm pack @ohif/app@OHIF_VERSION` (the npm registry's
   tarball of the built viewer, ~50 MB) into the cache folder, `~/.cache/mura/ohif/VERSION`
   (`MURA_OHIF_CACHE` overrides `~/.cache/mura/ohif`), unpacked there with tarfile's `data`
   filter; its `dist/` holds `index.html`, the bundles and the default `app-config.js`. A
   `.complete` marker is written last, so a killed download is fetched again, never used
   half-unpacked; later calls only check the marker.
2. **Configure** (`app_config`): our own `app-config.js`, served in place of the packaged
   one: one DICOMweb data source (OHIF's `@ohif/extension-default.dataSourcesModule.dicomweb`)
   whose QIDO-RS, WADO-RS and WADO-URI roots are the same-origin path `/dicom-web`, with the
   options Orthanc's DICOMweb plugin answers to (no `includefield`, WADO-RS rendering and
   thumbnails, no fuzzy matching), and no investigational-use dialog.
3. **Serve** (`start_viewer`): a `ThreadingHTTPServer` in a daemon thread of this process,
   bound to 127.0.0.1 only: `/app-config.js` is ours; `/dicom-web/…` is proxied to the
   PACS's DICOMweb root with its credentials added on the way (GET and HEAD only: the viewer
   reads, never writes; the browser needs no CORS and never sees a password); any other
   path is a file of `dist/`, or `index.html` for the viewer's own routes
   (`/viewer?StudyInstanceUIDs=…`). Every answer carries the cross-origin isolation headers
   (COOP/COEP) OHIF's volume rendering asks for. `Viewer.stop()` shuts the server down.

Loopback only, by design: the proxy holds the PACS credentials, so anyone who reaches the
port reads the PACS (use an SSH tunnel to look from another machine). No Ray, no MLflow.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mura_core.errors import MuraError
from mura_core.pacs.address import PacsAddress, PacsAuth
from pipelines.runtime.ports import HOST

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
CACHE_ENV = "MURA_OHIF_CACHE"
DICOMWEB_PATH = "/dicom-web"
COMPLETE_MARKER = ".complete"
FETCH_TIMEOUT = 900.0  # seconds for `npm pack` (~50 MB)
PROXY_TIMEOUT = 60.0  # seconds for one PACS answer
_CHUNK = 1 << 16
_FORWARDED = ("Accept", "Range", "If-None-Match", "If-Modified-Since")
_RETURNED = ("Content-Type", "Content-Length", "Content-Range", "ETag", "Last-Modified")
_ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class OhifError(MuraError):
    """OHIF could not be fetched (no npm, no registry) or served."""


# --- 1. fetch once ---------------------------------------------------------------------


def cache_root() -> Path:
    """Where fetched viewers live: $MURA_OHIF_CACHE, else ~/.cache/mura/ohif."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mura" / "ohif"


def cached_dist(version: str = OHIF_VERSION, cache: Path | None = None) -> Path | None:
    """The unpacked `dist/` of `version` when a complete copy is in the cache, else None."""
    folder = (cache or cache_root()) / version
    dist = folder / "dist"
    complete = (folder / COMPLETE_MARKER).is_file() and (dist / "index.html").is_file()
    return dist if complete else None


def _npm_pack(version: str, into: Path) -> Path:
    """`npm pack @ohif/app@version` into `into`: the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise OhifError("npm is not installed (apt-get install nodejs npm): needed to fetch OHIF")
    command = [npm, "pack", f"{OHIF_PACKAGE}@{version}", "--json", "--pack-destination", str(into)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=FETCH_TIMEOUT, cwd=into
        )
    except subprocess.TimeoutExpired as exc:
        what = f"npm pack {OHIF_PACKAGE}@{version}"
        raise OhifError(f"{what} took over {FETCH_TIMEOUT:.0f}s") from exc
    tarballs = sorted(into.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        reason = _npm_reason(done.stderr)
        raise OhifError(f"npm pack {OHIF_PACKAGE}@{version} failed ({done.returncode}): {reason}")
    return tarballs[0]


def _npm_reason(stderr: str) -> str:
    """npm's first error line (not the one pointing at its log file), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [
        line
        for line in lines
        if line.startswith(("npm error", "npm ERR!")) and "complete log" not in line
    ]
    return (errors or lines or ["no output"])[0 if errors else -1]


def _unpack_dist(tarball: Path, into: Path) -> Path:
    """Unpack the package's `dist/` (npm tarballs hold `package/…`) into `into/dist`."""
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith("package/dist/")]
        if not members:
            raise OhifError(f"{tarball.name} has no package/dist/: not a built OHIF viewer")
        archive.extractall(into, members=members, filter="data")
    (into / "package" / "dist").rename(into / "dist")
    return into / "dist"


def ohif_dist(version: str = OHIF_VERSION, cache: Path | None = None) -> Path:
    """OHIF's built `dist/` for `version`: from the cache, or fetched with npm and cached."""
    found = cached_dist(version, cache)
    if found is not None:
        return found
    root = cache or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))  # same file system
    try:
        tarball = _npm_pack(version, work)
        _unpack_dist(tarball, work)
        tarball.unlink()
        shutil.rmtree(work / "package")
        (work / COMPLETE_MARKER).write_text(f"{OHIF_PACKAGE}@{version}\n")
        folder = root / version
        if cached_dist(version, cache) is None:  # not finished by another process meanwhile
            shutil.rmtree(folder, ignore_errors=True)  # a half-unpacked copy of a killed fetch
            work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder / "dist"


# --- 2. configure ----------------------------------------------------------------------


def app_config() -> str:
    """OHIF's `app-config.js`: one DICOMweb data source at the same-origin /dicom-web."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "pacs",
        "configuration": {
            "friendlyName": "PACS (through mura viewer)",
            "name": "pacs",
            "qidoSupportsIncludeField": False,
            "supportsReject": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True},
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        # no onboarding tour over the first study a radiologist opens, and no cine player
        # popping up for our Secondary Captures (modality OT; OHIF plays OT and US series)
        "customizationService": {
            "ohif.tours": {"$set": []},
            "autoCineModalities": {"$set": ["US"]},
        },
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "pacs",
        "dataSources": [source],
    }
    return (
        "/* written by mura (jobs/ohif.py): OHIF reads this PACS through the same-origin "
        f"{DICOMWEB_PATH} proxy */\n"
        f"window.config = {json.dumps(config, indent=2)};\n"
        "(function (c) {\n"
        f"  var root = window.location.origin + '{DICOMWEB_PATH}';\n"
        "  c.qidoRoot = root; c.wadoRoot = root; c.wadoUriRoot = root;\n"
        "})(window.config.dataSources[0].configuration);\n"
    )


# --- 3. serve --------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """The PACS's DICOMweb root the proxy forwards to, and the header that logs us in."""

    scheme: str
    host: str
    port: int
    path: str
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, address: str, auth: PacsAuth) -> Upstream:
        parsed = PacsAddress.parse(address)
        if parsed.protocol != "dicomweb":
            raise OhifError(f"{address}: OHIF reads a PACS by DICOMweb; give a dicomweb+http[s]://")
        url = urllib.parse.urlsplit(parsed.url)
        return cls(url.scheme, parsed.host, parsed.port, url.path, _authorization(auth))

    def connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=PROXY_TIMEOUT)


def _authorization(auth: PacsAuth) -> str | None:
    if auth.token:
        return f"Bearer {auth.token}"
    if auth.username:
        pair = f"{auth.username}:{auth.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return None


class _Handler(SimpleHTTPRequestHandler):
    """Routes one request: our config, the DICOMweb proxy, a dist file, or index.html."""

    server: _ViewerHTTPServer
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._route(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(body=False)

    def _route(self, body: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == DICOMWEB_PATH or path.startswith(DICOMWEB_PATH + "/"):
            self._proxy(body)
        elif path == "/app-config.js":
            self._send(200, "text/javascript", self.server.config.encode(), body)
        else:
            if not Path(self.translate_path(self.path)).is_file():
                self.path = "/index.html"  # the viewer's own routes: /viewer?…, /
            super().do_GET() if body else super().do_HEAD()

    def _send(self, status: int, kind: str, data: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _proxy(self, body: bool) -> None:
        upstream = self.server.upstream
        target = upstream.path + self.path[len(DICOMWEB_PATH) :]
        headers = {k: v for k in _FORWARDED if (v := self.headers.get(k))}
        headers["Accept-Encoding"] = "identity"  # Orthanc's gzip costs more than it saves here
        if upstream.authorization:
            headers["Authorization"] = upstream.authorization
        connection = upstream.connection()
        try:
            connection.request(self.command, target, headers=headers)
            answer = connection.getresponse()
            self.send_response(answer.status)
            for name in _RETURNED:
                if (value := answer.getheader(name)) is not None:
                    self.send_header(name, value)
            self.end_headers()
            while body and (chunk := answer.read(_CHUNK)):
                self.wfile.write(chunk)
        except OSError as exc:  # the PACS down or too slow: the viewer shows its own error
            self.send_error(502, f"PACS did not answer: {type(exc).__name__}")
        finally:
            connection.close()

    def end_headers(self) -> None:
        for name, value in _ISOLATION.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    def handle(self) -> None:
        # the browser may go away mid-answer (a page reload, a closed tab)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()


class _ViewerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, dist: Path, upstream: Upstream, log) -> None:
        super().__init__((HOST, port), partial(_Handler, directory=str(dist)))
        self.config = app_config()
        self.upstream = upstream
        self.log = log


@dataclass
class Viewer:
    """OHIF served on 127.0.0.1 in front of one PACS (a thread of this process)."""

    server: _ViewerHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}"

    def study_url(self, study_uid: str) -> str:
        """The page that opens one study (OHIF's longitudinal viewer mode)."""
        return f"{self.url}/viewer?StudyInstanceUIDs={urllib.parse.quote(study_uid)}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_viewer(
    pacs: str, auth: PacsAuth, *, dist: Path | None = None, port: int = 0, log=None
) -> Viewer:
    """Serve OHIF (`dist`, default: fetched and cached) for the DICOMweb PACS `pacs` on
    127.0.0.1:`port` (0: a free one); `log(line)` gets one line per request when given."""
    upstream = Upstream.of(pacs, auth)
    folder = dist if dist is not None else ohif_dist()
    if not (folder / "index.html").is_file():
        raise OhifError(f"{folder} holds no OHIF build (no index.html)")
    try:
        server = _ViewerHTTPServer(port, folder, upstream, log)
    except OSError as exc:
        raise OhifError(f"cannot serve the viewer on {HOST}:{port}: {exc.strerror}") from exc
    thread = threading.Thread(target=server.serve_forever, name="ohif-viewer", daemon=True)
    thread.start()
    return Viewer(server, thread)
