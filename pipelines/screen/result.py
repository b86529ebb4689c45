"""What `mura screen` returns (`ScreenResult`: OUT, its summary, the MLflow run) and the
one-screen summary printed at its end (`format_result`), also `mura nightly`'s per report.

The recipe, top to bottom: the report's place, model and threshold, the counts and speed,
the flagged studies, what was resumed, the body parts, then what needs the reader's
attention (studies not screened, images without pictures), the write-back, monitoring, the
MLflow run and the re-identification map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mura_core.screen_summary import ScreenCounts, ScreenSummary
from mura_core.shards import REIDENTIFY_FILE


@dataclass(frozen=True)
class ScreenResult:
    out: Path
    summary: ScreenSummary
    run_id: str | None

    @property
    def counts(self) -> ScreenCounts:
        return self.summary.counts


def format_result(result: ScreenResult) -> str:
    """The one-screen summary printed at the end of `mura screen`."""
    s, c, m = result.summary, result.summary.counts, result.summary.model
    lines = [
        f"report: {result.out / 'report.html'}",
        f"model {m.name}"
        + (f" v{m.version}" if m.version else "")
        + f" ({m.model}, {m.size}px), threshold {s.threshold:.3f}, "
        f"{'GPU x' + str(s.gpus) if s.gpus else 'CPU'}",
        f"{c.studies} studies, {c.images} images scored, {c.quarantined} quarantined, "
        f"{s.seconds or 0:.1f}s ({s.images_per_s or 0:.1f} images/s scoring)",
        f"flagged {c.flagged} of {c.studies} studies",
        *(
            [f"{s.resumed} images' scores kept from an interrupted run into this folder"]
            if s.resumed
            else []
        ),
        f"{'body part':<12} {'studies':>8} {'images':>7} {'flagged':>8}",
    ]
    for part, v in s.by_body_part.items():
        lines.append(f"{part:<12} {v.studies:>8} {v.images:>7} {v.flagged:>8}")
    if s.incomplete_studies:
        lines.append(
            f"{len(s.incomplete_studies)} studies not screened: some of their images could not "
            "be retrieved (quarantine: retrieve_failed) or their results built; run again to "
            "screen them"
        )
    if s.picture_failures:
        first = s.picture_failures[0]
        lines.append(
            f"{len(s.picture_failures)} scored images have no pictures (first: "
            f"{first.image_id}: {first.reason})"
        )
    if (wb := s.write_back) is not None:
        lines.append(
            f"written back to {wb.destination}: {wb.studies} studies ({wb.reports} SR, "
            f"{wb.captures} Secondary Captures, {wb.heatmaps} heatmaps, {wb.key_objects} "
            "key-object documents)"
            + (f", {wb.versions} new SR versions" if wb.versions else "")
            + (f", {len(wb.failed)} not stored (in the outbox)" if wb.failed else "")
            + (f", {wb.outbox_delivered} delivered from the outbox" if wb.outbox_delivered else "")
            + (f", {len(wb.not_built)} studies not built" if wb.not_built else "")
        )
    if (told := s.notify) is not None:
        lines.append(
            f"worklist {told.destination}: {told.sent} studies told"
            + (f", {told.queued} waiting in the outbox" if told.queued else "")
            + (f", {told.resent} delivered from the outbox" if told.resent else "")
            + (f", {told.already_sent} told before" if told.already_sent else "")
        )
    if (mon := s.monitoring) is not None:
        lines.append(
            f"ALERT: {mon.alert}"
            if mon.alert
            else "monitoring: in band against the model's reference"
            if mon.reference
            else "monitoring: the model carries no reference (trained before references were "
            "saved): figures logged, no drift measured"
        )
    if result.run_id:
        lines.append(f"MLflow run {result.run_id} (experiment {s.experiment or 'mura-screen'})")
    lines.append(f"re-identification map (not logged): {result.out / REIDENTIFY_FILE}")
    return "\n".join(lines)
