"""The screening report: one self-contained HTML page a radiologist can open, print or mail.

The recipe: a run's summary (a `mura_core.screen_summary.ScreenSummary`, whose module also
reads and writes `summary.json`) and its studies (`ReportStudy`, the first flagged ones with
their `ReportImage` pictures: `thumbnail_png` and CAM overlays, PNG bytes) → `render_html`
(monitoring banner, header, per body part, flagged, not flagged, write-back, quarantine) →
`write_html`, atomically.

Everything is inline (CSS, images as base64 PNG data URIs, no JavaScript), so the file
works offline and leaks no request to any server. Flagged studies come first, most
suspicious on top, each with its thumbnails and class-activation-map overlays.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from mura_core.notify.summary import NotifySummary
from mura_core.outputs import write_text_atomic
from mura_core.records import QuarantineRow
from mura_core.screen_summary import (
    MonitoringSummary,
    PartCounts,
    PictureFailure,
    ScreenSummary,
    WriteBackSummary,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUARANTINE_ROWS = 50


@dataclass(frozen=True)
class ReportImage:
    """One scored image with its pictures (PNG bytes)."""

    image_id: str
    view: str | None
    prob: float
    thumbnail: bytes
    cam: bytes | None


@dataclass(frozen=True)
class ReportStudy:
    """One study's aggregate score; `pictures` only for the first flagged studies."""

    study_key: str
    patient_key: str
    body_part: str
    images: int
    mean_prob: float
    max_prob: float
    flagged: bool
    label: int | None
    pictures: tuple[ReportImage, ...] = ()


def thumbnail_png(pixels: np.ndarray, size: int = 160) -> bytes:
    """Grayscale (H, W) → PNG bytes with the longest side `size`: small enough to inline."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"thumbnail_png wants 2-D uint8, got {pixels.dtype} {pixels.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    image = Image.fromarray(np.ascontiguousarray(pixels))
    height, width = pixels.shape
    scale = size / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    buffer = io.BytesIO()
    image.resize(target, resample).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render_html(summary: ScreenSummary, studies: Sequence[ReportStudy]) -> str:
    """The whole page as one string."""
    title = summary.title or "MURA screening report"
    flagged = sorted((s for s in studies if s.flagged), key=_by_probability)
    unflagged = sorted((s for s in studies if not s.flagged), key=_by_probability)
    body = "\n".join(
        [
            _monitoring_banner(summary.monitoring),
            _header(title, summary),
            _incomplete_note(summary.incomplete_studies),
            _body_part_table(summary.by_body_part),
            _flagged_section(flagged, summary.pictures_limit_note, summary.picture_failures),
            _unflagged_section(unflagged),
            _write_back_section(summary.write_back),
            _notify_section(summary.notify),
            _quarantine_section(summary.quarantine, summary.counts.quarantined),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_html(path: Path, summary: ScreenSummary, studies: Sequence[ReportStudy]) -> Path:
    """Render and write atomically (tmp + rename): a reader never sees half a page; an
    OSError (a full disk) is one line naming `path`, and no temporary file is left."""
    return write_text_atomic(Path(path), render_html(summary, studies))


def _by_probability(study: ReportStudy) -> tuple[float, float, str]:
    return (-study.mean_prob, -study.max_prob, study.study_key)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _code(value: Any) -> str:
    return f"<code>{_e(value)}</code>"


def _p(value: float) -> str:
    return f"{value:.3f}"


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _label(label: int | None) -> str:
    return {None: "unknown", 0: "normal", 1: "abnormal"}.get(label, str(label))


def _data_uri(png: bytes) -> str:
    """Inline a PNG; refuse anything else so the src never lies about its type."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("report pictures must be PNG bytes")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _grid(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """A plain table; `numeric` columns are right-aligned. Cells arrive already escaped."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f"<{tag}{' class=num' if i in numeric else ''}>{v}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return (
        f"<table class=grid><thead><tr>{cells('th', head)}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _header(title: str, summary: ScreenSummary) -> str:
    model, source, counts = summary.model, summary.source, summary.counts
    version = f" v{model.version}" if model.version else ""
    arch = ", ".join(x for x in (model.model, model.size and f"{model.size} px") if x)
    model_html = f"<b>{_e(model.name or model.model or 'model')}{_e(version)}</b>"
    model_html += f" <code>{_e(model.uri)}</code>" if model.uri else ""
    model_html += f" <span class=muted>({_e(arch)})</span>" if arch else ""
    facts = [
        ("Model", model_html),
        ("Threshold", f"<b>{_e(summary.threshold)}</b> on the study mean probability"),
        ("Screened", _e(summary.screened_at)),
        ("Source", f"{_e(source.kind)} archive, digest <code>{_e(source.digest)}</code>"),
        *(("", f"<span class=muted>{_e(note)}</span>") for note in summary.source_notes),
    ]
    if summary.seconds is not None:
        rate = summary.images_per_s
        speed = f" ({rate:.1f} images/s)" if rate is not None else ""
        facts.append(("Run time", f"{summary.seconds:.1f} s{speed}"))
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    tiles = "".join(
        f'<div class="tile{cls}"><span>{_n(value)}</span>{label}</div>'
        for value, label, cls in (
            (counts.studies, "studies", ""),
            (counts.images, "images", ""),
            (counts.flagged, "flagged studies", " alert"),
            (counts.quarantined, "quarantined inputs", ""),
        )
    )
    return (
        f"<header><h1>{_e(title)}</h1><table class=facts>{rows}</table>"
        f'<div class="tiles">{tiles}</div>'
        '<p class="muted">Decision support only: every study needs a radiologist\'s read.</p>'
        "</header>"
    )


def _monitoring_banner(monitoring: MonitoringSummary | None) -> str:
    """A banner above everything when the run is out of band (`mura.alert`)."""
    if monitoring is None or not monitoring.alerts:
        return ""
    reasons = "".join(f"<li>{_e(reason)}</li>" for reason in monitoring.alerts)
    return (
        '<section class="banner" role="alert"><b>Monitoring alert: this night is unlike what '
        "the model was validated on.</b> Check the X-ray units and the model before trusting "
        f"its flags.<ul>{reasons}</ul></section>"
    )


def _body_part_table(by_part: dict[str, PartCounts]) -> str:
    if not by_part:
        return ""
    total = PartCounts(
        studies=sum(c.studies for c in by_part.values()),
        images=sum(c.images for c in by_part.values()),
        flagged=sum(c.flagged for c in by_part.values()),
    )
    rows = []
    for name, c in [*sorted(by_part.items()), ("total", total)]:
        share = f"{100 * c.flagged / c.studies:.1f} %" if c.studies else "—"
        rows.append([_e(name), f"{c.studies:,}", f"{c.images:,}", f"{c.flagged:,}", share])
    head = ["body part", "studies", "images", "flagged", "flagged %"]
    table = _grid(head, rows, {1, 2, 3, 4})
    return f"<section class=parts><h2>By body part</h2>{table}</section>"


def _flagged_section(
    flagged: list[ReportStudy], note: Any, failures: Sequence[PictureFailure] = ()
) -> str:
    intro = (
        "<p class=muted>Most suspicious first. Each picture pair shows the image and its "
        "class-activation-map overlay: where the model looked when it scored the image "
        "(red = more weight, blue = little).</p>"
    )
    if note:
        intro += f'<p class="note">{_e(note)}</p>'
    if failures:
        rows = [
            [_code(f.study_key), _code(f.image_id), _e(f.error_type), _e(f.reason)]
            for f in failures
        ]
        intro += (
            f'<p class="note">{len(failures)} scored images have no pictures: they could not '
            "be made.</p>" + _grid(["study", "image", "error", "reason"], rows, set())
        )
    cards = "\n".join(_card(s) for s in flagged) or "<p>No study reached the threshold.</p>"
    return f"<section><h2>Flagged studies ({len(flagged):,})</h2>{intro}\n{cards}</section>"


def _card(study: ReportStudy) -> str:
    facts = [
        ("patient", _code(study.patient_key)),
        ("body part", _e(study.body_part)),
        ("images", f"{study.images:,}"),
        ("mean p", f"<b>{_p(study.mean_prob)}</b>"),
        ("max p", _p(study.max_prob)),
    ]
    if study.label is not None:
        facts.append(("ground truth", _e(_label(study.label))))
    facts_html = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    pictures = "".join(_picture(p) for p in study.pictures)
    return (
        f'<article class="card"><h3>{_code(study.study_key)}'
        f'<span class="badge">flagged · {_p(study.mean_prob)}</span></h3>'
        f"<dl>{facts_html}</dl>"
        + (f'<div class="pics">{pictures}</div>' if pictures else "")
        + "</article>"
    )


def _picture(image: ReportImage) -> str:
    what = f"{image.view} · " if image.view else ""
    alt = _e(f"{what}{image.image_id}")
    cam = (
        f'<img src="{_data_uri(image.cam)}" alt="CAM overlay {alt}">'
        if image.cam is not None
        else '<div class="nocam">no CAM</div>'
    )
    return (
        f'<figure><div class="pair"><img src="{_data_uri(image.thumbnail)}" alt="{alt}">{cam}'
        f"</div><figcaption><b>p = {_p(image.prob)}</b> · {_e(what)}"
        f"<code>{_e(image.image_id)}</code></figcaption></figure>"
    )


def _unflagged_section(unflagged: list[ReportStudy]) -> str:
    if not unflagged:
        return "<section><h2>Not flagged (0)</h2><p>No study below the threshold.</p></section>"
    truth = any(s.label is not None for s in unflagged)
    head = ["study", "patient", "body part", "images", "mean p", "max p"]
    rows = [
        [_code(s.study_key), _code(s.patient_key), _e(s.body_part), f"{s.images:,}"]
        + [_p(s.mean_prob), _p(s.max_prob)]
        + ([_e(_label(s.label))] if truth else [])
        for s in unflagged
    ]
    table = _grid(head + (["ground truth"] if truth else []), rows, {3, 4, 5})
    return f"<section><h2>Not flagged ({len(unflagged):,})</h2>{table}</section>"


def _incomplete_note(keys: Sequence[str]) -> str:
    if not keys:
        return ""
    return (
        f'<p class="note">{len(keys)} studies were not screened: some of their images could '
        "not be retrieved from the PACS (quarantine: <code>retrieve_failed</code>), or their "
        "results for the PACS could not be built (below); the next run screens them. "
        f"{', '.join(_code(k) for k in keys[:20])}" + (" …" if len(keys) > 20 else "") + "</p>"
    )


def _write_back_section(wb: WriteBackSummary | None) -> str:
    """Where the DICOM results went, and every study whose results wait in the outbox."""
    if wb is None:
        return ""
    text = (
        f"<p>{_n(wb.studies)} studies written back to <code>{_e(wb.destination)}</code>: "
        f"{_n(wb.reports)} structured reports (TID 1500), {_n(wb.captures)} Secondary "
        f"Captures (flagged studies, Grad-CAM burned in), {_n(wb.heatmaps)} heatmaps "
        f"(Segmentations over their images) and {_n(wb.key_objects)} key-object documents."
    )
    if wb.versions:
        text += f" {_n(wb.versions)} reports supersede an earlier one of their study."
    if wb.outbox_delivered:
        text += f" {_n(wb.outbox_delivered)} objects from earlier runs delivered first."
    text += "</p>"
    if wb.failed:
        text += _studies_with_reasons(
            f"{len(wb.failed)} studies could not be stored; their objects wait in the "
            f"outbox ({_n(wb.outbox_pending)} objects) for the next run.",
            wb.failed,
        )
    if wb.not_built:
        text += _studies_with_reasons(
            f"{len(wb.not_built)} studies' results could not be built (a flagged study's "
            "picture failed, or the PACS did not say which SR they supersede): they are not "
            "screened this run, and the next run screens them again.",
            wb.not_built,
        )
    return f"<section><h2>Results in the PACS</h2>{text}</section>"


def _notify_section(told: NotifySummary | None) -> str:
    """What the worklist was told: counts, and each study whose notice waits in the outbox."""
    if told is None:
        return ""
    text = (
        f"<p>{_n(told.sent)} studies' findings sent to <code>{_e(told.destination)}</code> "
        "and acknowledged (preliminary results: HL7 ORU^R01 or a FHIR DiagnosticReport)."
    )
    if told.resent:
        text += f" {_n(told.resent)} notices from earlier runs delivered first."
    if told.already_sent:
        text += f" {_n(told.already_sent)} studies had been told before: not sent again."
    text += "</p>"
    if told.failures:
        text += _studies_with_reasons(
            f"{len(told.failures)} notices were not taken; they wait in the outbox "
            f"({_n(told.pending)} notices) for the next run.",
            told.failures,
        )
    return f"<section><h2>Worklist notices</h2>{text}</section>"


class _StudyReason(Protocol):
    study_key: str
    reason: str


def _studies_with_reasons(note: str, studies: Sequence[_StudyReason]) -> str:
    """A note (our own HTML), then a table of each study and why."""
    rows = [[_code(f.study_key), _e(f.reason)] for f in studies]
    return f'<p class="note">{note}</p>' + _grid(["study", "reason"], rows, set())


def _quarantine_section(rows: Sequence[QuarantineRow], total: int) -> str:
    """The first QUARANTINE_ROWS rows; the rest of `total` (the summary carries only the
    first rows of a long quarantine) as a count."""
    total = max(total, len(rows))
    if not total:
        return "<section><h2>Quarantine (0)</h2><p>Every input was scored.</p></section>"
    shown = [[_code(r.path), _e(r.error_type), _e(r.reason)] for r in rows[:QUARANTINE_ROWS]]
    more = total - len(shown)
    tail = f"<p class=muted>and {more:,} more</p>" if more > 0 else ""
    return (
        f"<section><h2>Quarantine ({total:,})</h2><p class=muted>Inputs that could not "
        "be scored, so no study above includes them.</p>"
        f"{_grid(['input', 'error', 'reason'], shown, set())}{tail}</section>"
    )


CSS = """
:root{--ink:#1d232a;--muted:#5b6570;--line:#d7dce1;--soft:#f4f6f8;--alert:#b42318;
--alert-soft:#fdf0ef}*{box-sizing:border-box}body{margin:0;background:#fff;color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1080px;margin:0 auto;padding:24px 28px 48px}h1{font-size:26px;margin:0 0 12px}
h2{font-size:19px;margin:32px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--ink)}
h3{font-size:15px;margin:0 0 8px;display:flex;justify-content:space-between;gap:12px;
align-items:baseline;flex-wrap:wrap}
code{font:13px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.banner{background:var(--alert);color:#fff;border-radius:6px;padding:12px 16px;margin:0 0 16px}
.banner ul{margin:6px 0 0;padding-left:20px}
.note{border-left:4px solid var(--alert);background:var(--alert-soft);padding:6px 10px}
table{border-collapse:collapse}.facts th{text-align:left;font-weight:600;padding:2px 16px 2px 0;
vertical-align:top;color:var(--muted)}.facts td{padding:2px 0}.grid{width:100%;margin-top:8px}
.grid th,.grid td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left}
.grid thead th{background:var(--soft);font-weight:600;border-bottom:1px solid #b9c0c7}
.grid .num{text-align:right;font-variant-numeric:tabular-nums}
.parts tbody tr:last-child td{border-top:2px solid #b9c0c7;font-weight:600}
.tiles{display:flex;gap:12px;margin:16px 0 8px;flex-wrap:wrap}.tile{flex:1 1 150px;
border:1px solid var(--line);border-radius:6px;padding:8px 12px;color:var(--muted)}
.tile span{display:block;font-size:24px;font-weight:700;color:var(--ink)}
.tile.alert{border-color:var(--alert);background:var(--alert-soft)}
.tile.alert span{color:var(--alert)}.card{border:1px solid var(--line);
border-left:5px solid var(--alert);border-radius:6px;padding:12px 16px;margin:12px 0;
break-inside:avoid}.badge{font-size:13px;font-weight:700;color:#fff;background:var(--alert);
border-radius:4px;padding:2px 8px;white-space:nowrap}
dl{display:flex;flex-wrap:wrap;gap:4px 24px;margin:0 0 8px}dl div{display:flex;gap:6px}
dt{color:var(--muted)}dd{margin:0}
.pics{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;padding:6px;background:var(--soft);border-radius:4px}.pair{display:flex;gap:4px}
.pair img,.nocam{width:150px;height:190px;object-fit:contain;display:block;background:#000}
.nocam{color:#bbb;display:flex;align-items:center;justify-content:center;font-size:13px}
figcaption{font-size:13px;margin-top:4px;max-width:304px}h3 code{font-size:15px;font-weight:700}
@media print{main{max-width:none;padding:0}h2{break-after:avoid}
.badge,.banner,.tile.alert,.note,.card{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""
