"""A PACS that cannot be used, through the `mura` CLI and a real Orthanc.

A closed port, a wrong port, a wrong path, wrong credentials → HTTP 401, credentials Orthanc
knows but a Lua `IncomingHttpRequestFilter` forbids → HTTP 403, a rejected association, an
AE title Orthanc does not know, unsafe credential files: each ends in one line
`mura: error: …` naming the address and never a secret, exit 1, before any work.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.demo_orthanc import Orthanc, OrthancConfig, orthanc_binary, start_orthanc
from pipelines.runtime.ports import free_port
from tests.pipelines.pacs_faults.cli import (
    Mura,
    Said,
    files,
    mlflow_runs,
    one_error_line,
    private_file,
)

pytestmark = pytest.mark.usefixtures("ray_local")

READER, READER_PASSWORD = "reader", "reader-Pa55-not-allowed"  # known to Orthanc, forbidden
WRONG_PASSWORD = "wrong-Pa55-for-mura"
# Orthanc answers 403 when this Lua filter returns false: a real, documented configuration
FORBID_READER = f"""
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return not (username == '{READER}' and string.sub(uri, 1, 10) == '/dicom-web')
end
"""


class GuardedOrthanc(Orthanc):
    """The test Orthanc plus a second user whom a Lua filter forbids DICOMweb (HTTP 403)."""

    def config(self) -> dict[str, object]:
        config = super().config()
        script = self.storage / "forbid-reader.lua"
        script.write_text(FORBID_READER)
        config["RegisteredUsers"] = {**config["RegisteredUsers"], READER: READER_PASSWORD}
        config["LuaScripts"] = [str(script)]
        return config


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """An empty Orthanc (its checks pass, its listing is empty) for the whole-run faults."""
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    cfg = OrthancConfig(storage=tmp_path_factory.mktemp("guarded-pacs"))
    server = start_orthanc(cfg, server=GuardedOrthanc)
    yield server
    server.stop()


def test_unreachable_refused_and_rejected_pacs_fail_before_any_work(
    guarded: GuardedOrthanc,
    bundle: str,
    tmp_path: Path,
    mura: Mura,
) -> None:
    closed = free_port()
    password = guarded.cfg.password
    secrets = (password, WRONG_PASSWORD, READER_PASSWORD)
    good = guarded.auth_env
    wrong = {**good, "MURA_PACS_PASSWORD": WRONG_PASSWORD}
    reader = {"MURA_PACS_USERNAME": READER, "MURA_PACS_PASSWORD": READER_PASSWORD}
    web = guarded.dicomweb
    cases = [  # name, address, extra flags, environment, what the line must say
        ("closed web", f"dicomweb+http://127.0.0.1:{closed}/dicom-web", (), good, "cannot reach"),
        ("closed dimse", f"dimse://ORTHANC@127.0.0.1:{closed}", (), {}, "cannot reach"),
        (
            "web at the DICOM port",
            f"dicomweb+http://127.0.0.1:{guarded.dicom_port}/dicom-web",
            (),
            good,
            "cannot reach",
        ),
        (
            "dimse at the HTTP port",
            f"dimse://ORTHANC@127.0.0.1:{guarded.http_port}",
            (),
            {},
            "cannot reach",
        ),
        ("wrong path", web.replace("/dicom-web", "/dicomweb"), (), good, "HTTP 404"),
        ("no credentials", web, (), {}, "HTTP 401"),
        ("wrong password", web, (), wrong, "HTTP 401"),
        ("forbidden user", web, (), reader, "HTTP 403"),
        (
            "wrong called AE title",
            f"dimse://NOT_ORTHANC@127.0.0.1:{guarded.dicom_port}",
            (),
            {},
            "rejected the association",
        ),
        ("unknown calling AE title", guarded.dimse, ("--ae-title", "STRANGER"), {}, "STRANGER"),
    ]
    for name, address, flags, env, expected in cases:
        out = tmp_path / name.replace(" ", "-")
        said = mura("screen", address, "--model", bundle, "--out", str(out), *flags, env=env)
        line = one_error_line(said, secrets=secrets)
        assert address in line and expected in line, (name, line)
        assert "Traceback" not in said.err
        # check_out made OUT (empty) before the PACS was asked; nothing else was written
        assert files(out) == [], (name, files(out))
    assert mlflow_runs(tmp_path / "default-mlflow.db") == 0  # checked, but no run started

    # `mura inspect` checks the same way (no Ray, no OUT)
    said = mura("inspect", f"dimse://ORTHANC@127.0.0.1:{closed}")
    assert f"dimse://ORTHANC@127.0.0.1:{closed}" in one_error_line(said)
    mura.env.setenv("MURA_PACS_USERNAME", "mura")
    mura.env.setenv("MURA_PACS_PASSWORD", WRONG_PASSWORD)
    said = mura("inspect", web)
    assert "HTTP 401" in one_error_line(said, secrets=secrets)


def test_credential_files_must_be_private_and_not_both(
    guarded: GuardedOrthanc,
    bundle: str,
    tmp_path: Path,
    mura: Mura,
) -> None:
    password = guarded.cfg.password
    user_password = f"{guarded.cfg.username}:{password}"
    web = guarded.dicomweb
    token = "bearer-token-that-orthanc-does-not-know"
    secrets = (password, token)

    def screen(name: str, *flags: str) -> Said:
        out = tmp_path / "reports" / name
        said = mura("screen", web, "--model", bundle, "--out", str(out), *flags)
        if said.rc != 0:
            assert files(out) == [], files(out)
        return said

    shared = private_file(tmp_path / "auth-644", user_password, 0o644)
    line = one_error_line(screen("r644", "--pacs-auth", str(shared)), secrets=secrets)
    assert "--pacs-auth" in line and "readable by others (mode 644)" in line and "chmod 600" in line
    assert not (tmp_path / "reports" / "r644").exists()  # refused reading the flags, before OUT

    private = private_file(tmp_path / "auth-600", user_password)
    # accepted: past the check, the empty PACS says there is nothing to screen
    line = one_error_line(screen("r600", "--pacs-auth", str(private)), secrets=secrets)
    assert "no images match" in line and f"0 studies matched modality CR/DX at {web}" in line
    said = mura("inspect", web, "--pacs-auth", str(private))
    assert said.rc == 0 and f"dicomweb archive at {web}" in said.out, said
    assert password not in said.out + said.err

    token_file = private_file(tmp_path / "token", token)
    line = one_error_line(
        screen("both", "--pacs-auth", str(private), "--pacs-token", str(token_file)),
        secrets=secrets,
    )
    assert "give --pacs-auth or --pacs-token, not both" in line
    open_token = private_file(tmp_path / "token-644", token, 0o644)
    line = one_error_line(screen("t644", "--pacs-token", str(open_token)), secrets=secrets)
    assert "--pacs-token" in line and "mode 644" in line
    # Orthanc knows no bearer tokens: a 401, and the token is not in the line
    line = one_error_line(screen("token", "--pacs-token", str(token_file)), secrets=secrets)
    assert "HTTP 401" in line and web in line
