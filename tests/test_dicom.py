"""Tests of helpers.xray.dicom on real DICOM files written here with pydicom (no fixtures from elsewhere)."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, get_encoder
from pydicom.tag import Tag

from helpers.xray.dicom import DicomReadError, parse_age, pixels_to_unit, read_metadata, read_xray


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = uid.ExplicitVRLittleEndian,
    encapsulated: bytes | None = None,
    raw_ds: dict[str, bytes] | None = None,
    **elements,
) -> Path:
    """Write a single-frame DICOM file: native ``pixels`` (uint8/uint16/int16) or an encapsulated frame.

    ``raw_ds``: DS elements written as the given text, unchecked (values pydicom would refuse to set).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = path.stem, "CR"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(pixels.dtype.kind == "i")
        ds.PixelData = pixels.tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    for key, text in (raw_ds or {}).items():
        ds[Tag(key)] = RawDataElement(Tag(key), "DS", len(text), text, 0, False, True)
    if encapsulated is not None:
        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    if transfer_syntax != uid.ExplicitVRLittleEndian and encapsulated is None:
        ds.compress(transfer_syntax, encoding_plugin="pylibjpeg" if "4.9" in transfer_syntax else "")
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_bytes(pixels: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def ramp(height: int, width: int, top: int, dtype=np.uint16) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) * top // (height * width - 1)).astype(dtype)


# --- pixel handling ------------------------------------------------------------------------------------


def test_8bit_monochrome2_is_stored_over_255(tmp_path):
    pixels = ramp(20, 30, 255, np.uint8)
    out = read_xray(write_dicom(tmp_path / "a.dcm", pixels))
    assert out.dtype == np.float32 and out.shape == (20, 30)
    np.testing.assert_array_equal(out, (pixels / 255.0).astype(np.float32))


def test_monochrome1_is_inverted(tmp_path):
    pixels = ramp(16, 16, 255, np.uint8)
    out = read_xray(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(out, 1.0 - pixels / 255.0, atol=1e-7)
    assert out[0, 0] == 1.0 and out[-1, -1] == 0.0  # stored 0 is white (dense) in MONOCHROME1


def test_12bit_cr_rescale_then_window_known_values(tmp_path):
    # v = 2 * stored - 1024; LINEAR window c=1000.5, w=1001 maps v -> (v - 1000) / 1000 + 0.5, clipped.
    stored = np.array([[762, 887, 1012], [1262, 0, 4095]], np.uint16)  # v = 500, 750, 1000, 1500, -1024, 7166
    path = write_dicom(
        tmp_path / "cr12.dcm",
        stored,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=1000.5,
        WindowWidth=1001,
    )
    np.testing.assert_allclose(read_xray(path), [[0.0, 0.25, 0.5], [1.0, 0.0, 1.0]], atol=1e-6)


def test_window_then_monochrome1_inverts_after_the_window(tmp_path):
    stored = np.array([[500, 750, 1000, 1500]], np.uint16)
    path = write_dicom(
        tmp_path / "w1.dcm",
        stored,
        bits_stored=12,
        photometric="MONOCHROME1",
        WindowCenter=1000.5,
        WindowWidth=1001,
    )
    np.testing.assert_allclose(read_xray(path), [[1.0, 0.75, 0.5, 0.0]], atol=1e-6)


def test_16bit_rescale_without_window_scales_by_stored_range_not_min_max(tmp_path):
    stored = np.array([[0, 16384, 32768], [40000, 49152, 65535]], np.uint16)
    path = write_dicom(tmp_path / "cr16.dcm", stored, RescaleSlope=0.5, RescaleIntercept=100)
    np.testing.assert_allclose(read_xray(path), stored / 65535.0, atol=1e-6)
    narrow = np.array([[1000, 1100], [1200, 1300]], np.uint16)  # a per-image min/max would stretch this
    out = read_xray(write_dicom(tmp_path / "narrow.dcm", narrow, bits_stored=12))
    np.testing.assert_allclose(out, narrow / 4095.0, atol=1e-6)


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_unsigned_bit_depths(tmp_path, bits):
    top = 2**bits - 1
    stored = np.array([[0, top // 2, top]], np.uint16)
    np.testing.assert_allclose(
        read_xray(write_dicom(tmp_path / "b.dcm", stored, bits_stored=bits)),
        [[0.0, (top // 2) / top, 1.0]],
        atol=1e-6,
    )


@pytest.mark.parametrize("bits", [12, 16])
def test_signed_data(tmp_path, bits):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    stored = np.array([[lo, -1, 0, hi]], np.int16)
    out = read_xray(write_dicom(tmp_path / "s.dcm", stored, bits_stored=bits))
    np.testing.assert_allclose(out, (stored.astype(np.float64) - lo) / (hi - lo), atol=1e-6)


def test_voi_lut_sequence_uses_its_output_range(tmp_path):
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]  # 4 entries, first stored value 0, 8-bit output
    lut.LUTData = [0, 51, 204, 255]
    lut["LUTData"].VR = "US"
    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3, 9]], np.uint8), VOILUTSequence=[lut])
    np.testing.assert_allclose(read_xray(path), [[0.0, 0.2, 0.8, 1.0, 1.0]], atol=1e-6)


def test_non_square(tmp_path):
    pixels = ramp(30, 50, 4095)
    out = read_xray(write_dicom(tmp_path / "wide.dcm", pixels, bits_stored=12))
    assert out.shape == (30, 50)
    np.testing.assert_allclose(out, pixels / 4095.0, atol=1e-6)


# --- compressed transfer syntaxes ---------------------------------------------------------------------


def test_jpeg_baseline_matches_pillow_decode(tmp_path):
    yy, xx = np.mgrid[0:64, 0:48]
    pixels = (127 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.uint8)  # smooth: small JPEG error
    data = jpeg_bytes(pixels)
    path = write_dicom(tmp_path / "jpeg.dcm", pixels, transfer_syntax=uid.JPEGBaseline8Bit, encapsulated=data)
    out = read_xray(path)
    reference = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0
    assert out.shape == (64, 48)
    assert np.abs(out - reference).max() <= 2 / 255  # libjpeg builds may differ by a rounding step
    assert np.abs(out - pixels / 255.0).mean() < 0.01


@pytest.mark.skipif(not get_encoder(uid.JPEG2000Lossless).is_available, reason="no JPEG 2000 encoder")
def test_jpeg2000_lossless_is_exact(tmp_path):
    pixels = ramp(64, 48, 4095)  # openjpeg's default 6 resolutions need at least 32 pixels a side
    path = write_dicom(tmp_path / "j2k.dcm", pixels, bits_stored=12, transfer_syntax=uid.JPEG2000Lossless)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == uid.JPEG2000Lossless
    np.testing.assert_allclose(read_xray(path), pixels / 4095.0, atol=1e-6)


def test_rle_lossless_is_exact(tmp_path):
    pixels = ramp(20, 20, 65535)
    path = write_dicom(tmp_path / "rle.dcm", pixels, transfer_syntax=uid.RLELossless)
    np.testing.assert_allclose(read_xray(path), pixels / 65535.0, atol=1e-6)


@pytest.mark.parametrize(
    ("syntax", "package"),
    [
        (uid.JPEGLSLossless, "pip install pylibjpeg pylibjpeg-libjpeg"),
        (uid.JPEGLosslessSV1, "pip install pylibjpeg pylibjpeg-libjpeg"),
        (uid.JPEG2000Lossless, "pip install pylibjpeg pylibjpeg-openjpeg"),
    ],
)
def test_missing_decoder_names_syntax_and_package(tmp_path, monkeypatch, syntax, package):
    # No JPEG-LS encoder is installed, so the frame is junk: the check must fail before decoding.
    path = write_dicom(
        tmp_path / "c.dcm",
        np.zeros((8, 8), np.uint16),
        bits_stored=12,
        transfer_syntax=syntax,
        encapsulated=b"\xff\xd8junk",
    )
    monkeypatch.setattr(get_decoder(syntax), "_available", {})  # as if no plugin were installed
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert str(info.value) == (
        f"{path}: pixel data compressed as {syntax.name} ({syntax}) and no installed package decodes it; "
        f"install a decoder with '{package}'"
    )


def test_undecodable_compressed_frame(tmp_path):
    path = write_dicom(
        tmp_path / "bad.dcm",
        np.zeros((8, 8), np.uint16),
        bits_stored=12,
        transfer_syntax=uid.JPEGLSLossless,
        encapsulated=b"\xff\xd8junk",
    )
    with pytest.raises(DicomReadError, match=r"bad\.dcm: can't decode the pixel data \(JPEG-LS Lossless"):
        read_xray(path)


# --- scaling headers that make no sense -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("elements", "raw_ds", "shown"),
    [
        ({"RescaleSlope": "NaN", "RescaleIntercept": 0}, {}, "RescaleSlope='NaN' (not a finite number)"),
        ({"RescaleSlope": "inf", "RescaleIntercept": 0}, {}, "RescaleSlope='inf' (not a finite number)"),
        ({"RescaleSlope": "1e400", "RescaleIntercept": 0}, {}, "RescaleSlope='1e400' (not a finite number)"),
        (
            {"RescaleSlope": 1, "RescaleIntercept": "-inf"},
            {},
            "RescaleIntercept='-inf' (not a finite number)",
        ),
        ({"RescaleIntercept": 0}, {"RescaleSlope": b"abc "}, "RescaleSlope='abc' (not a number)"),
        ({"RescaleSlope": 0, "RescaleIntercept": 5}, {}, "RescaleSlope='0.0' (a slope of 0 maps every pixel"),
        (
            {"RescaleSlope": [1, 2], "RescaleIntercept": 0},
            {},
            "RescaleSlope='1.0\\2.0' (expected one number)",
        ),
        (
            {"WindowCenter": 100, "WindowWidth": 0},
            {},
            "WindowWidth='0.0' (a width must be at least 1 for LINEAR",
        ),
        ({"WindowCenter": "NaN", "WindowWidth": 10}, {}, "WindowCenter='NaN' (not a finite number)"),
        ({"WindowCenter": 100}, {"WindowWidth": b"10\\wide "}, "WindowWidth='10\\wide' (not a number)"),
        (
            {"WindowCenter": 100, "WindowWidth": -3, "VOILUTFunction": "LINEAR_EXACT"},
            {},
            "WindowWidth='-3.0' (a width must be above 0)",
        ),
        (
            {"WindowCenter": 100, "WindowWidth": 30, "VOILUTFunction": "CUBIC"},
            {},
            "VOILUTFunction='CUBIC' (expected LINEAR, LINEAR_EXACT or SIGMOID)",
        ),
    ],
)
def test_bad_scaling_headers_are_refused_naming_file_header_and_value(tmp_path, elements, raw_ds, shown):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid DS values it is asked to write
        path = write_dicom(tmp_path / "bad.dcm", ramp(8, 8, 4095), bits_stored=12, raw_ds=raw_ds, **elements)
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert str(info.value).startswith(f"{path}: bad scaling header {shown}")


def test_an_image_that_comes_out_non_finite_is_refused(tmp_path):
    # Each header value is a finite number, but 4095 * 1e300 is not a float32 (nor the range of 1e308 * 4095).
    for slope in (1e38, 1e300, 1e308):
        path = write_dicom(
            tmp_path / "huge.dcm", ramp(8, 8, 4095), bits_stored=12, RescaleSlope=slope, RescaleIntercept=0
        )
        with pytest.raises(DicomReadError, match=r"huge\.dcm: the image is not finite after rescaling"):
            read_xray(path)


def test_pixels_to_unit_checks_an_in_memory_header_too():
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 12, 0
    ds.RescaleSlope, ds.RescaleIntercept = 0, 0
    with pytest.raises(DicomReadError, match=r"^x\.dcm: bad scaling header RescaleSlope="):
        pixels_to_unit(np.zeros((2, 2), np.uint16), ds, "x.dcm")


# --- files that can't be read -------------------------------------------------------------------------


def test_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patientId,Target\n" * 20)
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert str(info.value) == f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(DicomReadError, match="nowhere.dcm: no such file"):
        read_xray(tmp_path / "nowhere.dcm")
    with pytest.raises(DicomReadError, match="can't open it"):
        read_xray(tmp_path)  # a folder


@pytest.mark.parametrize("keep", [0.95, 0.5, 0.3])
def test_truncated(tmp_path, keep):
    full = write_dicom(tmp_path / "full.dcm", ramp(32, 32, 4095), bits_stored=12).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(full[: int(len(full) * keep)])
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert str(info.value) == f"{path}: truncated DICOM file (it ends in the middle of a data element)"


def test_truncated_compressed(tmp_path):
    pixels = np.full((32, 32), 90, np.uint8)
    full = write_dicom(
        tmp_path / "j.dcm", pixels, transfer_syntax=uid.JPEGBaseline8Bit, encapsulated=jpeg_bytes(pixels)
    ).read_bytes()
    path = tmp_path / "jcut.dcm"
    path.write_bytes(full[:-40])
    with pytest.raises(DicomReadError, match=r"jcut\.dcm: truncated DICOM file"):
        read_xray(path)


def test_no_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", None)
    ds = pydicom.dcmread(path)  # a structured report: a complete DICOM file that holds no image
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.BasicTextSRStorage
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert (
        str(info.value) == f"{path}: no pixel data (no PixelData element; SOP class {uid.BasicTextSRStorage})"
    )


def test_image_cut_exactly_between_elements_is_truncated(tmp_path):
    # An image file cut at an element boundary parses without a short read; it must still say "truncated".
    path = write_dicom(tmp_path / "cut_at_boundary.dcm", None)
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert str(info.value) == (
        f"{path}: truncated DICOM file (a Computed Radiography Image Storage file that ends before its pixel data)"
    )


def test_every_cut_of_an_image_file_says_truncated(tmp_path):
    full = write_dicom(tmp_path / "full.dcm", ramp(32, 32, 4095), bits_stored=12).read_bytes()
    path = tmp_path / "cut.dcm"
    reasons = set()
    for n in range(140, len(full), 7):  # past the preamble and 'DICM' marker, every 7th length
        path.write_bytes(full[:n])
        with pytest.raises(DicomReadError) as info:
            read_xray(path)
        reasons.add(str(info.value).removeprefix(f"{path}: ").split(" (")[0])
    assert reasons <= {"truncated DICOM file", "truncated pixel data", "corrupt DICOM file"}, reasons


def test_colour(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", SamplesPerPixel=3, PlanarConfiguration=0)
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert str(info.value) == (
        f"{path}: colour image (SamplesPerPixel=3, PhotometricInterpretation=RGB); "
        "read_xray reads single-channel grayscale radiographs"
    )


def test_multi_frame(tmp_path):
    frames = np.zeros((3, 8, 8), np.uint8)
    path = write_dicom(tmp_path / "cine.dcm", frames[0], NumberOfFrames=3, PixelData=frames.tobytes())
    with pytest.raises(DicomReadError) as info:
        read_xray(path)
    assert str(info.value) == f"{path}: multi-frame image (3 frames); read_xray reads one frame"


# --- header only --------------------------------------------------------------------------------------


def test_read_metadata_without_pixels(tmp_path):
    full = write_dicom(
        tmp_path / "p.dcm",
        ramp(30, 40, 255, np.uint8),
        PatientAge="051Y",
        PatientSex="F",
        ViewPosition="PA",
        PixelSpacing=[0.143, 0.15],
    ).read_bytes()
    path = tmp_path / "p-cut.dcm"
    path.write_bytes(full[:-200])  # the pixels are damaged; the header alone must still read
    meta = read_metadata(path)
    assert meta == {
        "patientId": "p",
        "age": 51.0,
        "sex": "F",
        "view_position": "PA",
        "rows": 30,
        "columns": 40,
        "pixel_spacing": (0.143, 0.15),
        "photometric": "MONOCHROME2",
        "bits_stored": 8,
        "transfer_syntax": uid.ExplicitVRLittleEndian,
    }
    with pytest.raises(DicomReadError, match="truncated"):
        read_xray(path)


def test_read_metadata_missing_fields(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that 'unknown' is not a valid AS value: the point
        path = write_dicom(tmp_path / "q.dcm", np.zeros((4, 6), np.uint8), PatientAge="unknown")
    meta = read_metadata(path)
    assert math.isnan(meta["age"]) and meta["sex"] == "" and meta["view_position"] == ""
    assert all(math.isnan(v) for v in meta["pixel_spacing"])
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        read_metadata(Path(__file__))


@pytest.mark.parametrize(
    ("value", "years"),
    [("051Y", 51.0), ("51", 51.0), (" 7 ", 7.0), ("006M", 0.5), ("014D", 14 / 365.25), ("002W", 14 / 365.25)],
)
def test_parse_age(value, years):
    assert parse_age(value) == pytest.approx(years)


@pytest.mark.parametrize("value", [None, "", "Y", "abc", "51 years", "-3"])
def test_parse_age_unparseable_is_nan(value):
    assert math.isnan(parse_age(value))
