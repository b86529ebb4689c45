"""Keyed pseudonyms: stable per site, different across sites, key file 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mura_core.privacy import (
    PrivacyError,
    Pseudonymizer,
    key_file_path,
    load_or_create_key,
    site_secret,
)


def test_key_file_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "site.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64
    assert load_or_create_key(path) == key  # reused, not rewritten


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(PrivacyError, match="chmod 600"):
        load_or_create_key(path)


def test_env_secret_wins_over_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MURA_SITE_KEY_FILE", str(tmp_path / "k"))
    monkeypatch.setenv("MURA_SITE_SECRET", "a-long-enough-site-secret")
    assert site_secret() == b"a-long-enough-site-secret"
    assert not (tmp_path / "k").exists()
    monkeypatch.setenv("MURA_SITE_SECRET", "short")
    with pytest.raises(PrivacyError):
        site_secret()
    monkeypatch.delenv("MURA_SITE_SECRET")
    assert site_secret() == load_or_create_key(key_file_path())


def test_pseudonyms_are_stable_keyed_and_kind_separated() -> None:
    a = Pseudonymizer(b"site-a-secret-0123456789")
    b = Pseudonymizer(b"site-b-secret-0123456789")
    assert a.patient("MRN0001") == a.patient("MRN0001")
    assert a.patient("MRN0001") != b.patient("MRN0001")
    assert a.patient("X") != a.study("X")
    assert a.patient("MRN0001").startswith("pt-") and a.study("1.2.3").startswith("st-")
    assert "MRN0001" not in a.patient("MRN0001")
    assert "secret" not in repr(a)
    with pytest.raises(ValueError):
        a("x", "name")
