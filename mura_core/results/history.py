"""A study's results in a PACS: our SRs a new version supersedes, and `mura results`' listing.

The recipe, top to bottom:

1. **what is stored** (`stored_results`): the study's instances of our modalities, matched
   by the PACS (`Pacs.find_results`: QIDO-RS or C-FIND at instance level), those that are
   ours (`own_result_kind`) as `StoredResult`s: kind, UIDs, when made (ContentDate and
   ContentTime);
2. **what a new SR supersedes** (`superseded`): the study's newest SR of ours, by when it was
   made, other than the new SR itself (an identical re-run makes the same SR: it supersedes
   nothing, and is not stored again); `earlier_srs` asks for many studies at once;
3. **a study's history** (`study_history`): each of our SRs fetched (WADO-RS or C-GET) and
   read (`read_sr`, `predecessors`), newest first, with the Secondary Captures, heatmaps and
   key-object documents of its version counted — their UIDs recomputed from the study, the
   model and the instance-set digest the SR records (`digest_result_uid`);
4. `format_history`: the lines `mura results` prints.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from mura_core.locations import PacsInstance
from mura_core.pacs.address import PacsError
from mura_core.pacs.client import Pacs
from mura_core.results.content import ResultReadError, SrContent
from mura_core.results.own import own_result_kind
from mura_core.results.sr import predecessors, read_sr
from mura_core.results.uids import digest_result_uid

RESULT_MODALITIES = ("SR", "OT", "SEG", "KO")  # what our results' series are
QUERY_THREADS = 8


@dataclass(frozen=True)
class StoredResult:
    """One of our objects in a PACS: its kind ("sr", "sc", "heatmap", "kos"), where it is,
    and when it was made ("YYYYMMDDHHMMSS.ffffff", sortable; "" when the PACS did not say)."""

    kind: str
    location: PacsInstance
    made: str

    @classmethod
    def of(cls, header: Dataset) -> StoredResult | None:
        """The listed header as one of our results (None: not ours, or not addressable)."""
        kind = own_result_kind(
            header.get("Modality"),
            header.get("SOPClassUID"),
            header.get("SeriesDescription"),
            header.get("Manufacturer"),
        )
        try:
            location = PacsInstance.of(header)
        except (AttributeError, ValueError):
            return None
        made = f"{header.get('ContentDate') or ''}{header.get('ContentTime') or ''}".strip()
        return None if kind is None else cls(kind, location, made)

    def reference(self) -> Dataset:
        """What an SR's Predecessor Documents Sequence needs of it (highdicom's
        `previous_versions`): study, series, SOP class and instance UIDs."""
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.location.study, self.location.series
        ds.SOPClassUID, ds.SOPInstanceUID = self.location.sop_class, self.location.sop
        return ds


def stored_results(
    pacs: Pacs, study_uid: str, modalities: Sequence[str] = RESULT_MODALITIES
) -> list[StoredResult]:
    """Our objects in the study, as the PACS lists them."""
    found = (StoredResult.of(h) for h in pacs.find_results(study_uid, modalities))
    return [result for result in found if result is not None]


def earlier_srs(pacs: Pacs, study_uids: Iterable[str]) -> dict[str, list[StoredResult] | PacsError]:
    """Our SRs in each study, or why the PACS could not be asked (QUERY_THREADS at once)."""

    def ask(uid: str) -> list[StoredResult] | PacsError:
        try:
            return [r for r in stored_results(pacs, uid, ("SR",)) if r.kind == "sr"]
        except PacsError as exc:
            return exc

    studies = list(dict.fromkeys(study_uids))
    with ThreadPoolExecutor(QUERY_THREADS) as pool:
        return dict(zip(studies, pool.map(ask, studies), strict=True))


def _newest_first(results: Iterable[StoredResult]) -> list[StoredResult]:
    return sorted(results, key=lambda r: (r.made, r.location.sop), reverse=True)


def superseded(srs: Iterable[StoredResult], new_sop_uid: str) -> StoredResult | None:
    """The SR a new one supersedes: our newest other SR of the study (None: the first)."""
    others = [r for r in srs if r.kind == "sr" and r.location.sop != new_sop_uid]
    return _newest_first(others)[0] if others else None


@dataclass(frozen=True)
class ResultVersion:
    """One of our SRs of a study, read back, and the objects of its version (None: the SR
    records no instance-set digest, so they cannot be told)."""

    sop_uid: str
    made: str
    content: SrContent
    supersedes: tuple[str, ...]
    captures: int | None
    heatmaps: int | None
    key_objects: int | None


@dataclass(frozen=True)
class StudyHistory:
    """A study's results in a PACS: its versions newest first, the SRs that could not be
    fetched or read (SOP Instance UID, why), and how many of our objects it holds by kind."""

    study_uid: str
    versions: tuple[ResultVersion, ...]
    unread: tuple[tuple[str, str], ...]
    objects: tuple[tuple[str, int], ...]


def _read(pacs: Pacs, sr: StoredResult) -> tuple[Dataset, SrContent] | str:
    """The SR fetched and read, or why not."""
    data = pacs.fetch([sr.location])[sr.location]
    if not isinstance(data, bytes):
        return f"{data.error_type}: {data}"
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        return ds, read_sr(ds)
    except ResultReadError as exc:
        return str(exc)
    except Exception as exc:  # a PACS holds what it was sent: one unreadable SR, not all
        return f"unreadable ({type(exc).__name__})"


def _version(
    sr: StoredResult, ds: Dataset, content: SrContent, stored: list[StoredResult]
) -> ResultVersion:
    digest = content.instance_set_digest
    if digest is None:
        return ResultVersion(sr.location.sop, sr.made, content, predecessors(ds), None, None, None)

    def uid(kind: str, index: int = 0) -> str:
        return digest_result_uid(content.study_uid, digest, content.model.key, kind, index)

    heatmaps = {uid("heatmap", n) for n in range(1, len(content.images) + 1)}
    return ResultVersion(
        sop_uid=sr.location.sop,
        made=sr.made,
        content=content,
        supersedes=predecessors(ds),
        captures=sum(r.kind == "sc" and r.location.series == uid("sc-series") for r in stored),
        heatmaps=sum(r.kind == "heatmap" and r.location.sop in heatmaps for r in stored),
        key_objects=sum(r.kind == "kos" and r.location.sop == uid("kos") for r in stored),
    )


def study_history(pacs: Pacs, study_uid: str) -> StudyHistory:
    """The study's results in the PACS, newest first (see the module docstring)."""
    stored = stored_results(pacs, study_uid)
    versions, unread = [], []
    for sr in _newest_first(r for r in stored if r.kind == "sr"):
        read = _read(pacs, sr)
        if isinstance(read, str):
            unread.append((sr.location.sop, read))
        else:
            versions.append(_version(sr, *read, stored))
    kinds = ("sr", "sc", "heatmap", "kos")
    counts = tuple((kind, sum(r.kind == kind for r in stored)) for kind in kinds)
    return StudyHistory(study_uid, tuple(versions), tuple(unread), counts)


def _when(made: str) -> str:
    if len(made) < 12:
        return made or "unknown"
    return f"{made[:4]}-{made[4:6]}-{made[6:8]} {made[8:10]}:{made[10:12]}:{made[12:14]}"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def format_history(history: StudyHistory) -> str:
    """What `mura results` prints: one block per version, newest first."""
    n = len(history.versions)
    held = ", ".join(f"{count} {kind.upper()}" for kind, count in history.objects)
    lines = [f"study {history.study_uid}: {n} result version(s), newest first ({held})"]
    for number, version in enumerate(history.versions, 1):
        c, model = version.content, version.content.model
        finding = "ABNORMAL (flagged)" if c.flagged else "normal"
        lines += [
            f"{number}. {_when(version.made)}  {model.name} {model.software_version}  "
            f"{finding}  p = {c.probability:.3f} (threshold {c.threshold:.3f}), "
            f"{len(c.images)} images",
            f"   SR {version.sop_uid}",
            f"   supersedes {', '.join(version.supersedes) or 'nothing (first)'}",
            f"   objects: {_count(version.captures)} Secondary Captures, "
            f"{_count(version.heatmaps)} heatmaps, {_count(version.key_objects)} key-object "
            "documents",
        ]
    lines += [f"SR {uid}: not read ({why})" for uid, why in history.unread]
    if not history.versions and not history.unread:
        lines.append("no mura-screen results in this study")
    return "\n".join(lines)
