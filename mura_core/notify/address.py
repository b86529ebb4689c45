"""Where the worklist listens: `--notify ADDR` parsed once into a `NotifyAddress`.

- `mllp://HOST:PORT` → HL7 v2.5 ORU^R01 messages over MLLP (a TCP connection per message,
  framed `\\x0b … \\x1c\\x0d`, an ACK awaited for each);
- `fhir+https://HOST[:PORT]/BASE` → one FHIR R4 transaction Bundle per study, POSTed to the
  server's base URL `https://HOST[:PORT]/BASE`; `fhir+http://` only to this machine
  (127.0.0.1, ::1, localhost: tests, a local relay), since the Bundle carries accession
  numbers and the bearer token would go in clear.

An address with `user:password@` in it is refused (a FHIR server's token comes from
`--notify-token FILE`); so is anything else, with one line saying what is expected.
`str()` gives the address back as written, without credentials: what reports show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mura_core.errors import ConfigError

MLLP, FHIR = "mllp", "fhir"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
_MLLP = re.compile(r"^mllp://(?P<host>[^:/@\[\]]+|\[[^\]]+\]):(?P<port>\d+)/?$")
_FHIR = re.compile(
    r"^fhir\+(?P<scheme>https?)://(?P<host>[^:/@\[\]]+|\[[^\]]+\])(:(?P<port>\d+))?"
    r"(?P<path>/[^?#@]*)?$"
)
EXPECTED = "use mllp://HOST:PORT or fhir+https://HOST[:PORT]/BASE"


@dataclass(frozen=True)
class NotifyAddress:
    """A parsed `--notify` address: the protocol, host and port; FHIR: its base URL."""

    protocol: str  # MLLP or FHIR
    host: str
    port: int
    url: str = ""  # FHIR: the http(s) base URL a transaction is POSTed to

    @classmethod
    def parse(cls, text: str) -> NotifyAddress:
        text = text.strip()
        if "@" in text.split("://", 1)[-1]:
            raise ConfigError(
                f"--notify {_safe(text)}: put no credentials in the address; a FHIR server's "
                "bearer token goes in a file given as --notify-token FILE"
            )
        if (m := _MLLP.match(text)) is not None:
            return cls(MLLP, m["host"].strip("[]"), _port(m["port"], text))
        if (m := _FHIR.match(text)) is not None:
            scheme, host = m["scheme"], m["host"].strip("[]")
            if scheme == "http" and host not in LOOPBACK:
                raise ConfigError(
                    f"--notify {text}: fhir+http is for this machine only (127.0.0.1): "
                    "use fhir+https:// for a FHIR server elsewhere"
                )
            port = _port(m["port"], text) if m["port"] else (443 if scheme == "https" else 80)
            path = (m["path"] or "").rstrip("/")
            return cls(FHIR, host, port, url=f"{scheme}://{m['host']}:{port}{path}")
        raise ConfigError(f"--notify {_safe(text)} is not a worklist address: {EXPECTED}")

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    def __str__(self) -> str:
        if self.protocol == MLLP:
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"mllp://{host}:{self.port}"
        return "fhir+" + self.url


def _safe(text: str) -> str:
    """The address with anything up to the last `@` after `//` hidden (a password may hold
    any character)."""
    return re.sub(r"//.*@", "//…@", text)


def _port(text: str, address: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ConfigError(f"--notify {address}: port {port} out of range")
    return port
