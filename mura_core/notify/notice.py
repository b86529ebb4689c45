"""What the worklist is told about one screened study: a `Notice`, the facts both messages
(HL7 ORU^R01, FHIR DiagnosticReport) are made of.

The recipe: a screening run's findings (`mura_core.results.StudyFinding`, made from a PACS
listing's headers, with the study's real StudyInstanceUID) become notices
(`notices_from_findings`): the study's UID and AccessionNumber (how a RIS finds its order),
its key in the report (a pseudonym, for our own lines), the finding (probability,
threshold, flagged, body part), the model, when it was screened, and the digest of the
study's instance set. Nothing else of the headers goes in: no patient name, ID or birth
date; the accession number and the study UID identify the study to the RIS.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mura_core.notify.ids import control_id
from mura_core.results.content import ModelIdentity, StudyFinding
from mura_core.results.uids import clean_uid, instance_set_digest


@dataclass(frozen=True)
class Notice:
    """One screened study, as the worklist is told about it."""

    study_uid: str  # StudyInstanceUID (the real one: this goes to the RIS only)
    accession_number: str | None  # AccessionNumber; None when the headers have none
    study_key: str  # the study's key in the report (a pseudonym): our lines name it so
    body_part: str  # e.g. XR_WRIST
    probability: float  # the study's probability (mean of its images')
    threshold: float  # the threshold it was flagged at (its body part's)
    flagged: bool  # probability > threshold
    model: ModelIdentity
    screened_at: str  # ISO 8601 with a UTC offset, seconds
    instance_set: str  # digest of the study's listed instance set (`instance_set_digest`)

    def __post_init__(self) -> None:
        if not self.study_uid:
            raise ValueError("a notice needs the study's UID")
        for name in ("probability", "threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"notice {name} must be in [0, 1], got {value}")
        if self.flagged != (self.probability > self.threshold):
            raise ValueError(
                f"flagged={self.flagged} contradicts probability {self.probability} vs "
                f"threshold {self.threshold}"
            )
        if self.when.tzinfo is None:
            raise ValueError(f"screened_at needs a UTC offset: {self.screened_at!r}")

    @property
    def when(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.screened_at)

    @property
    def control_id(self) -> str:
        """The message control ID: the same for a resend of the same result."""
        return control_id(self.study_uid, self.instance_set, self.model.key)


def _accession(finding: StudyFinding) -> str | None:
    """The study's AccessionNumber: the first of its images' headers that has one."""
    for image in finding.images:
        value = str(image.source.get("AccessionNumber", "") or "").strip()
        if value:
            return value
    return None


def notices_from_findings(
    findings: Iterable[tuple[str, StudyFinding]],
    body_parts: Mapping[str, str],
    model: ModelIdentity,
    screened_at: str,
) -> list[Notice]:
    """A notice per (study key, finding); `body_parts` by study key."""
    return [
        Notice(
            study_uid=clean_uid(finding.study_uid),
            accession_number=_accession(finding),
            study_key=key,
            body_part=body_parts[key],
            probability=float(finding.probability),
            threshold=float(finding.threshold),
            flagged=bool(finding.flagged),
            model=model,
            screened_at=screened_at,
            instance_set=instance_set_digest(finding.instance_set),
        )
        for key, finding in findings
    ]
