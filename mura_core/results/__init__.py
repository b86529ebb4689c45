"""DICOM results for the PACS: a TID 1500 SR per study, Secondary Captures for flagged ones.

The recipe, top to bottom (one module per step):

1. **UIDs** (`uids`). Every object's UID is `2.25.` + a UUID (RFC 9562 version 8) made of the first
   128 bits of sha256 over (source study UID, digest of its instance set, model version,
   object kind, index): a re-run or a retried upload makes the same objects, so the PACS
   keeps one of each, while a new model version or a changed instance set makes new ones.
   `instance_set_digest` (sorted unique SOP Instance UIDs) is also what nightly compares to
   see a changed study. The model's Device UID is made the same way from name + version.
2. **The SR** (`sr.build_sr`): highdicom's Comprehensive 3D SR holding a TID 1500 Measurement
   Report (the IOD and template IHE AI Results prescribes). Observation context: the model as
   a device observer. Procedure reported: plain radiography. One TID 1501 group for the
   study: the finding as a qualitative evaluation (Normality = Abnormal when flagged, Normal
   otherwise), the study probability and the threshold as numeric measurements in UCUM "1"
   (dimensionless), the algorithm identification (TID 4019: model name, registered version,
   the MLflow model URI as a parameter) and every source image. Then one group per image
   with its probability, referencing its SOP instance (and frame, when multi-frame). The
   patient and study modules come from the source headers through highdicom's evidence
   handling; the SR is a new series (9901) of the same study, VerificationFlag UNVERIFIED,
   CompletionFlag COMPLETE, PreliminaryFlag PRELIMINARY (nobody has read it yet), with the
   IHE AI Results contributing-equipment item that names the model.
   For viewers that draw a TID 1500 SR's groups as annotations on the images (OHIF v3, which
   needs a 2-D SCOORD on a referenced image in every group, or shows nothing), each
   probability is also inferred from its image region (TID 320): the study's from a closed
   POLYLINE around each whole image, drawn with its text box; an image's from its image's
   four corners (MULTIPOINT, drawn without one, so no second box lands on the first image).
   The study group says its finding and model in words, a TEXT Comment (DCM 121106), which
   OHIF prints above the probability and threshold: "Abnormal (AI: mura-cnn v3)".
3. **The Secondary Captures** (`sc.build_secondary_captures`, flagged studies only): for each
   scored view an RGB canvas, a banner "AI — not for diagnosis" with the image probability
   and the model over the original beside its Grad-CAM overlay (`mura_core.cam.overlay`),
   stored as a highdicom SCImage in its own series (9902) of the same study, burned-in
   annotation YES.
4. **Reading back** (`sr.read_sr`): highdicom parses the SR; the study group and the image
   groups give back the numbers, the model identity and the referenced instances. Values are
   stored as FD beside the DS, so floats round-trip bit for bit.
5. **Heatmaps** (`heatmap.build_heatmaps`, flagged studies): each view's Grad-CAM map at its
   source image's Rows × Columns, as a BINARY Segmentation of its hot region (or a
   FRACTIONAL one: `objects.HeatmapFormat`) referencing that image, in its plane (a Frame of
   Reference of its own for a radiograph), one series each (9903), for viewers that overlay
   it on the image (OHIF does).
6. **Key images** (`kos.build_kos`, flagged studies): a Key Object Selection document titled
   "Of Interest" naming the flagged study's views and its SR (series 9904).
7. **Versions**: an SR that supersedes an earlier one of the study (the study's instance set
   changed, or another model screened it) names it in its Predecessor Documents Sequence
   (`build_sr(previous=…)`, read back by `sr.predecessors`); `history` lists a study's
   results in a PACS, newest first (`mura results`).
8. **Recognising our own objects** in a PACS listing (`own.own_result_kind`): an SR, SC,
   Segmentation / Parametric Map or KOS SOP class (or modality) plus our series description
   or manufacturer, so that they never count in a study's instance set.

`objects.ResultObjects` is which of SR, SC, heatmap and KOS a write-back stores.

The typed values and the codes are in `content`; what the SR and the Secondary Captures
share (the source header, the IHE AI equipment item) in `equipment`.
"""

from mura_core.results.content import (
    ABNORMAL,
    ALGORITHM_FAMILY,
    BANNER_TEXT,
    COMMENT,
    FINDING_TYPE,
    HEATMAP_SERIES_DESCRIPTION,
    HEATMAP_SERIES_NUMBER,
    IHE_PROCESSING_ALGORITHM,
    IMAGE_TRACKING_ID,
    INSTANCE_SET_PARAMETER,
    KOS_SERIES_DESCRIPTION,
    KOS_SERIES_NUMBER,
    KOS_TITLE,
    MODEL_URI_PARAMETER,
    NORMAL,
    NORMALITY,
    PROBABILITY,
    PROCEDURE_REPORTED,
    RESULT_KINDS,
    RESULT_MANUFACTURER,
    SC_SERIES_DESCRIPTION,
    SC_SERIES_NUMBER,
    SR_SERIES_DESCRIPTION,
    SR_SERIES_NUMBER,
    STUDY_COMMENT,
    STUDY_TRACKING_ID,
    THRESHOLD,
    UNIT_ONE,
    UNREGISTERED,
    ImageFinding,
    ModelIdentity,
    ResultReadError,
    ScPicture,
    SrContent,
    SrImage,
    StudyFinding,
)
from mura_core.results.heatmap import build_heatmaps, map_at_source, unmappable
from mura_core.results.kos import build_kos, key_objects
from mura_core.results.objects import OBJECT_NAMES, HeatmapFormat, ResultObjects
from mura_core.results.own import is_own_result, own_result_kind
from mura_core.results.sc import banner_font, build_secondary_captures, sc_canvas
from mura_core.results.sr import build_sr, predecessors, read_sr
from mura_core.results.uids import (
    device_uid,
    digest_result_uid,
    frame_of_reference_uid,
    instance_set_digest,
    result_uid,
)

__all__ = [
    "ABNORMAL",
    "ALGORITHM_FAMILY",
    "BANNER_TEXT",
    "COMMENT",
    "FINDING_TYPE",
    "HEATMAP_SERIES_DESCRIPTION",
    "HEATMAP_SERIES_NUMBER",
    "IHE_PROCESSING_ALGORITHM",
    "IMAGE_TRACKING_ID",
    "INSTANCE_SET_PARAMETER",
    "KOS_SERIES_DESCRIPTION",
    "KOS_SERIES_NUMBER",
    "KOS_TITLE",
    "MODEL_URI_PARAMETER",
    "NORMAL",
    "NORMALITY",
    "OBJECT_NAMES",
    "PROBABILITY",
    "PROCEDURE_REPORTED",
    "RESULT_KINDS",
    "RESULT_MANUFACTURER",
    "SC_SERIES_DESCRIPTION",
    "SC_SERIES_NUMBER",
    "SR_SERIES_DESCRIPTION",
    "SR_SERIES_NUMBER",
    "STUDY_COMMENT",
    "STUDY_TRACKING_ID",
    "THRESHOLD",
    "UNIT_ONE",
    "UNREGISTERED",
    "banner_font",
    "build_heatmaps",
    "build_kos",
    "build_secondary_captures",
    "build_sr",
    "device_uid",
    "digest_result_uid",
    "frame_of_reference_uid",
    "instance_set_digest",
    "is_own_result",
    "key_objects",
    "map_at_source",
    "own_result_kind",
    "predecessors",
    "read_sr",
    "result_uid",
    "sc_canvas",
    "unmappable",
    "HeatmapFormat",
    "ImageFinding",
    "ModelIdentity",
    "ResultObjects",
    "ResultReadError",
    "ScPicture",
    "SrContent",
    "SrImage",
    "StudyFinding",
]
