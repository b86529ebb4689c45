"""Free ports: distinct within one call (two servers started together never share one)."""

from __future__ import annotations

import socket

import pytest

from pipelines.runtime.ports import HOST, free_port, free_ports


def test_ports_of_one_call_differ_and_can_be_bound() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    with socket.socket() as sock:
        sock.bind((HOST, free_port()))


def test_no_ports_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one port"):
        free_ports(0)
