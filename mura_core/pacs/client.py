"""What every PACS client does, whatever it speaks: check, find, fetch, store.

`connect(address, …)` returns a `DicomWebPacs` (dicomweb-client: QIDO-RS, WADO-RS, STOW-RS)
or a `DimsePacs` (pynetdicom: C-FIND, C-GET, C-STORE). Both

- `check()` once before any work: unreachable, refused credentials (HTTP 401/403) or a
  rejected association raise a one-line `PacsError` naming the address, never a secret;
- `find_studies(query)` → StudyInstanceUIDs, then `find_instances(study)` → one header
  (a pydicom Dataset of `INSTANCE_FIELDS`, no pixels) per instance;
- `find_results(study, modalities)` → the headers (`RESULT_FIELDS`: those and when each was
  made) of the study's instances of those modalities, matched by the PACS (QIDO-RS or C-FIND
  at instance level, Modality as a key): where the write-back finds our earlier SRs of a
  study, and `mura results` all our objects in it;
- `fetch(instances)` → per `PacsInstance` its Part 10 bytes, or a `RetrieveError`
  (`retrieve_failed`, with the HTTP or DIMSE status) after a bounded retry with backoff;
- `store(datasets)` → per dataset a `StoreOutcome` (stored, or why not).

A client is a small picklable value (address, auth, AE title, retry policy): a Ray task
gets a copy and opens its own connection, so a cluster fetches in parallel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import pydicom.config
from pydicom.dataset import Dataset

from mura_core.imaging.errors import ImagingError
from mura_core.locations import PacsInstance
from mura_core.pacs.address import DEFAULT_AE_TITLE, PacsAddress, PacsAuth, PacsQuery

# pydicom logs, and warns, every header value it finds invalid, verbatim: UIDs, names and
# dates. A PACS holds whatever it was sent, so those lines would carry identifiers into the
# run's log (and a job's output). Values read are not checked (they are read as they are
# either way), and pydicom's log stays quiet, in the driver and in every Ray worker that
# fetches (each imports this module to unpickle its client).
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.ERROR)

# Header attributes listing reads (QIDO-RS includefield / C-FIND return keys): identity,
# body part and view, and the patient/study module the results written back carry.
INSTANCE_FIELDS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "BodyPartExamined",
    "ProtocolName",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "NumberOfFrames",
    "Rows",  # a heatmap is made at its source image's size
    "Columns",
    "Manufacturer",
)
# What finding our results asks besides: when each was made (the newest SR is superseded)
RESULT_FIELDS: tuple[str, ...] = (*INSTANCE_FIELDS, "ContentDate", "ContentTime")


class RetrieveError(ImagingError):
    """An instance the PACS did not hand over (after retries): a quarantine row."""

    error_type = "retrieve_failed"


@dataclass(frozen=True)
class RetryPolicy:
    """Per request: a timeout, then up to `attempts` tries `backoff`·2^k seconds apart."""

    attempts: int = 3
    backoff: float = 0.5
    timeout: float = 30.0

    def delays(self) -> Iterable[float]:
        return (self.backoff * 2**k for k in range(self.attempts - 1))


@dataclass(frozen=True)
class StoreOutcome:
    """One stored object: its SOP Instance UID, and None or why the PACS refused it."""

    sop_uid: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Pacs(Protocol):
    address: PacsAddress

    def check(self) -> None: ...

    def find_studies(self, query: PacsQuery) -> list[str]: ...

    def find_instances(self, study_uid: str) -> list[Dataset]: ...

    def find_results(self, study_uid: str, modalities: Sequence[str]) -> list[Dataset]: ...

    def fetch(
        self, instances: Sequence[PacsInstance]
    ) -> dict[PacsInstance, bytes | ImagingError]: ...

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]: ...


T = TypeVar("T")


class Transient(Exception):
    """A failure worth another try (connection refused/reset, timeout, HTTP 5xx/429)."""


def with_retry(call: Callable[[], T], policy: RetryPolicy) -> T:
    """`call()`, tried again after `Transient` failures; the last one propagates."""
    for delay in policy.delays():
        try:
            return call()
        except Transient:
            time.sleep(delay)
    return call()


FETCH_THREADS = 4  # requests (or associations) in flight per fetch call: hides PACS latency


def in_parallel(
    fetch: Callable[[Sequence[PacsInstance]], dict[PacsInstance, bytes | ImagingError]],
    instances: Sequence[PacsInstance],
    threads: int = FETCH_THREADS,
) -> dict[PacsInstance, bytes | ImagingError]:
    """`fetch` over up to `threads` interleaved slices of `instances` at once (the PACS serves
    requests concurrently; a Ray task waiting on one at a time would idle its CPU)."""
    slices = [s for s in (list(instances[i::threads]) for i in range(threads)) if s]
    if len(slices) <= 1:
        return fetch(instances)
    with ThreadPoolExecutor(len(slices)) as pool:
        parts = list(pool.map(fetch, slices))
    found = {loc: result for part in parts for loc, result in part.items()}
    return {loc: found[loc] for loc in instances}


def connect(
    address: str | PacsAddress,
    auth: PacsAuth | None = None,
    *,
    ae_title: str = DEFAULT_AE_TITLE,
    retry: RetryPolicy | None = None,
) -> Pacs:
    """A client for `address` (not yet connected: call `check()`)."""
    addr = address if isinstance(address, PacsAddress) else PacsAddress.parse(address)
    policy = retry or RetryPolicy()
    if addr.protocol == "dicomweb":
        from mura_core.pacs.dicomweb import DicomWebPacs

        return DicomWebPacs(addr, auth or PacsAuth(), policy)
    from mura_core.pacs.dimse import DimsePacs

    return DimsePacs(addr, ae_title, policy)


@dataclass(frozen=True)
class PacsOptions:
    """How to use a PACS address: credentials, our AE title, what to list, retries."""

    auth: PacsAuth = field(default_factory=PacsAuth, repr=False)
    ae_title: str = DEFAULT_AE_TITLE
    query: PacsQuery = field(default_factory=PacsQuery)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def connect(self, address: str | PacsAddress) -> Pacs:
        return connect(address, self.auth, ae_title=self.ae_title, retry=self.retry)
