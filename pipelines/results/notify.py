"""`--notify`: each screened study's finding told to the worklist, once, surviving its outages.

The recipe, top to bottom:

1. **before any work** (`open_notifier`, from the screening's preflight): the address was
   parsed with the flags (`mura_core.notify.config`); the bearer token file (FHIR,
   `--notify-token`) is read, and must be the owner's only; the outbox is checked (ours or
   new, writable) — a problem is one line and nothing has run yet. The receiver need not
   be up: what it does not take waits.
2. **after the results** (`Notifier.notify(notices)`, holding the outbox's lock): first
   the outbox, notices earlier runs could not deliver, each sent again as it was stored
   (the same bytes, the same control ID); then the new notices, each built (HL7 ORU^R01 or
   FHIR Bundle) and sent, waiting for the ACK (or the HTTP answer). A notice not taken
   (NACK `AE`/`AR`, HTTP error, no connection) goes to the outbox; once the destination
   cannot be reached, the rest go there without being tried.
3. **never twice**: the outbox remembers every control ID the destination acknowledged
   (`sent.log`, IDs only); a notice whose ID is there is not sent again (a re-run, or a
   nightly that screens a study again because its write-back failed), and one whose ID
   waits in the outbox is not sent beside it. A delivered notice leaves the outbox at once.
   Only a crash between the ACK and that record can repeat one, with the same control ID.
   A second run that finds the outbox locked delivers nothing and queues its notices.

The outbox (owner-only: it holds accession numbers and study UIDs) is one per destination:
`--notify-outbox DIR`, default `~/.local/state/mura/notify/<hash of the address>` (or
`$MURA_NOTIFY_OUTBOX/<hash>`), `STATE/notify` for nightly. Its marker is
`.mura-notify-outbox`; a folder holding anything else is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from mura_core.errors import ConfigError, MuraError
from mura_core.notify.address import MLLP, NotifyAddress
from mura_core.notify.config import NotifyConfig
from mura_core.notify.fhir import build_bundle
from mura_core.notify.hl7 import build_oru
from mura_core.notify.notice import Notice, notices_from_findings
from mura_core.notify.summary import NotifyFailure, NotifySummary
from mura_core.outputs import LOCK_FILE, check_writable, locked
from mura_core.pacs.address import private_text
from pipelines.results.findings import model_identity, study_findings
from pipelines.results.outbox import MarkedOutbox, OutboxItem
from pipelines.results.senders import Outcome, Sender, sender_for
from pipelines.runtime.console import console
from pipelines.screen.inputs import ScreenInput
from pipelines.screen.models import ScreeningModel

NOTIFY_OUTBOX_ENV = "MURA_NOTIFY_OUTBOX"
SENT_LOG = "sent.log"


class _Busy(MuraError):
    """Another run holds the outbox's lock."""


def default_outbox(address: NotifyAddress) -> Path:
    """Per destination, under $MURA_NOTIFY_OUTBOX or ~/.local/state/mura/notify."""
    root = Path(os.environ.get(NOTIFY_OUTBOX_ENV) or "~/.local/state/mura/notify").expanduser()
    return root / hashlib.sha256(str(address).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Waiting:
    """An outbox item's meta file: which notice, for which study (its pseudonym), since when."""

    control_id: str
    study_key: str
    queued_at: str


class NoticeOutbox(MarkedOutbox):
    """Notices waiting for the worklist: per notice, its message as it was built and
    `notice.json`; beside them `sent.log`, the control IDs the destination took."""

    MARKER = ".mura-notify-outbox"
    MARKER_TEXT = "mura notify outbox: notices waiting for a worklist\n"
    META = "notice.json"
    OWN_NAMES = frozenset({SENT_LOG, LOCK_FILE})
    FLAG = "--notify-outbox"

    def put(self, notice: Notice, payload: bytes) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        meta = Waiting(notice.control_id, notice.study_key, now)
        self.put_item(notice.control_id, [("message", payload)], json.dumps(asdict(meta)))

    @staticmethod
    def waiting(item: OutboxItem) -> tuple[Waiting, bytes]:
        return Waiting(**json.loads(item.meta)), (item.folder / "message").read_bytes()

    def sent(self) -> set[str]:
        path = self.folder / SENT_LOG
        return set(path.read_text().split()) if path.is_file() else set()

    def record_sent(self, control: str) -> None:
        self.ensure()
        fd = os.open(self.folder / SENT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(control + "\n")


@dataclass
class _Tally:
    """What one `notify` did so far (mutable while it runs; summarized at the end)."""

    sent: int = 0
    queued: int = 0
    resent: int = 0
    already_sent: int = 0
    failures: list[NotifyFailure] = field(default_factory=list)
    down: str | None = None  # why the destination cannot be reached (then nothing is tried)


class Notifier:
    """Tells one destination; see the module docstring."""

    def __init__(self, cfg: NotifyConfig, sender: Sender, outbox: NoticeOutbox) -> None:
        self.cfg = cfg
        self.sender = sender
        self.outbox = outbox

    @property
    def destination(self) -> str:
        return str(self.cfg.address)

    def message(self, notice: Notice) -> bytes:
        """The notice as it is sent: an ORU^R01 (MLLP) or a transaction Bundle (FHIR)."""
        priority = self.cfg.priority_of(notice.flagged)
        if self.cfg.address.protocol == MLLP:
            return build_oru(notice, priority).encode("utf-8")
        return build_bundle(notice, priority).encode("utf-8")

    def notify(self, notices: Sequence[Notice]) -> NotifySummary:
        """The outbox first, then `notices`; what is not taken waits in the outbox."""
        if not notices and not self.outbox.folder.is_dir():
            return NotifySummary(self.destination)
        self.outbox.ensure()
        tally = _Tally()
        try:
            with locked(self.outbox.folder, "mura run telling this worklist", _Busy):
                self._deliver(tally)
                self._send(notices, tally)
        except _Busy:
            for notice in notices:  # the other run delivers them, or the next one
                self._queue(notice, "another run is delivering this outbox", tally)
        return NotifySummary(
            destination=self.destination,
            sent=tally.sent,
            queued=tally.queued,
            resent=tally.resent,
            already_sent=tally.already_sent,
            pending=len(self.outbox.items()),
            failures=tuple(tally.failures),
        )

    def _try(self, control: str, payload: bytes, tally: _Tally) -> Outcome:
        """Send unless the destination was found down; an ACK is recorded at once."""
        if tally.down is not None:
            return Outcome(False, f"not tried: {tally.down}", False)
        outcome = self.sender.send(control, payload)
        if outcome.taken:
            self.outbox.record_sent(control)
        elif not outcome.reachable:
            tally.down = outcome.reason
        return outcome

    def _deliver(self, tally: _Tally) -> None:
        """What earlier runs left, sent again as stored; a taken one leaves the outbox."""
        sent = self.outbox.sent()

        def resend(item: OutboxItem) -> str | None:
            waiting, payload = self.outbox.waiting(item)
            if waiting.control_id in sent:  # taken, then the run died before removing it
                return waiting.control_id
            taken = self._try(waiting.control_id, payload, tally).taken
            return waiting.control_id if taken else None

        tally.resent += len(self.outbox.deliver_items(resend))

    def _send(self, notices: Sequence[Notice], tally: _Tally) -> None:
        """This run's notices: not those taken before, nor beside a copy that waits."""
        if not notices:
            return
        sent = self.outbox.sent()
        bar = console.progress("notify", len(notices), "studies")
        for notice in notices:
            control = notice.control_id
            if control in sent:
                tally.already_sent += 1
            elif self.outbox.has(control):
                tally.queued += 1
                tally.failures.append(
                    NotifyFailure(notice.study_key, "an earlier copy waits in the outbox")
                )
            else:
                payload = self.message(notice)
                outcome = self._try(control, payload, tally)
                if outcome.taken:
                    tally.sent += 1
                    sent.add(control)
                else:
                    self._queue(notice, outcome.reason, tally, payload)
            bar.advance(1)
        bar.close()

    def _queue(self, notice: Notice, why: str, tally: _Tally, payload: bytes | None = None) -> None:
        self.outbox.put(notice, payload if payload is not None else self.message(notice))
        tally.queued += 1
        tally.failures.append(NotifyFailure(notice.study_key, why))


def screened_notices(
    inp: ScreenInput, studies: pa.Table, images: pa.Table, model: ScreeningModel, screened_at: str
) -> list[Notice]:
    """A notice per screened study of a PACS source (its listed headers give the UIDs and
    accession numbers), the model named as the results written back name it."""
    findings = study_findings(inp, studies, images)
    parts = dict(
        zip(studies["study_key"].to_pylist(), studies["body_part"].to_pylist(), strict=True)
    )
    return notices_from_findings(findings, parts, model_identity(model), screened_at)


def open_notifier(cfg: NotifyConfig) -> Notifier:
    """Every check before any work: the token file (owner-only), the outbox (ours or new,
    writable). Writes nothing; the destination need not be up."""
    token = private_text(cfg.token_file, "--notify-token") if cfg.token_file else None
    outbox = NoticeOutbox(cfg.outbox or default_outbox(cfg.address)).check()
    check_writable(outbox.folder, ConfigError)
    return Notifier(cfg, sender_for(cfg.address, token, cfg.timeout_s), outbox)
