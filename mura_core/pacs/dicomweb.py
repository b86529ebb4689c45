"""A DICOMweb PACS through dicomweb-client: QIDO-RS to list, WADO-RS to fetch, STOW-RS to store.

The HTTP session carries the credentials (basic or bearer) and a urllib3 `Retry` (bounded
attempts, exponential backoff, on connection errors and 429/5xx), so a PACS that restarts
or sheds load costs a retry, not an instance. WADO-RS asks for any transfer syntax
(`application/dicom; transfer-syntax=*`): the stored bytes, not a transcoded copy, go to
`mura_core.imaging`, exactly as a file from a folder would.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mura_core.imaging.errors import CorruptFileError, ImagingError
from mura_core.pacs.address import PacsAddress, PacsAuth, PacsError, PacsQuery
from mura_core.pacs.client import (
    INSTANCE_FIELDS,
    RESULT_FIELDS,
    PacsInstance,
    RetrieveError,
    RetryPolicy,
    StoreOutcome,
    in_parallel,
)

# dicomweb-client logs every request at INFO with its UIDs: identifiers stay out of logs
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
_RETRY_STATUS = (429, 500, 502, 503, 504)
_ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)
PAGE = 1000  # QIDO-RS results per request


@dataclass
class DicomWebPacs:
    address: PacsAddress
    auth: PacsAuth = field(repr=False)
    retry: RetryPolicy
    _client: DICOMwebClient | None = field(default=None, init=False, repr=False)

    def __getstate__(self) -> dict[str, object]:  # a Ray task opens its own session
        return {"address": self.address, "auth": self.auth, "retry": self.retry, "_client": None}

    def client(self) -> DICOMwebClient:
        if self._client is None:
            session = requests.Session()
            # no gzip: compressing pixel data costs the PACS ~10x the transfer it saves on a
            # LAN (Orthanc: 30 ms against 3 ms per 200 KB instance here)
            session.headers["Accept-Encoding"] = "identity"
            if self.auth.token:
                session.headers["Authorization"] = f"Bearer {self.auth.token}"
            elif self.auth.username:
                session.auth = (self.auth.username, self.auth.password or "")
            retries = Retry(
                total=self.retry.attempts - 1,
                backoff_factor=self.retry.backoff,
                status_forcelist=_RETRY_STATUS,
                allowed_methods=None,  # STOW too: our objects have fixed UIDs, a retry is safe
                raise_on_status=False,
            )
            for prefix in ("http://", "https://"):
                session.mount(prefix, HTTPAdapter(max_retries=retries))
            # permissive: a PACS holds what it was sent, non-conformant UIDs included (pydicom's
            # own test files have some); a strict client fails the whole listing on one study
            self._client = DICOMwebClient(self.address.url, session=session, permissive_uid=True)
            self._client._timeout = self.retry.timeout  # noqa: SLF001 (no public setter)
            self._client.set_http_retry_params(retry=False)  # the session retries
        return self._client

    def _fail(self, exc: Exception, doing: str) -> PacsError:
        status = _status(exc)
        if status == HTTPStatus.UNAUTHORIZED:
            return PacsError(
                f"PACS {self.address} refused our credentials while {doing} (HTTP 401): "
                "check --pacs-auth / --pacs-token or MURA_PACS_USERNAME and MURA_PACS_PASSWORD"
            )
        if status == HTTPStatus.FORBIDDEN:
            return PacsError(
                f"PACS {self.address} denied access while {doing} (HTTP 403): the credentials "
                "were accepted but are not allowed to use this service; ask its administrator"
            )
        if status is not None:
            return PacsError(f"PACS {self.address} answered HTTP {status} while {doing}")
        return PacsError(f"cannot reach PACS {self.address} while {doing}: {_why(exc)}")

    def check(self) -> None:
        try:
            self.client().search_for_studies(limit=1, fields=["StudyInstanceUID"])
        except (requests.RequestException, OSError) as exc:
            raise self._fail(exc, "checking it (QIDO-RS)") from None

    def find_studies(self, query: PacsQuery) -> list[str]:
        found: dict[str, None] = {}
        for modality in query.modalities:
            filters = {"ModalitiesInStudy": modality}
            if query.study_date:
                filters["StudyDate"] = query.study_date
            try:
                rows = _pages(
                    self.client().search_for_studies,
                    fields=["StudyInstanceUID"],
                    search_filters=filters,
                )
            except (requests.RequestException, OSError) as exc:
                raise self._fail(exc, "listing studies (QIDO-RS)") from None
            found.update(dict.fromkeys(str(Dataset.from_json(r).StudyInstanceUID) for r in rows))
        return list(found)

    def find_instances(self, study_uid: str) -> list[Dataset]:
        try:
            rows = _pages(
                self.client().search_for_instances,
                study_instance_uid=study_uid,
                fields=list(INSTANCE_FIELDS),
            )
        except (requests.RequestException, OSError) as exc:
            raise self._fail(exc, "listing a study's instances (QIDO-RS)") from None
        return [Dataset.from_json(r) for r in rows]

    def find_results(self, study_uid: str, modalities: Sequence[str]) -> list[Dataset]:
        """QIDO-RS the study's instances of each modality (Modality matched by the PACS)."""
        found: list[Dataset] = []
        for modality in modalities:
            try:
                rows = _pages(
                    self.client().search_for_instances,
                    study_instance_uid=study_uid,
                    fields=list(RESULT_FIELDS),
                    search_filters={"Modality": modality},
                )
            except (requests.RequestException, OSError) as exc:
                raise self._fail(exc, "finding a study's results (QIDO-RS)") from None
            found.extend(Dataset.from_json(r) for r in rows)
        return found

    def fetch(self, instances: Sequence[PacsInstance]) -> dict[PacsInstance, bytes | ImagingError]:
        """WADO-RS the instances, FETCH_THREADS requests in flight (one session)."""
        self.client()  # the session, before the threads share it
        return in_parallel(self._fetch_serial, instances)

    def _fetch_serial(
        self, instances: Sequence[PacsInstance]
    ) -> dict[PacsInstance, bytes | ImagingError]:
        """One at a time; once the PACS is unreachable (after the session's retries), the
        rest fail at once with the same reason instead of each retrying."""
        out: dict[PacsInstance, bytes | ImagingError] = {}
        down: RetrieveError | None = None
        for loc in instances:
            out[loc] = down or self._fetch_one(loc)
            if down is None and isinstance(out[loc], _Unreachable):
                down = out[loc]  # type: ignore[assignment]
        return out

    def _fetch_one(self, loc: PacsInstance) -> bytes | ImagingError:
        try:
            ds = self.client().retrieve_instance(
                loc.study, loc.series, loc.sop, media_types=_ANY_TRANSFER_SYNTAX
            )
        except (requests.RequestException, OSError) as exc:
            status = _status(exc)
            if status is not None:
                return RetrieveError(f"WADO-RS HTTP {status}")
            return _Unreachable(f"WADO-RS failed: {_why(exc)}")
        except Exception as exc:  # the PACS answered with something pydicom cannot read
            return CorruptFileError(f"WADO-RS answer unreadable ({type(exc).__name__})")
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
        """STOW-RS, one request per study (our results go into their source's study)."""
        outcomes: list[StoreOutcome] = []
        by_study: dict[str, list[Dataset]] = {}
        for ds in datasets:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
        for study, group in by_study.items():
            try:
                answer = self.client().store_instances(group, study_instance_uid=study)
            except (requests.RequestException, OSError) as exc:
                status = _status(exc)
                why = f"STOW-RS HTTP {status}" if status else f"STOW-RS failed: {_why(exc)}"
                outcomes.extend(StoreOutcome(str(ds.SOPInstanceUID), why) for ds in group)
                continue
            failed = {
                str(item.ReferencedSOPInstanceUID): int(item.get("FailureReason", 0))
                for item in answer.get("FailedSOPSequence", [])
            }
            outcomes.extend(
                StoreOutcome(
                    uid := str(ds.SOPInstanceUID),
                    f"STOW-RS failure reason 0x{failed[uid]:04X}" if uid in failed else None,
                )
                for ds in group
            )
        return outcomes


class _Unreachable(RetrieveError):
    """The PACS did not answer at all (refused, reset, timed out) after the retries."""


def _pages(search: Callable[..., list[dict[str, Any]]], **kwargs: Any) -> list[dict[str, Any]]:
    """Every result of a QIDO-RS search, PAGE at a time (dicomweb-client's `get_remaining`
    never ends against a server that ignores `offset` without `limit`)."""
    rows: list[dict[str, Any]] = []
    while True:
        page = search(limit=PAGE, offset=len(rows), **kwargs)
        rows.extend(page)
        if len(page) < PAGE:
            return rows


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _why(exc: Exception) -> str:
    """A connection failure in a few words (urllib3 nests the reason deep)."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Connection reset", "Name or service"):
        if marker in text:
            return marker.lower()
    if isinstance(exc, requests.exceptions.RetryError):
        return "too many retries"
    return type(exc).__name__
