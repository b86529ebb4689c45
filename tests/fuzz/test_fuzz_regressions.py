"""Every crasher the decoder fuzzer found, as the minimal input that triggered it (built
here as bytes, never a binary file), each now ending as a typed `ImagingError`.

The inputs are tiny hand-written Part 10 files: preamble, file meta, and an Explicit VR
Little Endian dataset of a 2x2 8-bit image, with one thing wrong — the thing hypothesis
shrank the crash down to.
"""

from __future__ import annotations

import struct

import pytest

from mura_core import imaging
from mura_core.imaging import (
    CorruptFileError,
    UnsupportedTransferSyntaxError,
)

EXPLICIT_LE = b"1.2.840.10008.1.2.1\x00"
MR_STORAGE = b"1.2.840.10008.5.1.4.1.1.4\x00"


def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element (a 4-byte length for OB/OW/UN/SQ/UT)."""
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHL", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def part10(syntax: bytes, body: bytes) -> bytes:
    meta = element(2, 0x0001, b"OB", b"\x00\x01") + element(2, 0x0010, b"UI", syntax)
    group_length = element(2, 0x0000, b"UL", struct.pack("<L", len(meta)))
    return b"\x00" * 128 + b"DICM" + group_length + meta + body


def image_body(
    sop_uid_vr: bytes = b"UI", photometric: bytes = b"MONOCHROME2 ", samples: int = 1
) -> bytes:
    """A 2x2 8-bit image (MONOCHROME2, one sample per pixel, unless told)."""
    return b"".join(
        (
            element(0x0008, 0x0016, b"UI", MR_STORAGE),
            element(0x0008, 0x0018, sop_uid_vr, b"1.2.3.4\x00"),
            element(0x0028, 0x0002, b"US", struct.pack("<H", samples)),
            element(0x0028, 0x0004, b"CS", photometric),
            element(0x0028, 0x0006, b"US", b"\x00\x00") if samples > 1 else b"",
            element(0x0028, 0x0010, b"US", struct.pack("<H", 2)),
            element(0x0028, 0x0011, b"US", struct.pack("<H", 2)),
            element(0x0028, 0x0100, b"US", struct.pack("<H", 8)),
            element(0x0028, 0x0101, b"US", struct.pack("<H", 8)),
            element(0x0028, 0x0102, b"US", struct.pack("<H", 7)),
            element(0x0028, 0x0103, b"US", struct.pack("<H", 0)),
            element(0x7FE0, 0x0010, b"OB", bytes([0, 64, 128, 255]) * samples),
        )
    )


def test_the_hand_written_image_decodes() -> None:
    decoded = imaging.decode_bytes(part10(EXPLICIT_LE, image_body()), "x.dcm")
    assert decoded.frames[0].shape == (2, 2)


def test_a_transfer_syntax_uid_that_is_no_transfer_syntax() -> None:
    # Crasher 1 (test_fuzz_dicom_decode, seed MR_small.dcm, Transfer Syntax UID replaced by
    # a SOP class UID): pydicom's UID.is_compressed raised ValueError("UID is not a transfer
    # syntax.") inside the decoder. Fixed in dicom._transfer_syntax.
    data = part10(MR_STORAGE, image_body())
    with pytest.raises(UnsupportedTransferSyntaxError, match="is not a transfer syntax"):
        imaging.decode_bytes(data, "x.dcm")


def test_a_public_element_with_an_unknown_vr_in_a_listed_header() -> None:
    # Crasher 2 (test_fuzz_dicom_header_as_listing_reads_it, seed SC_rgb_small_odd.dcm, the VR
    # of SOP Instance UID flipped to b'U\x1a'): read_header returned, then listing's
    # ds.get('SOPInstanceUID') raised NotImplementedError("Unknown Value Representation")
    # from pydicom's lazy conversion. Fixed in dicom_header._settle: every element is
    # converted inside read_header / decode, a damaged public one is CorruptFileError.
    data = part10(EXPLICIT_LE, image_body(sop_uid_vr=b"U\x1a"))
    with pytest.raises(CorruptFileError, match=r"\(0008,0018\) unreadable"):
        imaging.read_header(data)
    with pytest.raises(CorruptFileError, match=r"\(0008,0018\) unreadable"):
        imaging.decode_bytes(data, "x.dcm")


def test_a_private_element_with_an_unknown_vr_is_dropped() -> None:
    private = element(0x0009, 0x0010, b"U\x1a", b"ab")
    body = image_body()
    at = body.index(b"\x28\x00\x02\x00")  # after the SOP UIDs, in tag order
    data = part10(EXPLICIT_LE, body[:at] + private + body[at:])
    ds = imaging.read_header(data)
    assert 0x00090010 not in ds and ds.SOPInstanceUID == "1.2.3.4"
    assert imaging.decode_bytes(data, "x.dcm").frames[0].shape == (2, 2)


def _with(extra: bytes, photometric: bytes = b"MONOCHROME2 ") -> bytes:
    """The 2x2 image with `extra` elements inserted in tag order before Pixel Data."""
    body = image_body(photometric=photometric)
    at = body.index(b"\xe0\x7f\x10\x00")
    return part10(EXPLICIT_LE, body[:at] + extra + body[at:])


@pytest.mark.parametrize(
    ("slope", "intercept"),
    [(b"1 ", b"x "), (b"x ", b"0 "), (b"2\\3\\4 ", b"0 ")],
    ids=["intercept not a number", "slope not a number", "slope multi-valued"],
)
def test_a_rescale_that_is_not_a_number(slope: bytes, intercept: bytes) -> None:
    # Crashers 3-5 (test_fuzz_dicom_decode, seed: MR_small.dcm with a rescale, its
    # RescaleSlope/Intercept overwritten): pydicom's apply_modality_lut multiplied the pixels
    # by a str, None or a list: numpy's UFuncNoLoopError / UFuncOutputCastingError /
    # TypeError. Fixed in dicom._modality: the values are read as single finite numbers.
    extra = element(0x0028, 0x1052, b"DS", intercept) + element(0x0028, 0x1053, b"DS", slope)
    with pytest.raises(CorruptFileError, match="Rescale"):
        imaging.decode_bytes(_with(extra), "x.dcm")


def test_an_empty_rescale_means_identity() -> None:
    extra = element(0x0028, 0x1052, b"DS", b"") + element(0x0028, 0x1053, b"DS", b"")
    plain = imaging.decode_bytes(part10(EXPLICIT_LE, image_body()), "x.dcm")
    assert (imaging.decode_bytes(_with(extra), "x.dcm").frames[0] == plain.frames[0]).all()


def _palette(bits: int, with_data: bool) -> bytes:
    extra = b""
    for elem in (0x1101, 0x1102, 0x1103):  # Red, Green, Blue descriptors: 256 entries from 0
        extra += element(0x0028, elem, b"US", struct.pack("<3H", 256, 0, bits))
    if with_data:
        for elem in (0x1201, 0x1202, 0x1203):
            extra += element(0x0028, elem, b"OW", bytes(512))
    return _with(extra, photometric=b"PALETTE COLOR ")


@pytest.mark.parametrize(("bits", "with_data"), [(0, True), (8, False)])
def test_a_palette_with_a_broken_lut(bits: int, with_data: bool) -> None:
    # Crashers 6-7 (test_fuzz_dicom_decode, seed: pydicom's OBXXXX1A palette cut to 16x16):
    # a descriptor of 0 bits made pydicom's apply_color_lut ask numpy for 'uint0'
    # (TypeError), and missing LUT data made it call len(None) (TypeError). Fixed in
    # dicom._colour_to_unit: descriptors checked (1..16 bits), pydicom's LUT errors mapped.
    with pytest.raises(CorruptFileError, match="palette"):
        imaging.decode_bytes(_palette(bits, with_data), "x.dcm")


def test_lut_data_outside_a_sequence_without_its_descriptor() -> None:
    # Crasher 8, brought in by _settle's eager conversion and caught by the fuzzer before it
    # was committed (test_fuzz_dicom_decode, seed MR_small.dcm, an element's tag rewritten to
    # LUTData (0028,3006), VR UN): converting it made pydicom resolve its ambiguous VR (US or
    # OW) from LUTDescriptor, which is not there: AttributeError. Fixed: AttributeError is
    # one of dicom_header.PARSE_ERRORS, so the public element is CorruptFileError.
    extra = element(0x0028, 0x3006, b"UN", b"\x00\x01\x00\x02")
    data = _with(extra)
    with pytest.raises(CorruptFileError, match=r"\(0028,3006\) unreadable"):
        imaging.decode_bytes(data, "x.dcm")


def test_a_grayscale_image_with_three_samples_per_pixel() -> None:
    # Crasher 9 (test_fuzz_dicom_decode, 20,000-example run, seed SC_rgb_jpeg_gdcm.dcm with
    # its photometric interpretation rewritten to a grayscale one): no exception, but a
    # Decoded whose frame was (100, 100, 3), not the 2-D grayscale every caller relies on.
    # Fixed in dicom._check_samples: MONOCHROME1/2 and PALETTE COLOR need one sample.
    data = part10(EXPLICIT_LE, image_body(samples=3))
    with pytest.raises(CorruptFileError, match="MONOCHROME2 image with 3 samples per pixel"):
        imaging.decode_bytes(data, "x.dcm")


def _voi_lut(first_mapped: int) -> bytes:
    """The 2x2 image with a VOI LUT Sequence of one 256-entry, 8-bit LUT."""
    item = element(0x0028, 0x3002, b"US", struct.pack("<3H", 256, first_mapped, 8))
    item += element(0x0028, 0x3006, b"OW", struct.pack("<256H", *range(256)))
    items = struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item
    return _with(element(0x0028, 0x3010, b"SQ", items))


def test_a_voi_lut_whose_first_mapped_value_does_not_fit_the_pixels() -> None:
    # Crasher 10 (make fuzz, 20,000-example run; test_fuzz_dicom_decode, seed pydicom's
    # vlut_04 cut to 16x16, LUTDescriptor rewritten to first mapped value 65535 on 8-bit
    # pixels): pydicom's apply_voi_lut computed `arr - first_map` in uint8: OverflowError.
    # Fixed: OverflowError is one of dicom.LUT_ERRORS, mapped to CorruptFileError.
    assert imaging.decode_bytes(_voi_lut(0), "x.dcm").info.windowing == "voi_lut"
    with pytest.raises(CorruptFileError, match="VOI LUT unusable"):
        imaging.decode_bytes(_voi_lut(65535), "x.dcm")
