"""PACS addresses, credentials and queries: parsed strictly, secrets never echoed back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mura_core.archive import FolderSource, PacsSource, parse_source
from mura_core.body_parts import BodyPart
from mura_core.errors import ConfigError, MuraError
from mura_core.locations import PacsInstance, addressable
from mura_core.pacs.address import (
    PacsAddress,
    PacsAuth,
    PacsQuery,
    check_ae_title,
    load_auth,
)

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("text", "url", "port"),
    [
        ("dicomweb+http://pacs:8042/dicom-web", "http://pacs:8042/dicom-web", 8042),
        ("dicomweb+http://pacs:8042/dicom-web/", "http://pacs:8042/dicom-web", 8042),
        ("dicomweb+http://pacs/dicom-web", "http://pacs:80/dicom-web", 80),
        ("dicomweb+https://pacs.example.org/wado", "https://pacs.example.org:443/wado", 443),
        ("dicomweb+http://127.0.0.1:8042", "http://127.0.0.1:8042", 8042),
        ("dicomweb+http://[::1]:8042/dicom-web", "http://[::1]:8042/dicom-web", 8042),
    ],
)
def test_dicomweb_addresses(text: str, url: str, port: int) -> None:
    addr = PacsAddress.parse(text)
    assert (addr.protocol, addr.url, addr.port) == ("dicomweb", url, port)
    assert addr.host in text and "[" not in addr.host
    assert str(addr) == "dicomweb+" + url
    assert PacsAddress.parse(str(addr)) == addr  # str() is a valid address again


@pytest.mark.parametrize(
    ("text", "aet", "host", "port"),
    [
        ("dimse://ORTHANC@127.0.0.1:4242", "ORTHANC", "127.0.0.1", 4242),
        ("dimse://ORTHANC@pacs:104/", "ORTHANC", "pacs", 104),
        ("dimse://MY PACS@[::1]:11112", "MY PACS", "::1", 11112),
    ],
)
def test_dimse_addresses(text: str, aet: str, host: str, port: int) -> None:
    addr = PacsAddress.parse(text)
    assert (addr.protocol, addr.called_aet, addr.host, addr.port) == ("dimse", aet, host, port)
    assert str(addr).startswith(f"dimse://{aet}@") and str(addr).endswith(f":{port}")


@pytest.mark.parametrize(
    "text",
    [
        "dimse://ORTHANC@pacs",  # no port
        "dimse://@pacs:104",  # no AE title
        "dimse://ORTHANC@pacs:abc",
        "dimse://AN_AE_TITLE_TOO_LONG@pacs:104",
        "dimse://BACK\\SLASH@pacs:104",
        "dimse:// LEADING@pacs:104",
        "dicomweb+ftp://pacs/dicom-web",
        "dicomweb+http://pacs:8042/dicom-web?x=1",
        "dicomweb+http://:8042/dicom-web",
        "http://pacs:8042/dicom-web",  # the scheme says which protocol: no guessing
    ],
)
def test_malformed_addresses_are_one_line_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        PacsAddress.parse(text)
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, MuraError)


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_ports_out_of_range(port: str) -> None:
    for text in (f"dimse://ORTHANC@pacs:{port}", f"dicomweb+http://pacs:{port}/dicom-web"):
        with pytest.raises(ConfigError, match=f"port {int(port)} out of range"):
            PacsAddress.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        f"dicomweb+http://mura:{SECRET}@pacs:8042/dicom-web",
        f"dicomweb+https://mura:{SECRET}@pacs/dicom-web",
        f"dicomweb+http://{SECRET}@pacs:8042/dicom-web",
        # a password holding '/', '@' or '#' must not leak through the "not an address" path
        f"dicomweb+http://mura:{SECRET}/x@pacs:8042/dicom-web",
        f"dicomweb+http://mura:{SECRET}@x@pacs:8042/dicom-web",
        f"dicomweb+http://mura:{SECRET}#x@pacs:8042/dicom-web",
    ],
)
def test_credentials_in_an_address_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        PacsAddress.parse(text)
    message = str(err.value)
    assert SECRET not in message and "mura:" not in message, message
    assert "--pacs-auth" in message and "pacs" in message


def test_a_source_is_a_pacs_by_its_scheme_else_a_folder() -> None:
    for address in ("dicomweb+http://pacs/dicom-web", "dicomweb+https://pacs/dicom-web"):
        assert parse_source(address) == PacsSource(address)
    assert parse_source("dimse://A@pacs:104") == PacsSource("dimse://A@pacs:104")
    folded = Path("dimse://A@pacs:104")  # a Path folds "//": a folder
    assert parse_source(folded) == FolderSource(folded)
    for folder in ("/data/MURA-v1.1", "dicomweb", "http://pacs/dicom-web", "./dimse"):
        assert parse_source(folder) == FolderSource(Path(folder))


def test_ae_titles() -> None:
    assert check_ae_title("MURA") == "MURA"
    assert check_ae_title("A" * 16) == "A" * 16
    for bad in ("", "A" * 17, " MURA", "MURA ", "MU\\RA", "MÜRA", "MU\tRA"):
        with pytest.raises(ConfigError, match="--ae-title .*printable ASCII"):
            check_ae_title(bad, "--ae-title")


def test_auth_hides_its_secrets() -> None:
    auth = PacsAuth(username="mura", password=SECRET)
    assert SECRET not in repr(auth) and "mura" in repr(auth)
    assert auth.secrets == (SECRET,) and auth
    token = PacsAuth(token=SECRET)
    assert SECRET not in repr(token) and token.secrets == (SECRET,) and token
    assert not PacsAuth() and PacsAuth().secrets == ()


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_auth_file_user_password(tmp_path: Path) -> None:
    auth = load_auth(_private(tmp_path / "auth", f"mura:{SECRET}\n"), environ={})
    assert (auth.username, auth.password, auth.token) == ("mura", SECRET, None)
    # only the first ':' separates: a password may hold more of them
    auth = load_auth(_private(tmp_path / "colons", "mura:a:b:c"), environ={})
    assert (auth.username, auth.password) == ("mura", "a:b:c")
    assert load_auth(_private(tmp_path / "ro", "mura:x", 0o400), environ={}).password == "x"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004])
def test_auth_files_others_can_read_are_refused(tmp_path: Path, mode: int) -> None:
    for flag, kwargs in (
        ("--pacs-auth", {"auth_file": _private(tmp_path / "auth", f"mura:{SECRET}", mode)}),
        ("--pacs-token", {"token_file": _private(tmp_path / "token", SECRET, mode)}),
    ):
        with pytest.raises(ConfigError) as err:
            load_auth(**kwargs, environ={})
        message = str(err.value)
        assert flag in message and f"{mode & 0o777:o}" in message and "chmod 600" in message
        assert SECRET not in message


def test_auth_file_problems(tmp_path: Path) -> None:
    cases = {
        "missing": (tmp_path / "nope", "No such file"),
        "empty": (_private(tmp_path / "empty", "\n"), "is empty"),
        "no colon": (_private(tmp_path / "nocolon", SECRET), "user:password"),
        "no user": (_private(tmp_path / "nouser", f":{SECRET}"), "user:password"),
    }
    for name, (path, expected) in cases.items():
        with pytest.raises(ConfigError) as err:
            load_auth(path, environ={})
        assert expected in str(err.value), name
        assert SECRET not in str(err.value), name


def test_auth_file_and_token_file_together_are_refused(tmp_path: Path) -> None:
    auth, token = _private(tmp_path / "auth", "mura:x"), _private(tmp_path / "token", "t")
    with pytest.raises(ConfigError, match="--pacs-auth or --pacs-token, not both"):
        load_auth(auth, token, environ={})


def test_token_file(tmp_path: Path) -> None:
    auth = load_auth(token_file=_private(tmp_path / "token", f"  {SECRET}\n"), environ={})
    assert (auth.token, auth.username, auth.password) == (SECRET, None, None)


def test_credentials_from_the_environment_and_which_wins(tmp_path: Path) -> None:
    env = {"MURA_PACS_USERNAME": "envuser", "MURA_PACS_PASSWORD": SECRET}
    assert load_auth(environ=env) == PacsAuth("envuser", SECRET)
    assert load_auth(environ={"MURA_PACS_USERNAME": "u"}) == PacsAuth("u", "")
    assert load_auth(environ={**env, "MURA_PACS_TOKEN": "tok"}) == PacsAuth(token="tok")
    assert load_auth(environ={"MURA_PACS_PASSWORD": SECRET}) == PacsAuth()  # no user: none
    assert load_auth(environ={}) == PacsAuth()
    # a file given on the command line wins over the environment
    assert load_auth(_private(tmp_path / "auth", "fileuser:p"), environ=env).username == "fileuser"


def test_queries() -> None:
    q = PacsQuery()
    assert q.modalities == ("CR", "DX") and q.study_date is None and q.body_part is None
    q = PacsQuery(since="2024-01-01", until="2024-01-31", modalities=(" cr", "dx ", ""))
    assert q.since == dt.date(2024, 1, 1) and q.modalities == ("CR", "DX")
    assert q.study_date == "20240101-20240131"
    assert PacsQuery(since="2024-01-01").study_date == "20240101-"
    assert PacsQuery(until=dt.date(2024, 1, 31)).study_date == "-20240131"
    assert PacsQuery(since="2024-02-29", until="2024-02-29").study_date == "20240229"
    assert PacsQuery(body_part=BodyPart.WRIST).body_part is BodyPart.WRIST


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"since": "2024-13-01"}, "--since '2024-13-01': use a date YYYY-MM-DD"),
        ({"until": "yesterday"}, "--until 'yesterday'"),
        ({"since": "2024-02-01", "until": "2024-01-01"}, "is after --until"),
        ({"modalities": ("",)}, "--modality"),
        ({"modalities": ("CR", "D-X")}, "--modality"),
        ({"modalities": ("CR;DROP",)}, "--modality"),
    ],
)
def test_bad_queries(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        PacsQuery(**kwargs)


def test_addressable_uids_and_locators() -> None:
    for uid in ("1.2.840.10008.5.1.4.1.1.1", "2.25.1234", "05fa52f0e599f17b8186ff18fcdf2b55"):
        assert addressable(uid)
    for uid in ("", "1.2/3", "1.2@3", "1.2 3", "1.2#3", "1.2?3", "1.2\\3"):
        assert not addressable(uid), uid
    loc = PacsInstance("1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.1")
    assert str(loc) == "1.2.3/1.2.3.4/1.2.3.4.5/1.2.840.10008.5.1.4.1.1.1"
