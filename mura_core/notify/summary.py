"""What telling the worklist did in one run: `NotifySummary`, as `summary.json` keeps it.

Counts, the destination (an address, never a credential) and, per notice not taken, the
study's key in the report (a pseudonym) and why (`NotifyFailure`: an ACK code and its HL7
error code, an HTTP status, `connection refused`; never what the receiver wrote back, which
may quote the study). MLflow gets the counts only (`mura_core.run_contract`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class NotifyFailure:
    """A notice the worklist did not take this run: its study's key and why. It waits in
    the notify outbox, which the next run delivers first."""

    study_key: str
    reason: str


@dataclass(frozen=True)
class NotifySummary:
    """Notices of one run: sent and acknowledged, queued in the outbox, delivered from it."""

    destination: str
    sent: int = 0  # new notices the worklist acknowledged
    queued: int = 0  # new notices it did not take: in the outbox now
    resent: int = 0  # notices of earlier runs delivered from the outbox first
    already_sent: int = 0  # acknowledged by an earlier run (same control ID): not sent again
    pending: int = 0  # notices waiting in the outbox after this run
    failures: tuple[NotifyFailure, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = [asdict(f) for f in self.failures]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotifySummary:
        failures = tuple(NotifyFailure(**f) for f in data.get("failures") or ())
        return cls(**{**data, "failures": failures})
