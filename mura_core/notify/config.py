"""What `--notify` and its flags ask for, checked when the flags are read (`NotifyConfig`).

The priority a flagged study is announced with is an HL7 table 0027 code (OBR-5; the FHIR
Bundle carries the same code as a v3 ActPriority tag): `S` (stat, the default), `A`
(ASAP), `T` (timing critical), `C` (callback), `P` (preoperative) or `R` (routine). A study
that is not flagged is always announced as routine (`R`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mura_core.errors import ConfigError
from mura_core.notify.address import MLLP, NotifyAddress

# HL7 v2 table 0027 (Priority) → its meaning; the v3 ActPriority code FHIR uses for it
PRIORITIES = {"S": "stat", "A": "ASAP", "T": "timing critical", "C": "callback", "P": "preop"}
PRIORITIES |= {"R": "routine"}
ACT_PRIORITY = {"S": "S", "A": "A", "T": "T", "C": "CR", "P": "P", "R": "R"}
DEFAULT_PRIORITY = "S"
ROUTINE = "R"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NotifyConfig:
    """`--notify ADDR` with `--notify-token FILE`, `--notify-outbox DIR`,
    `--notify-priority P`. `address` may be given as text: it is parsed here."""

    address: NotifyAddress
    token_file: Path | None = None  # FHIR: a file holding a bearer token (owner-only)
    outbox: Path | None = None  # None: per destination, under the state folder
    priority: str = DEFAULT_PRIORITY  # a flagged study's (HL7 table 0027)
    timeout_s: float = DEFAULT_TIMEOUT_S  # per connection, per answer awaited

    def __post_init__(self) -> None:
        if isinstance(self.address, str):
            object.__setattr__(self, "address", NotifyAddress.parse(self.address))
        if self.priority not in PRIORITIES:
            choices = ", ".join(f"{code} ({name})" for code, name in PRIORITIES.items())
            raise ConfigError(f"--notify-priority {self.priority!r}: one of {choices}")
        if self.token_file is not None and self.address.protocol == MLLP:
            raise ConfigError(
                "--notify-token is for a FHIR server (fhir+https://…); MLLP has no login"
            )
        if not self.timeout_s > 0:
            raise ConfigError(f"notify timeout must be > 0 seconds, got {self.timeout_s}")

    def priority_of(self, flagged: bool) -> str:
        """The HL7 priority a study is announced with: the configured one when flagged."""
        return self.priority if flagged else ROUTINE
