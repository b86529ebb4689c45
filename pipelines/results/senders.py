"""Sending one notice and hearing what the worklist said: MLLP for HL7 v2, HTTP(S) for FHIR.

- `MllpSender`: one TCP connection per message (what most MLLP listeners, hl7apy's
  included, expect), with a timeout for connecting and for the answer; the message framed
  `\\x0b MESSAGE \\x1c\\x0d`; the answer read up to its `\\x1c\\x0d` (at most 1 MiB) and
  read as an ACK (`mura_core.notify.hl7.parse_ack`): taken on `AA`/`CA` naming our control
  ID, not taken otherwise.
- `FhirSender`: the transaction Bundle POSTed to the server's base URL (`requests`, TLS
  verified against the system's CAs or `REQUESTS_CA_BUNDLE`; redirects not followed, so the
  token goes nowhere else), the bearer token in the Authorization header only; taken on a
  2xx answer whose transaction-response entries are all 2xx.

Each returns an `Outcome`: taken or not, the reason (the ACK code and HL7 error code, the
HTTP status, the socket's error: never what the receiver wrote, never the token), and
whether the destination could be reached at all — when it could not, the caller queues the
rest without trying each (a dead receiver costs one timeout per run, not one per study).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Protocol

import requests

from mura_core.notify.address import NotifyAddress
from mura_core.notify.fhir import CONTENT_TYPE
from mura_core.notify.hl7 import parse_ack
from mura_core.outputs import reason

START, END = b"\x0b", b"\x1c\x0d"
MAX_ANSWER = 1 << 20


@dataclass(frozen=True)
class Outcome:
    """What the destination did with one message."""

    taken: bool
    reason: str = ""
    reachable: bool = True  # False: no connection, or no answer in time


class Sender(Protocol):
    def send(self, control: str, payload: bytes) -> Outcome: ...


def _failure(exc: OSError, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout_s:g} s"
    return reason(exc).lower()


class MllpSender:
    """HL7 v2 over MLLP to `address`, one connection per message."""

    def __init__(self, address: NotifyAddress, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s

    def send(self, control: str, payload: bytes) -> Outcome:
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port), timeout=self.timeout_s
            )
        except OSError as exc:
            return Outcome(False, f"cannot connect: {_failure(exc, self.timeout_s)}", False)
        with sock:
            try:
                sock.sendall(START + payload + END)
                answer = _read_frame(sock)
            except OSError as exc:
                return Outcome(False, _failure(exc, self.timeout_s), False)
        if not answer:
            return Outcome(False, "the receiver closed the connection without an acknowledgement")
        ack = parse_ack(answer.decode("utf-8", errors="replace"), control)
        return Outcome(ack.accepted, ack.reason)


def _read_frame(sock: socket.socket) -> bytes:
    """The answer's message: the bytes up to the end of its MLLP frame (or of the stream)."""
    data = b""
    while END not in data and len(data) < MAX_ANSWER:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(END, 1)[0].lstrip(START)


class _Bearer(requests.auth.AuthBase):
    """The token in the Authorization header (and nowhere else: not in its repr)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(<hidden>)"


class FhirSender:
    """FHIR transactions POSTed to `address`'s base URL."""

    def __init__(self, address: NotifyAddress, token: str | None, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.auth = _Bearer(token) if token else None

    def send(self, control: str, payload: bytes) -> Outcome:
        try:
            response = self.session.post(
                self.address.url,
                data=payload,
                headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError:
            return Outcome(False, "TLS: the server's certificate was not verified", False)
        except requests.Timeout:
            return Outcome(False, f"no answer within {self.timeout_s:g} s", False)
        except requests.ConnectionError:
            return Outcome(False, "cannot connect", False)
        with response:
            if not 200 <= response.status_code < 300:
                return Outcome(False, f"HTTP {response.status_code}")
            refused = _refused_entries(response.content)
        if refused:
            return Outcome(False, f"transaction entry answered {refused}")
        return Outcome(True)


def _refused_entries(body: bytes) -> str:
    """The first non-2xx status among a transaction-response's entries ("" when none, or
    when the body is not one: a 2xx without a Bundle is taken)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle":
        return ""
    for entry in answer.get("entry") or []:
        status = str((entry.get("response") or {}).get("status", "")).strip()
        if status and not status.startswith("2"):
            return status.split()[0][:3]
    return ""


def sender_for(address: NotifyAddress, token: str | None, timeout_s: float) -> Sender:
    if address.protocol == "mllp":
        return MllpSender(address, timeout_s)
    return FhirSender(address, token, timeout_s)
