"""A classic DICOM PACS through pynetdicom: C-FIND to list, C-GET to fetch, C-STORE to store.

Our AE (calling AE title `--ae-title`, default MURA) opens one association per call (per
Ray task batch when fetching). C-GET proposes, for every SOP class in the batch, one
presentation context per transfer syntax we decode, with the SCP role for the C-STORE
sub-operations, so the PACS sends what it stores instead of transcoding; the received
bytes (`encoded_dataset()`, never decoded here) go to `mura_core.imaging` like a file's.
A refused or dropped association is retried with backoff (`RetryPolicy`), then reported:
a whole-run `PacsError` when checking, a per-instance `RetrieveError` when fetching.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from mura_core.imaging.errors import ImagingError
from mura_core.pacs.address import PacsAddress, PacsError, PacsQuery
from mura_core.pacs.client import (
    INSTANCE_FIELDS,
    RESULT_FIELDS,
    PacsInstance,
    RetrieveError,
    RetryPolicy,
    StoreOutcome,
    Transient,
    in_parallel,
    with_retry,
)

# pynetdicom logs associations and every C-STORE with its UIDs: identifiers stay out of logs
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
TRANSFER_SYNTAXES = (  # what we decode, stored syntaxes first come back untranscoded
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
)
_MAX_CONTEXTS = 128
_PENDING = (0xFF00, 0xFF01)


@dataclass(frozen=True)
class DimsePacs:
    address: PacsAddress
    ae_title: str
    retry: RetryPolicy

    def _ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        for name in ("acse", "dimse", "network", "connection"):
            setattr(ae, f"{name}_timeout", self.retry.timeout)
        return ae

    @contextmanager
    def _association(
        self, ae: AE, *, ext_neg: list[object] | None = None, handlers: list[object] | None = None
    ) -> Iterator[Association]:
        def attempt() -> Association:
            assoc = ae.associate(
                self.address.host,
                self.address.port,
                ae_title=self.address.called_aet,
                ext_neg=ext_neg,
                evt_handlers=handlers,
            )
            if assoc.is_established:
                return assoc
            if assoc.is_rejected:
                raise PacsError(
                    f"PACS {self.address} rejected the association from AE title "
                    f"{self.ae_title!r} (check the called AE title and that the PACS knows "
                    f"{self.ae_title!r})"
                )
            raise Transient(f"no association with PACS {self.address}: connection failed")

        assoc = with_retry(attempt, self.retry)
        try:
            yield assoc
        finally:
            assoc.release()

    def check(self) -> None:
        """C-ECHO, then a C-FIND that matches nothing: an AE the PACS does not serve fails here."""
        ae = self._ae()
        ae.add_requested_context(Verification)
        try:
            with self._association(ae) as assoc:
                status = assoc.send_c_echo()
        except Transient:
            raise PacsError(f"cannot reach PACS {self.address}: connection failed") from None
        if not status or status.Status != 0:
            raise PacsError(f"PACS {self.address} did not answer C-ECHO")
        probe = Dataset()
        probe.QueryRetrieveLevel, probe.StudyInstanceUID, probe.StudyDate = "STUDY", "", "19000101"
        self._find(probe, "checking it")

    def _find(self, identifier: Dataset, doing: str) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        try:
            with self._association(ae) as assoc:
                found = []
                for status, answer in assoc.send_c_find(
                    identifier, StudyRootQueryRetrieveInformationModelFind
                ):
                    code = getattr(status, "Status", None)
                    if code in _PENDING and answer is not None:
                        found.append(answer)
                    elif code is None:
                        raise PacsError(
                            f"PACS {self.address} refused C-FIND from AE title "
                            f"{self.ae_title!r} while {doing} (does it know this AE title?)"
                        )
                    elif code != 0:
                        raise PacsError(
                            f"PACS {self.address}: C-FIND failed while {doing} "
                            f"(status 0x{code:04X})"
                        )
                return found
        except Transient as exc:
            raise PacsError(f"cannot reach PACS {self.address} while {doing}: {exc}") from None

    def find_studies(self, query: PacsQuery) -> list[str]:
        found: dict[str, None] = {}
        for modality in query.modalities:
            ident = Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.StudyInstanceUID = ""
            ident.StudyDate = query.study_date or ""
            ident.ModalitiesInStudy = modality
            rows = self._find(ident, "listing studies")
            found.update(dict.fromkeys(str(r.StudyInstanceUID) for r in rows))
        return list(found)

    def find_instances(self, study_uid: str) -> list[Dataset]:
        return self._find(_image_query(study_uid, INSTANCE_FIELDS), "listing a study's instances")

    def find_results(self, study_uid: str, modalities: Sequence[str]) -> list[Dataset]:
        """C-FIND the study's instances of each modality (Modality as a matching key)."""
        found: list[Dataset] = []
        for modality in modalities:
            ident = _image_query(study_uid, RESULT_FIELDS)
            ident.Modality = modality
            found.extend(self._find(ident, "finding a study's results"))
        return found

    def fetch(self, instances: Sequence[PacsInstance]) -> dict[PacsInstance, bytes | ImagingError]:
        """C-GET the instances over FETCH_THREADS associations at once."""
        return in_parallel(self._fetch_serial, instances)

    def _fetch_serial(
        self, instances: Sequence[PacsInstance]
    ) -> dict[PacsInstance, bytes | ImagingError]:
        """C-GET each instance over one association (storage contexts for their classes)."""
        received: dict[str, bytes] = {}

        def on_store(event: evt.Event) -> int:
            received[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset()
            return 0x0000

        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        classes = list(dict.fromkeys(loc.sop_class for loc in instances))[
            : (_MAX_CONTEXTS - 1) // len(TRANSFER_SYNTAXES)
        ]
        for sop_class in classes:
            for syntax in TRANSFER_SYNTAXES:
                ae.add_requested_context(sop_class, syntax)
        roles = [build_role(c, scp_role=True) for c in classes]
        out: dict[PacsInstance, bytes | ImagingError] = {}
        try:
            with self._association(
                ae, ext_neg=roles, handlers=[(evt.EVT_C_STORE, on_store)]
            ) as assoc:
                for loc in instances:
                    out[loc] = _c_get(assoc, loc, received)
        except (Transient, PacsError) as exc:
            for loc in instances:
                out.setdefault(loc, RetrieveError(f"C-GET failed: {exc}"))
        return out

    def store(self, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
        ae = self._ae()
        for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
            ae.add_requested_context(
                sop_class, [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian]
            )
        outcomes = []
        try:
            with self._association(ae) as assoc:
                for ds in datasets:
                    status = assoc.send_c_store(ds)
                    code = getattr(status, "Status", None)
                    error = (
                        None
                        if code in (0x0000, 0xB000, 0xB007, 0xB006)
                        else (
                            "C-STORE: no answer" if code is None else f"C-STORE status 0x{code:04X}"
                        )
                    )
                    outcomes.append(StoreOutcome(str(ds.SOPInstanceUID), error))
        except (Transient, PacsError) as exc:
            done = {o.sop_uid for o in outcomes}
            outcomes += [
                StoreOutcome(str(ds.SOPInstanceUID), f"C-STORE failed: {exc}")
                for ds in datasets
                if str(ds.SOPInstanceUID) not in done
            ]
        return outcomes


def _image_query(study_uid: str, keywords: Sequence[str]) -> Dataset:
    """An IMAGE-level C-FIND identifier of one study, asking for `keywords` (empty: return)."""
    ident = Dataset()
    for keyword in keywords:
        setattr(ident, keyword, None)
    ident.QueryRetrieveLevel = "IMAGE"
    ident.StudyInstanceUID = study_uid
    return ident


def _c_get(
    assoc: Association, loc: PacsInstance, received: dict[str, bytes]
) -> bytes | RetrieveError:
    ident = Dataset()
    ident.QueryRetrieveLevel = "IMAGE"
    ident.StudyInstanceUID, ident.SeriesInstanceUID, ident.SOPInstanceUID = (
        loc.study,
        loc.series,
        loc.sop,
    )
    final = None
    for status, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet):
        final = getattr(status, "Status", None)
    if loc.sop in received:
        return received.pop(loc.sop)
    if final is None:
        return RetrieveError("C-GET: no answer (association dropped)")
    return RetrieveError(f"C-GET status 0x{final:04X}")
