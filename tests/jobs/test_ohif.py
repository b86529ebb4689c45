"""The OHIF harness without a browser: fetched once into the cache, our app-config.js, the
server's routes and its DICOMweb proxy, and `mura viewer` as a user runs it.

The fetch runs a stand-in `npm` on PATH (a shell script that packs a tiny `package/dist`),
so these tests need no registry; the real `npm pack @ohif/app` and the real viewer in
Chromium are tests/pipelines/test_pacs.py's OHIF test. The proxy's PACS is an http.server
that records what reaches it, and, for `mura viewer`, a real Orthanc.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jobs import ohif
from mura_core.pacs.address import PacsAuth

PROJECT = Path(__file__).resolve().parents[2]
FAKE_NPM = """#!/bin/sh
# a stand-in for `npm pack @ohif/app@VERSION --json --pack-destination DIR`
echo "$@" >> "{log}"
if [ -n "$FAIL" ]; then
  echo "npm error code E404" >&2
  echo "npm error A complete log of this run can be found in: /root/.npm/_logs/x.log" >&2
  exit 1
fi
dest="$5"; work=$(mktemp -d); mkdir -p "$work/package/dist/sub"
echo '<html>OHIF</html>' > "$work/package/dist/index.html"
echo 'x' > "$work/package/dist/sub/a.js"; echo '{{}}' > "$work/package/package.json"
tar czf "$dest/ohif-app-1.0.0.tgz" -C "$work" package; rm -rf "$work"
echo '[{{"filename": "ohif-app-1.0.0.tgz"}}]'
"""


def _fake_npm(folder: Path) -> Path:
    """A folder holding the stand-in npm (put it first on PATH); its calls go to npm.log."""
    folder.mkdir(parents=True, exist_ok=True)
    npm = folder / "npm"
    npm.write_text(FAKE_NPM.format(log=folder / "npm.log"))
    npm.chmod(0o755)
    return folder


def _calls(folder: Path) -> list[str]:
    log = folder / "npm.log"
    return log.read_text().splitlines() if log.is_file() else []


def test_ohif_is_fetched_once_into_the_cache_and_a_killed_fetch_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _fake_npm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "cache"
    half = cache / "1.0.0" / "dist"  # what a killed fetch leaves: no .complete marker
    half.mkdir(parents=True)
    (half / "index.html").write_text("half")
    assert ohif.cached_dist("1.0.0", cache) is None

    dist = ohif.ohif_dist("1.0.0", cache)
    assert dist == cache / "1.0.0" / "dist"
    assert (dist / "index.html").read_text() == "<html>OHIF</html>\n"
    assert (dist / "sub" / "a.js").is_file() and not (cache / "1.0.0" / "package").exists()
    (call,) = _calls(bin_dir)
    assert call.startswith(f"pack @ohif/app@1.0.0 --json --pack-destination {cache}/.1.0.0-")
    assert sorted(p.name for p in cache.iterdir()) == ["1.0.0"]  # no scratch folder left
    assert ohif.ohif_dist("1.0.0", cache) == dist and len(_calls(bin_dir)) == 1  # cached

    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(ohif.OhifError, match=r"npm pack @ohif/app@2\.0\.0 failed \(1\): npm error"):
        ohif.ohif_dist("2.0.0", cache)
    assert not (cache / "2.0.0").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ohif.OhifError, match="npm is not installed"):
        ohif.ohif_dist("3.0.0", cache)


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ohif.CACHE_ENV, "/srv/ohif")
    assert ohif.cache_root() == Path("/srv/ohif")
    monkeypatch.delenv(ohif.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/me")
    assert ohif.cache_root() == Path("/var/cache/me/mura/ohif")


def test_app_config_is_javascript_that_points_ohif_at_the_same_origin_proxy() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    script = (
        "global.window = {location: {origin: 'http://127.0.0.1:8000'}};"
        f"eval({json.dumps(ohif.app_config())}); console.log(JSON.stringify(window.config));"
    )
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert config["defaultDataSourceName"] == source["sourceName"]
    roots = {source["configuration"][k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")}
    assert roots == {"http://127.0.0.1:8000/dicom-web"}
    assert source["configuration"]["qidoSupportsIncludeField"] is False  # Orthanc's plugin
    assert config["customizationService"]["ohif.tours"] == {"$set": []}
    assert config["investigationalUseDialog"] == {"option": "never"}


class _Recorder(BaseHTTPRequestHandler):
    """A PACS stand-in: answers GET /pacs/dicom-web/studies, 404 elsewhere, records all."""

    seen: list[tuple[str, str, dict[str, str]]] = []

    def _answer(self) -> None:
        self.seen.append((self.command, self.path, dict(self.headers)))
        if self.path.startswith("/pacs/dicom-web/studies"):
            body = b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]'
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
        else:
            body = b"no such resource"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "index.html").write_text("<html>OHIF</html>")
    (folder / "app.bundle.js").write_text("console.log(1)")
    (folder / "codec.wasm").write_bytes(b"\0asm")
    return folder


def _get(url: str, **headers: str) -> tuple[int, Message, bytes]:
    """Status, headers (looked up in any case) and body of a GET."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_the_viewer_serves_ohif_its_routes_and_our_config(
    dist: Path, upstream: ThreadingHTTPServer
) -> None:
    pacs = f"dicomweb+http://127.0.0.1:{upstream.server_address[1]}/pacs/dicom-web"
    with ohif.start_viewer(pacs, PacsAuth(), dist=dist) as viewer:
        for path in ("/", "/viewer?StudyInstanceUIDs=1.2.3", "/viewer/dicomweb", "/nope.js"):
            status, headers, body = _get(viewer.url + path)
            assert (status, body) == (200, b"<html>OHIF</html>"), path
            assert headers["Content-Type"].startswith("text/html")
            assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert _get(viewer.url + "/app.bundle.js")[1]["Content-Type"] == "text/javascript"
        assert _get(viewer.url + "/codec.wasm")[1]["Content-Type"] == "application/wasm"
        status, headers, body = _get(viewer.url + "/app-config.js")
        assert status == 200 and body.decode() == ohif.app_config()
        assert viewer.study_url("1.2.3") == viewer.url + "/viewer?StudyInstanceUIDs=1.2.3"
    assert not _Recorder.seen  # nothing of that went to the PACS
    with pytest.raises(OSError):
        urllib.request.urlopen(viewer.url + "/", timeout=2)  # stopped


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        (PacsAuth("mura", "s3cret:pw"), "Basic " + base64.b64encode(b"mura:s3cret:pw").decode()),
        (PacsAuth(token="tok-123"), "Bearer tok-123"),
        (PacsAuth(), None),
    ],
)
def test_the_proxy_forwards_reads_with_the_credentials_the_browser_never_sees(
    dist: Path, upstream: ThreadingHTTPServer, auth: PacsAuth, header: str | None
) -> None:
    pacs = f"dicomweb+http://127.0.0.1:{upstream.server_address[1]}/pacs/dicom-web"
    with ohif.start_viewer(pacs, auth, dist=dist) as viewer:
        status, headers, body = _get(
            viewer.url + "/dicom-web/studies?limit=1&includefield=0020000D",
            Accept="application/dicom+json",
            Cookie="session=browser",
        )
        assert status == 200 and json.loads(body)[0]["0020000D"]["Value"] == ["1.2.3"]
        assert headers["Content-Type"] == "application/dicom+json"
        assert "Authorization" not in headers and "WWW-Authenticate" not in headers
        status, _, _ = _get(viewer.url + "/dicom-web/nothing")
        assert status == 404
        post = urllib.request.Request(viewer.url + "/dicom-web/studies", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=10)
        assert refused.value.code == 501  # the viewer reads; nothing is stored through it
    method, path, sent = _Recorder.seen[0]
    assert (method, path) == ("GET", "/pacs/dicom-web/studies?limit=1&includefield=0020000D")
    assert sent.get("Authorization") == header
    assert sent["Accept"] == "application/dicom+json" and sent["Accept-Encoding"] == "identity"
    assert "Cookie" not in sent  # only what a DICOMweb read needs goes on
    assert {m for m, _, _ in _Recorder.seen} == {"GET"}


def test_a_pacs_that_does_not_answer_is_a_502_and_dimse_is_refused(dist: Path) -> None:
    with ohif.start_viewer("dicomweb+http://127.0.0.1:9/dicom-web", PacsAuth(), dist=dist) as v:
        assert _get(v.url + "/dicom-web/studies")[0] == 502
    with pytest.raises(ohif.OhifError, match="OHIF reads a PACS by DICOMweb"):
        ohif.start_viewer("dimse://ORTHANC@127.0.0.1:4242", PacsAuth(), dist=dist)
    with pytest.raises(ohif.OhifError, match="no OHIF build"):
        ohif.start_viewer("dicomweb+http://127.0.0.1:9/x", PacsAuth(), dist=dist / "nope")


def _fake_cache(root: Path) -> Path:
    """A cache holding a 'complete' OHIF: `mura viewer` needs no npm then."""
    folder = root / ohif.OHIF_VERSION
    (folder / "dist").mkdir(parents=True)
    (folder / "dist" / "index.html").write_text("<html>OHIF</html>")
    (folder / ohif.COMPLETE_MARKER).write_text("test\n")
    return root


def test_mura_viewer_serves_a_pacs_until_sigterm(orthanc_factory, tmp_path: Path) -> None:
    pacs = orthanc_factory("viewer")
    env = {
        **os.environ,
        **pacs.auth_env,
        ohif.CACHE_ENV: str(_fake_cache(tmp_path / "cache")),
        "PYTHONPATH": str(PROJECT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "viewer", pacs.dicomweb, "1.2.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("OHIF Viewer v3 at http://127.0.0.1:"), first
        url = first.split()[4].rstrip("/")
        study = f"{url}/viewer?StudyInstanceUIDs=1.2.3"
        assert process.stdout.readline().strip() == f"the study: {study}"
        assert _get(study)[2] == b"<html>OHIF</html>"
        status, _, body = _get(url + "/dicom-web/studies", Accept="application/dicom+json")
        assert status == 200 and json.loads(body or b"[]") == []  # an empty PACS, logged in
    finally:
        os.kill(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "viewer stopped" in err and pacs.cfg.password not in out + err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("dimse://ORTHANC@127.0.0.1:4242",), "OHIF reads a PACS by DICOMweb"),
        (("dicomweb+http://127.0.0.1:9/dicom-web",), "cannot reach PACS dicomweb+http://"),
        (("dicomweb+http://u:p@127.0.0.1:9/x",), "put no credentials in the address"),
    ],
)
def test_mura_viewer_errors_are_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    env = {**os.environ, ohif.CACHE_ENV: str(tmp_path / "cache"), "PYTHONPATH": str(PROJECT)}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "viewer", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mura: error: ") and message in lines[0]
    assert not (tmp_path / "cache").exists()  # refused before fetching anything
