"""`--notify`: notices sent to real receivers on 127.0.0.1 — hl7apy's MLLPServer answering ACK
or NACK, an http.server over TLS answering 201 or 500 — and what they do not take waits in
the outbox, delivered once by the next run. No Ray: the notifier is the one a screening
run opens (`open_notifier`), fed notices directly."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7apy.parser import parse_message

from mura_core.errors import ConfigError
from mura_core.notify.config import NotifyConfig
from mura_core.notify.fhir import read_bundle
from mura_core.notify.notice import Notice
from mura_core.outputs import locked
from mura_core.results import ModelIdentity
from pipelines.results.notify import SENT_LOG, NoticeOutbox, open_notifier
from pipelines.results.writeback import Outbox
from tests.pipelines.worklist import FHIR_TOKEN as TOKEN
from tests.pipelines.worklist import FhirReceiver, MllpReceiver, free_port, self_signed

MODEL = ModelIdentity(name="mura-cnn", version="3", uri="models:/mura-cnn/3")


def _notices(n: int = 3) -> list[Notice]:
    return [
        Notice(
            study_uid=f"1.2.840.99.{i}",
            accession_number=f"ACC-{i:04d}",
            study_key=f"st-{i:04x}",
            body_part="XR_WRIST",
            probability=0.2 + 0.25 * i,
            threshold=0.5,
            flagged=0.2 + 0.25 * i > 0.5,
            model=MODEL,
            screened_at="2026-12-08T21:30:05+00:00",
            instance_set=f"{i:064x}",
        )
        for i in range(n)
    ]


@pytest.fixture
def receiver() -> Iterator[MllpReceiver]:
    server = MllpReceiver()
    yield server
    server.close()


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_orus_reach_a_real_mllp_server_once(receiver: MllpReceiver, tmp_path: Path) -> None:
    notices = _notices()
    cfg = NotifyConfig(receiver.address, outbox=tmp_path / "outbox")
    summary = open_notifier(cfg).notify(notices)
    assert (summary.sent, summary.queued, summary.pending, summary.failures) == (3, 0, 0, ())
    assert summary.destination == receiver.address
    got = {}
    for text in receiver.received.messages:
        message = parse_message(text)
        assert message.validate()
        order = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
        got[message.msh.msh_10.to_er7()] = (order.obr.obr_3.to_er7(), order.obr.obr_5.to_er7())
    assert got == {n.control_id: (n.accession_number, "S" if n.flagged else "R") for n in notices}
    # the next run screens the same studies again (same results): nothing is sent twice
    again = open_notifier(cfg).notify(notices)
    assert (again.sent, again.already_sent) == (0, 3)
    assert len(receiver.received.messages) == 3
    assert _private(tmp_path / "outbox" / SENT_LOG)


def test_a_nack_waits_in_the_outbox_and_the_next_run_delivers_it_once(
    receiver: MllpReceiver, tmp_path: Path
) -> None:
    notices = _notices()
    nacked = notices[1].control_id
    receiver.received.refuse = {nacked}
    cfg = NotifyConfig(receiver.address, outbox=tmp_path / "outbox", priority="A")
    first = open_notifier(cfg).notify(notices)
    assert (first.sent, first.queued, first.pending) == (2, 1, 1)
    (failure,) = first.failures
    assert failure.study_key == notices[1].study_key
    assert failure.reason == "AE: refused (application error), HL7 error 207"
    outbox = NoticeOutbox(tmp_path / "outbox")
    (item,) = outbox.items()
    assert _private(outbox.folder) and _private(item.folder)
    assert all(_private(p) for p in item.folder.iterdir())
    assert "ACC-0001" not in json.dumps(first.to_json())  # the summary names pseudonyms only

    receiver.received.refuse = set()  # the RIS is fixed
    later = [*notices, *_notices(4)[3:]]  # the next run: the same studies and a new one
    second = open_notifier(cfg).notify(later)
    assert (second.resent, second.sent, second.already_sent, second.pending) == (1, 1, 3, 0)
    assert receiver.received.accepted == {n.control_id: 1 for n in later}
    assert receiver.controls().count(nacked) == 2  # refused once, taken once
    third = open_notifier(cfg).notify(later)
    assert (third.sent, third.resent, third.already_sent) == (0, 0, 4)
    assert len(receiver.received.messages) == 5


def test_a_dead_receiver_costs_one_try_and_the_next_run_delivers_everything_once(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    notices = _notices()
    cfg = NotifyConfig(f"mllp://127.0.0.1:{port}", outbox=tmp_path / "outbox", timeout_s=2)
    down = open_notifier(cfg).notify(notices)
    assert (down.sent, down.queued, down.pending) == (0, 3, 3)
    reasons = [f.reason for f in down.failures]
    assert reasons[0] == "cannot connect: connection refused"
    assert reasons[1:] == ["not tried: cannot connect: connection refused"] * 2

    receiver = MllpReceiver(port)  # the RIS is back, where it was
    try:
        up = open_notifier(cfg).notify(notices)
        assert (up.resent, up.sent, up.already_sent, up.pending) == (3, 0, 3, 0)
        assert receiver.received.accepted == {n.control_id: 1 for n in notices}
        assert len(receiver.received.messages) == 3
        # what was sent is byte for byte what was built the first time
        first = receiver.received.messages[0]
        assert parse_message(first).msh.msh_7.to_er7() == "20261208213005+0000"
    finally:
        receiver.close()


def test_fhir_bundles_go_with_the_token_and_a_500_is_resent_once(
    fhir_tls: FhirReceiver,
    token_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    notices = _notices(2)
    cfg = NotifyConfig(fhir_tls.address, token_file=token_file, outbox=tmp_path / "outbox")
    assert TOKEN not in repr(open_notifier(cfg).sender.session.auth)
    fhir_tls.status = 500
    first = open_notifier(cfg).notify(notices)
    assert (first.sent, first.queued, first.pending) == (0, 2, 2)
    assert [f.reason for f in first.failures] == ["HTTP 500"] * 2

    fhir_tls.status = 200
    second = open_notifier(cfg).notify(notices)
    assert (second.resent, second.already_sent, second.pending) == (2, 2, 0)
    assert len(fhir_tls.posts) == 4  # 2 answered 500, then each once more
    for post in fhir_tls.posts:
        assert post.path == "/fhir" and post.authorization == f"Bearer {TOKEN}"
        bundle = read_bundle(post.body)  # validates (R4B models)
        report = bundle.entry[2].resource
        assert report.status == "preliminary"
    controls = [read_bundle(p.body).identifier.value for p in fhir_tls.posts[2:]]
    assert sorted(controls) == sorted(n.control_id for n in notices)
    # the token went in the Authorization header, and nowhere else
    written = [p.read_bytes() for p in (tmp_path / "outbox").rglob("*") if p.is_file()]
    seen = [*written, json.dumps(second.to_json()).encode(), json.dumps(first.to_json()).encode()]
    out, err = capsys.readouterr()
    seen += [out.encode(), err.encode(), caplog.text.encode()]
    assert not any(TOKEN.encode() in blob for blob in seen)


def test_an_untrusted_certificate_is_not_talked_to(tmp_path: Path, token_file: Path) -> None:
    pytest.importorskip("cryptography")
    server = FhirReceiver(tls=self_signed(tmp_path))  # not in REQUESTS_CA_BUNDLE
    try:
        cfg = NotifyConfig(server.address, token_file=token_file, outbox=tmp_path / "outbox")
        summary = open_notifier(cfg).notify(_notices(1))
        assert summary.queued == 1 and "certificate" in summary.failures[0].reason
        assert server.posts == []
    finally:
        server.close()


def test_checks_before_any_work(tmp_path: Path, token_file: Path) -> None:
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        open_notifier(NotifyConfig("fhir+https://fhir.example.org/r4", token_file=token_file))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="choose another --notify-outbox"):
        open_notifier(NotifyConfig("mllp://127.0.0.1:2575", outbox=mine))
    # the write-back's outbox is not the notices' (its marker and items are another kind)
    results = Outbox(tmp_path / "results")
    results.put_item("st-1", [("x.dcm", b"")], "{}")
    with pytest.raises(ConfigError, match="holds what mura did not put there: .mura-outbox"):
        open_notifier(NotifyConfig("mllp://127.0.0.1:2575", outbox=results.folder))
    assert (mine / "notes.txt").read_text() == "mine" and results.pending() == 1
    # a run with nothing to tell writes nothing
    empty = tmp_path / "new"
    summary = open_notifier(NotifyConfig("mllp://127.0.0.1:2575", outbox=empty)).notify([])
    assert summary.sent == 0 and not empty.exists()


def test_a_second_run_on_a_locked_outbox_queues_instead_of_sending(
    receiver: MllpReceiver, tmp_path: Path
) -> None:
    cfg = NotifyConfig(receiver.address, outbox=tmp_path / "outbox")
    notifier = open_notifier(cfg)
    notifier.outbox.ensure()
    with locked(notifier.outbox.folder, "test"):
        summary = notifier.notify(_notices(2))
    assert (summary.sent, summary.queued) == (0, 2)
    assert receiver.received.messages == []
    later = open_notifier(cfg).notify([])  # the next run
    assert (later.resent, later.pending) == (2, 0) and len(receiver.received.messages) == 2
