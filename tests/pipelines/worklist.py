"""Worklist receivers for tests, real servers on 127.0.0.1 (no mocks):

- `MllpReceiver`: hl7apy's own `MLLPServer` with a handler that records every ER7 message it
  gets and answers an ACK (`AA`) or, for the control IDs (or all) it is told to refuse, a
  NACK (`AE`, with an ERR segment); `accepted` counts the control IDs it acknowledged.
- `FhirReceiver`: `http.server` on a free port, optionally over TLS with a self-signed
  certificate made here (`cryptography`), recording each POST's path, Authorization header
  and body, answering a transaction-response Bundle (200) or the status it is told to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

ORU = "ORU^R01^ORU_R01"


FHIR_TOKEN = "tok-3f9a1c77e2b54d0b"  # the FHIR servers' bearer token in tests, kept in a file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    """What a receiver got, shared with its handler threads."""

    messages: list[str] = field(default_factory=list)  # ER7, in arrival order
    accepted: Counter = field(default_factory=Counter)  # control ID → times acknowledged
    refuse: set[str] | None = field(default_factory=set)  # control IDs to NACK; None: all
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Recording(AbstractHandler):
    def __init__(self, message: str, received: Received) -> None:
        super().__init__(message)
        self.received = received

    def reply(self) -> str:
        incoming = parse_message(self.incoming_message)
        control = incoming.msh.msh_10.to_er7()
        with self.received.lock:
            self.received.messages.append(self.incoming_message)
            refused = self.received.refuse is None or control in self.received.refuse
            if not refused:
                self.received.accepted[control] += 1
        ack = Message("ACK", version="2.5")
        ack.msh.msh_3, ack.msh.msh_7 = "TEST-RIS", dt.datetime.now().strftime("%Y%m%d%H%M%S")
        ack.msh.msh_9, ack.msh.msh_10 = "ACK^R01^ACK", f"ack-{len(self.received.messages)}"
        ack.msh.msh_11, ack.msh.msh_12 = "P", "2.5"
        ack.msa.msa_1, ack.msa.msa_2 = ("AE" if refused else "AA"), control
        if refused:
            ack.msa.msa_3 = "order not found"
            err = ack.add_segment("ERR")
            err.err_3, err.err_4 = "207^Application internal error^HL70357", "E"
        return ack.to_mllp()


class MllpReceiver:
    """hl7apy's MLLPServer on 127.0.0.1:`port` (a free one by default), in a thread."""

    def __init__(self, port: int = 0) -> None:
        self.received = Received()
        self.server = MLLPServer("127.0.0.1", port, {ORU: (_Recording, self.received)})
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"mllp://127.0.0.1:{self.port}"

    def controls(self) -> list[str]:
        return [parse_message(m).msh.msh_10.to_er7() for m in self.received.messages]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), valid for a day: (cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Post:
    path: str
    authorization: str | None
    body: bytes


class FhirReceiver:
    """A FHIR server's base URL that records POSTs; `status` is what it answers next."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.posts: list[Post] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append(Post(self.path, self.headers.get("Authorization"), body))
                status = receiver.status
                answer = b'{"resourceType": "OperationOutcome"}'
                if status == 200:
                    entries = [{"response": {"status": "201 Created"}}] * 3
                    reply = {"resourceType": "Bundle", "type": "transaction-response"}
                    answer = json.dumps(reply | {"entry": entries}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"fhir+{self.scheme}://127.0.0.1:{self.port}/fhir"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
