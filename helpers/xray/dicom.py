"""Read a chest radiograph from a DICOM file into a float image, and its header without the pixels.

Taught in ``notebooks/01_data_preparation.ipynb`` (DICOM anatomy and pixel handling).

The pixel pipeline follows the DICOM standard's order: stored values -> modality LUT (RescaleSlope and
RescaleIntercept, or a Modality LUT Sequence) -> VOI LUT (a window or a VOI LUT Sequence) -> presentation
(MONOCHROME1 is inverted so that bright always means dense). pydicom does each step
(:func:`pydicom.pixels.apply_modality_lut`, :func:`pydicom.pixels.apply_voi_lut`); this module decides the
output range and says clearly why a file can't be read.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

_OPENJPEG = "pip install pylibjpeg pylibjpeg-openjpeg"
_LIBJPEG = "pip install pylibjpeg pylibjpeg-libjpeg"
#: The package that decodes each compressed transfer syntax (pydicom's documented plugins).
DECODER_PACKAGES: dict[str, str] = {
    uid.JPEGBaseline8Bit: "pip install pillow",
    uid.JPEGExtended12Bit: _LIBJPEG,
    uid.JPEGLossless: _LIBJPEG,
    uid.JPEGLosslessSV1: _LIBJPEG,
    uid.JPEGLSLossless: _LIBJPEG,
    uid.JPEGLSNearLossless: _LIBJPEG,
    uid.JPEG2000Lossless: _OPENJPEG,
    uid.JPEG2000: _OPENJPEG,
    uid.HTJ2KLossless: _OPENJPEG,
    uid.HTJ2KLosslessRPCL: _OPENJPEG,
    uid.HTJ2K: _OPENJPEG,
}


class DicomReadError(ValueError):
    """A DICOM file that :func:`read_xray` or :func:`read_metadata` can't read; the message names the file."""


class _ShortReadWatcher:
    """File wrapper that notices a read returning fewer bytes than asked for: the file is truncated."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.name = fh.name
        self.short_read = False

    def read(self, size: int | None = -1) -> bytes:
        data = self._fh.read(size)
        if size is not None and size > 0 and 0 < len(data) < size:
            self.short_read = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()


def read_dataset(path: str | Path, stop_before_pixels: bool = False) -> Dataset:
    """Parse a DICOM file with pydicom, raising :class:`DicomReadError` if it is not DICOM or is truncated.

    pydicom itself stops quietly at the end of a short file; the wrapper here notices the short read.
    Taught in ``notebooks/01_data_preparation.ipynb`` (DICOM anatomy).
    """
    path = Path(path)
    truncated = f"{path}: truncated DICOM file (it ends in the middle of a data element)"
    try:
        fh = open(path, "rb")
    except FileNotFoundError as err:
        raise DicomReadError(f"{path}: no such file") from err
    except OSError as err:
        raise DicomReadError(f"{path}: can't open it ({err.strerror})") from err
    with fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on an early end of file; we raise instead
        watcher = _ShortReadWatcher(fh)
        try:
            ds = pydicom.dcmread(watcher, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError as err:
            raise DicomReadError(
                f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
            ) from err
        except Exception as err:  # pydicom raises struct.error, BytesLengthException, ... on damaged files
            if watcher.short_read:
                raise DicomReadError(truncated) from err
            raise DicomReadError(f"{path}: corrupt DICOM file ({type(err).__name__}: {err})") from err
    if watcher.short_read:
        raise DicomReadError(truncated)
    return ds


def decoder_install_hint(transfer_syntax: str) -> str:
    """What to install to decode ``transfer_syntax``, e.g. ``'pip install pylibjpeg pylibjpeg-openjpeg'``.

    Taught in ``notebooks/01_data_preparation.ipynb`` (transfer syntaxes and decoders).
    """
    return DECODER_PACKAGES.get(str(transfer_syntax), "no known pip package")


def check_pixels_readable(ds: Dataset, path: str | Path) -> str:
    """Check that ``ds`` holds one grayscale frame that pydicom can decode here; returns the transfer syntax.

    Raises :class:`DicomReadError` naming ``path`` and the reason: no pixel data, colour, multi-frame,
    unsupported bit depth, or a compression with no installed decoder (with the pip command that adds one).
    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    if "PixelData" not in ds:
        # A file cut exactly between two data elements parses without a short read. Every image storage
        # class requires pixel data, and every DICOM file names its SOP class, so a file that stops before
        # either is a truncated file, not a complete file without an image.
        meta = getattr(ds, "file_meta", None) or Dataset()
        sop = ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")
        if sop is None:
            raise DicomReadError(f"{path}: truncated DICOM file (it ends before it says what it holds)")
        name = uid.UID(str(sop)).name
        if "Image Storage" in name:
            raise DicomReadError(
                f"{path}: truncated DICOM file (a {name} file that ends before its pixel data)"
            )
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f"only {other[0]}, which X-ray images never use" if other else "no PixelData element"
        raise DicomReadError(f"{path}: no pixel data ({what}; SOP class {sop})")
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomReadError(
            f"{path}: colour image (SamplesPerPixel={samples}, PhotometricInterpretation={photometric}); "
            "read_xray reads single-channel grayscale radiographs"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DicomReadError(f"{path}: multi-frame image ({frames} frames); read_xray reads one frame")
    bits_allocated = int(ds.get("BitsAllocated", 0))
    bits_stored = int(ds.get("BitsStored", bits_allocated))
    if bits_allocated not in (8, 16) or not 1 <= bits_stored <= bits_allocated:
        raise DicomReadError(
            f"{path}: unsupported bit depth (BitsAllocated={bits_allocated}, BitsStored={bits_stored}); "
            "read_xray handles 8- to 16-bit data"
        )
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        raise DicomReadError(
            f"{path}: the file meta has no Transfer Syntax UID, so the pixels can't be decoded"
        )
    ts = uid.UID(str(ts))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as err:
        raise DicomReadError(
            f"{path}: transfer syntax {ts} ({ts.name}) is not supported by pydicom's pixel decoders"
        ) from err
    if not decoder.is_available:
        raise DicomReadError(
            f"{path}: pixel data compressed as {ts.name} ({ts}) and no installed package decodes it; "
            f"install a decoder with '{decoder_install_hint(ts)}'"
        )
    check_scaling(ds, path)
    return str(ts)


def _text(value: Any) -> str:
    """A header value as the file shows it: several values joined by a backslash."""
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return "\\".join("" if v is None else str(v) for v in values)


def _header_numbers(ds: Dataset, key: str, path: str | Path) -> list[float]:
    """The numbers of a numeric header element (a DS may hold several); [] if it is absent or empty.

    Raises :class:`DicomReadError` naming the file, the element and its value for text or a non-finite
    number.
    """
    if key not in ds:
        return []
    try:
        value = ds[key].value
    except Exception as err:  # pydicom converts the stored text on first access
        raise DicomReadError(f"{path}: bad scaling header {key} (pydicom can't read it: {err})") from err
    if value is None or value == "":
        return []
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    try:
        numbers = [float(str(v)) for v in values]  # str: an invalid DS keeps its text
    except ValueError:
        raise DicomReadError(f"{path}: bad scaling header {key}='{_text(value)}' (not a number)") from None
    if not all(math.isfinite(n) for n in numbers):
        raise DicomReadError(f"{path}: bad scaling header {key}='{_text(value)}' (not a finite number)")
    return numbers


def _bad_header(path: str | Path, ds: Dataset, key: str, why: str) -> DicomReadError:
    """The error for a scaling header that makes no sense: the file, the header, its value and why."""
    return DicomReadError(f"{path}: bad scaling header {key}='{_text(ds[key].value)}' ({why})")


def check_scaling(ds: Dataset, path: str | Path = "dataset") -> None:
    """Refuse scaling headers that make no sense with a :class:`DicomReadError` naming file, header, value.

    RescaleSlope and RescaleIntercept: one finite number each, the slope not 0. WindowCenter and
    WindowWidth: finite numbers, every width > 0 (at least 1 for the default LINEAR function), a known
    VOILUTFunction. Called before any pixel is scaled (:func:`check_pixels_readable`, :func:`pixels_to_unit`).
    """
    for key in ("RescaleSlope", "RescaleIntercept"):
        numbers = _header_numbers(ds, key, path)
        if key in ds and len(numbers) != 1:
            raise _bad_header(path, ds, key, "expected one number")
        if key == "RescaleSlope" and numbers == [0.0]:
            raise _bad_header(path, ds, key, "a slope of 0 maps every pixel to one value")
    centers = _header_numbers(ds, "WindowCenter", path)
    widths = _header_numbers(ds, "WindowWidth", path)
    if not (centers and widths):
        return  # no window: pixels_to_unit scales by the stored range
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise _bad_header(path, ds, "VOILUTFunction", "expected LINEAR, LINEAR_EXACT or SIGMOID")
    if function == "LINEAR" and min(widths) < 1:
        raise _bad_header(path, ds, "WindowWidth", "a width must be at least 1 for LINEAR windowing")
    if min(widths) <= 0:
        raise _bad_header(path, ds, "WindowWidth", "a width must be above 0")


def _voi_output_range(ds: Dataset) -> tuple[float, float] | None:
    """The output range of the VOI step that :func:`apply_voi_lut` applies, or None if there is none."""
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq and None not in (voi_seq[0].get("LUTDescriptor"), voi_seq[0].get("LUTData")):
        return 0.0, float(2 ** int(voi_seq[0].LUTDescriptor[2]) - 1)  # PS3.3 C.11.2.1.1: 0..2^n-1
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        ends = apply_voi_lut(np.array([-np.inf, np.inf]), ds)  # windows clip: the ends give the range
        return float(np.min(ends)), float(np.max(ends))
    return None


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """The output range of the modality LUT over every value the stored bits can hold."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        ends = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        ends = np.array([0, 2**bits - 1])
    mapped = np.asarray(apply_modality_lut(ends, ds), dtype=np.float64)
    return float(mapped.min()), float(mapped.max())


def _apply_luts(raw: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float]:
    """Modality LUT, then the VOI LUT or window: -> (values, low end, high end of their output range)."""
    values = apply_modality_lut(raw, ds)
    out_range = _voi_output_range(ds)
    if out_range is not None:
        if ds.get("VOILUTSequence") and not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # a VOI LUT is indexed by integers
        values = apply_voi_lut(values, ds)
    else:
        out_range = _stored_range(ds)
    return values, *out_range


def pixels_to_unit(raw: np.ndarray, ds: Dataset, path: str | Path = "dataset") -> np.ndarray:
    """Stored pixel values (H x W) -> float32 H x W in [0, 1], bright = dense.

    Applies the modality LUT, then the VOI LUT or window; scales by the VOI output range when there is a
    VOI step, else by the range the stored bits can hold after the modality LUT; inverts MONOCHROME1.
    Raises :class:`DicomReadError` naming ``path`` for scaling headers that make no sense
    (:func:`check_scaling`) and for an image that comes out non-finite. Taught in
    ``notebooks/01_data_preparation.ipynb`` (pixel handling).
    """
    check_scaling(ds, path)
    try:
        with np.errstate(all="ignore"):  # overflow is caught below as a non-finite result
            values, lo, hi = _apply_luts(raw, ds)
    except (ValueError, TypeError, ArithmeticError, IndexError, KeyError, AttributeError) as err:
        raise DicomReadError(
            f"{path}: can't apply the modality/VOI LUT ({type(err).__name__}: {err})"
        ) from err
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        lo, hi = hi, lo  # invert: the largest value is the least dense
    with np.errstate(all="ignore"):
        unit = np.asarray(values, dtype=np.float32) - np.float32(lo)  # float32 holds 16-bit values exactly
        span = np.float32(hi - lo if hi != lo else 1.0)
        unit /= span
    if not (np.isfinite(span) and np.isfinite(unit).all()):
        raise DicomReadError(
            f"{path}: the image is not finite after rescaling (output range {lo:g} to {hi:g}; "
            f"RescaleSlope={ds.get('RescaleSlope')}, RescaleIntercept={ds.get('RescaleIntercept')})"
        )
    return np.clip(unit, 0.0, 1.0, out=unit)


def read_xray(path: str | Path) -> np.ndarray:
    """Read a single-frame grayscale DICOM radiograph: -> float32 H x W in [0, 1], bright = dense.

    Handles 8- to 16-bit data (BitsStored 8/10/12/14/16, signed or unsigned), non-square images,
    MONOCHROME1 (inverted), uncompressed, RLE, JPEG Baseline (Pillow), and JPEG 2000 / JPEG-LS /
    JPEG Lossless when pylibjpeg-openjpeg / pylibjpeg-libjpeg are installed.

    Scaling: by the VOI window (or VOI LUT) output range when the file has one, else by the full range the
    stored bits can hold (after RescaleSlope/Intercept) -- never by this image's own min/max. A fixed mapping
    keeps intensities comparable between images (a dense image stays brighter than a lucent one), is not
    thrown off by a burned-in label or collimator edge, and makes the dataset mean/std meaningful. For the
    RSNA files (8-bit, no window) it is exactly ``stored / 255``, so nothing is lost going back to uint8.

    Raises :class:`DicomReadError` (a ``ValueError``) naming the file and the reason. Taught in
    ``notebooks/01_data_preparation.ipynb``.
    """
    ds = read_dataset(path)
    return decode_unit(ds, path)


def decode_unit(ds: Dataset, path: str | Path) -> np.ndarray:
    """Check and decode the pixels of a parsed dataset: -> float32 H x W in [0, 1] (see :func:`read_xray`).

    Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    ts = check_pixels_readable(ds, path)
    if ts == uid.JPEGBaseline8Bit and "pillow" in get_decoder(ts).available_plugins:
        ds.pixel_array_options(decoding_plugin="pillow")  # libjpeg-turbo: ~3x faster than pylibjpeg here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ds.pixel_array
    except Exception as err:  # pydicom and its plugins raise many types for bad pixel data
        reason = "truncated pixel data" if "less than expected" in str(err) else "can't decode the pixel data"
        raise DicomReadError(f"{path}: {reason} ({uid.UID(ts).name}: {err})") from err
    if raw.ndim != 2:
        raise DicomReadError(
            f"{path}: expected one H x W grayscale frame, decoded an array of shape {raw.shape}"
        )
    return pixels_to_unit(raw, ds, path)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"": 1.0, "Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def parse_age(value: Any) -> float:
    """A DICOM PatientAge in years: ``'051Y'`` -> 51.0, ``'51'`` -> 51.0, ``'006M'`` -> 0.5; else NaN.

    Taught in ``notebooks/01_data_preparation.ipynb`` (metadata EDA: RSNA writes plain ``'51'``).
    """
    if value is None:
        return math.nan
    match = _AGE.match(str(value))
    if not match:
        return math.nan
    return float(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]


def _spacing(ds: Dataset) -> tuple[float, float]:
    """(row, column) pixel spacing in mm; NaN when absent or not two numbers."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(key)
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):  # an unparseable spacing is unknown, like a missing one
            continue
    return math.nan, math.nan


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The header facts of a DICOM file without decoding its pixels (``stop_before_pixels``).

    Returns ``patientId``, ``age`` (years, float, NaN if missing or unparseable), ``sex``,
    ``view_position``, ``rows``, ``columns``, ``pixel_spacing`` (row, column spacing in mm; NaN if absent),
    ``photometric``, ``bits_stored`` and ``transfer_syntax`` (UID string). Raises :class:`DicomReadError`
    for a file that is not DICOM or is truncated. Taught in ``notebooks/01_data_preparation.ipynb``.
    """
    ds = read_dataset(path, stop_before_pixels=True)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return {
        "patientId": str(ds.get("PatientID", "")),
        "age": parse_age(ds.get("PatientAge")),
        "sex": str(ds.get("PatientSex", "") or ""),
        "view_position": str(ds.get("ViewPosition", "") or ""),
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "pixel_spacing": _spacing(ds),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "transfer_syntax": str(ts) if ts is not None else "",
    }
