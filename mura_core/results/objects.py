"""What a write-back stores: the objects chosen (`--write-back-objects`) and the heatmap's
encoding (`--heatmap-format`).

`ResultObjects.parse("sr,kos")` → which of the four kinds a run builds and stores (default:
all): `sr` (the TID 1500 SR of every screened study), `sc` (Secondary Captures, flagged
studies), `heatmap` (the Grad-CAM map as a DICOM object over its source image, flagged
studies), `kos` (a Key Object Selection naming the flagged study's views). An unknown name is
a one-line `ConfigError`.

`HeatmapFormat`: `binary` (the default) a BINARY Segmentation of the map's hot region
(>= HOT), which OHIF 3.13 overlays on the image; `fractional` a FRACTIONAL Segmentation, the
map itself (probability 0–255 per pixel), for tools that read one (highdicom does): OHIF
3.13's SEG loader refuses it ("Fractional segmentations are not yet supported").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

from mura_core.errors import ConfigError

OBJECT_NAMES = ("sr", "sc", "heatmap", "kos")
HOT = 0.5  # a `binary` heatmap's segment: where the map is at least this (maps are in [0, 1])


@dataclass(frozen=True)
class ResultObjects:
    """Which result objects a write-back builds and stores."""

    sr: bool = True
    sc: bool = True
    heatmap: bool = True
    kos: bool = True

    @classmethod
    def parse(cls, text: str | None) -> ResultObjects:
        """`sr,sc,heatmap,kos` (any of them, comma-separated; None: all)."""
        if text is None:
            return cls()
        names = [name.strip().lower() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in OBJECT_NAMES]
        if unknown or not names:
            what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "nothing named"
            raise ConfigError(
                f"--write-back-objects {text!r}: {what}; use one or more of "
                f"{','.join(OBJECT_NAMES)} (comma-separated)"
            )
        return cls(**{name: name in names for name in OBJECT_NAMES})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name))

    @property
    def pictures(self) -> bool:
        """Whether the flagged studies' Grad-CAM maps are needed (SC or heatmap)."""
        return self.sc or self.heatmap


class HeatmapFormat(StrEnum):
    """How a heatmap is encoded (see the module docstring)."""

    BINARY = "binary"
    FRACTIONAL = "fractional"

    @classmethod
    def parse(cls, text: str) -> HeatmapFormat:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(f.value for f in cls)
            raise ConfigError(f"--heatmap-format {text!r}: use one of {choices}") from None
