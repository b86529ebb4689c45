"""Peak memory and time of decoding one 8000x8000 image, at full resolution and with
`work_side` (shrink while decoding), in one process, same bytes.

    .venv/bin/python bench/big_images.py [--side 8000] [--size 320] [--repeats 2]
        [--json bench/results/big_images_cpu.json]

The images are a real radiograph (NEMA WG04 RG2, hip, 10-bit, from ../shared/data/
radiographs-dicom; a smooth synthetic film when it is absent) scaled to side x side, written
as an 8-bit PNG, a 16-bit PNG, a JPEG (quality 90) and an uncompressed 16-bit DICOM. For
each, `decode_bytes` + `select_frame(..., size)` runs with work_side None (the baseline)
and with work_side = 2 * size (what ingest passes), the bytes already in memory. Peak
memory is the process's exact peak RSS above its RSS before the call (Linux VmHWM, reset
through /proc/self/clear_refs before each run); time is the best of --repeats. Printed per
format: both figures, `ratio` work_side / full for each, and the mean absolute difference
of the final size x size images (grey levels). The last line is `ratio <worst peak ratio>`.
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from common import write_figures
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from mura_core import imaging

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "radiographs-dicom"


def _status(field: str) -> int:
    """A VmXXX field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _film(side: int) -> np.ndarray:
    """side x side uint16 (10-bit values): RG2 scaled up, or a smooth synthetic film."""
    path = SHARED / "RG2_J2KI.dcm"
    if path.is_file():
        source = pydicom.dcmread(path).pixel_array.astype(np.uint16)
    else:
        print(f"note: {path} absent, using a synthetic film", file=sys.stderr)
        y, x = np.mgrid[0:512, 0:512]
        source = (512 + 400 * np.sin(x / 40.0) * np.cos(y / 60.0)).astype(np.uint16)
    return np.asarray(Image.fromarray(source).resize((side, side), Image.Resampling.BILINEAR))


def _dicom(pixels: np.ndarray) -> bytes:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", "MONOCHROME2", 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 10, 9, 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def images(side: int) -> dict[str, tuple[str, bytes]]:
    """Format → (file name, bytes)."""
    film = _film(side)
    eight = (film >> 2).astype(np.uint8)
    out: dict[str, tuple[str, bytes]] = {}
    for label, name, pixels, options in (
        ("png8", "x.png", eight, {"compress_level": 1}),
        ("png16", "x.png", film << 6, {"compress_level": 1}),
        ("jpeg", "x.jpg", eight, {"quality": 90}),
    ):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(
            buffer, format=name.split(".")[1].replace("jpg", "jpeg"), **options
        )
        out[label] = (name, buffer.getvalue())
    out["dicom"] = ("x.dcm", _dicom(film))
    return out


def run_once(
    data: bytes, name: str, size: int, work_side: int | None
) -> tuple[float, int, np.ndarray]:
    """(seconds, peak bytes above the RSS before, final image) of decode + select_frame."""
    gc.collect()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = time.perf_counter()
    final = imaging.select_frame(imaging.decode_bytes(data, name, work_side=work_side), 0, size)
    seconds = time.perf_counter() - start
    return seconds, _status("VmHWM") - before, final


def measure(data: bytes, name: str, size: int, work_side: int | None, repeats: int) -> dict:
    runs = [run_once(data, name, size, work_side) for _ in range(repeats)]
    return {
        "seconds": min(r[0] for r in runs),
        "peak_mb": max(r[1] for r in runs) / 2**20,
        "final": runs[0][2],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8000, help="image side in pixels")
    parser.add_argument("--size", type=int, default=320, help="final image size")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (best time kept)")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "big_images_cpu.json"
    )
    args = parser.parse_args()

    work_side = 2 * args.size
    figures: dict[str, dict[str, float]] = {}
    for label, (name, data) in images(args.side).items():
        full = measure(data, name, args.size, None, args.repeats)
        small = measure(data, name, args.size, work_side, args.repeats)
        mad = float(np.abs(full["final"].astype(float) - small["final"].astype(float)).mean())
        figures[label] = {
            "file_mb": len(data) / 2**20,
            "full_seconds": full["seconds"],
            "full_peak_mb": full["peak_mb"],
            "work_side_seconds": small["seconds"],
            "work_side_peak_mb": small["peak_mb"],
            "ratio_peak": small["peak_mb"] / full["peak_mb"],
            "ratio_seconds": small["seconds"] / full["seconds"],
            "mean_abs_diff_grey_levels": mad,
        }
        f = figures[label]
        print(
            f"{label:6s} {f['file_mb']:7.1f} MB file | full {f['full_peak_mb']:7.0f} MB "
            f"{f['full_seconds']:6.2f}s | work_side={work_side} {f['work_side_peak_mb']:6.0f} MB "
            f"{f['work_side_seconds']:6.2f}s | ratio peak {f['ratio_peak']:.3f} "
            f"time {f['ratio_seconds']:.3f} | |diff| {mad:.2f}"
        )
    write_figures(args.json, args, work_side=work_side, images=figures)
    print(f"ratio {max(f['ratio_peak'] for f in figures.values()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
