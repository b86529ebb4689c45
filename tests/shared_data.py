"""Where the shared real data is: ../shared/data beside the checkout (as on CI), or
$MURA_SHARED_DATA for clones made elsewhere. Tests that need it skip, saying so, without it."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MURA_SHARED_DATA") or REPO.parent / "shared" / "data")
RADIOGRAPHS_DICOM = SHARED_DATA / "radiographs-dicom"
FRACATLAS = SHARED_DATA / "fracatlas"
