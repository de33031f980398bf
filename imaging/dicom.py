"""DICOM chest X-rays -> 8-bit grayscale PNG, and the header fields safe to keep.

Hospitals export X-rays as DICOM, which neither TensorFlow nor the model can decode, so
ingestion converts them once: modality LUT (rescale slope/intercept), then the VOI LUT or
window the file asks for, MONOCHROME1 inverted so that bone is bright, and the result
stretched to the full 8-bit range (12- and 16-bit data would otherwise be nearly black).
Compressed transfer syntaxes are decoded by pydicom's pylibjpeg plugins (JPEG baseline,
extended and lossless, JPEG-LS, JPEG 2000, RLE).

Only the view, an age group and the sex leave this module: names, ids, dates, institutions
and every other identifying tag are never read out.
"""
import io
import re
from typing import Dict, Tuple

import numpy as np
import pydicom
from PIL import Image
from pydicom import pixels
from pydicom.errors import InvalidDicomError

from models import features

# Part 10 files: a 128-byte preamble, then this magic.
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
ADULT_AGE_YEARS = 18
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER_UNIT = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file, whatever its name or extension."""
    return data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)] == DICOM_MAGIC


def _read(data: bytes, pixel_data: bool) -> pydicom.Dataset:
    if not is_dicom(data):
        raise ValueError("not a DICOM file (no 'DICM' marker after the 128-byte preamble)")
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixel_data)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"unreadable DICOM header: {error}") from error


def _to_grayscale(dataset: pydicom.Dataset) -> np.ndarray:
    """Stored pixel values -> float luminance, after modality and VOI transforms."""
    try:
        array = dataset.pixel_array
    except Exception as error:  # noqa: BLE001  pydicom raises many types for bad pixel data
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise ValueError(f"cannot decode DICOM pixel data ({name}): "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                         ) from error
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        array = array[0]
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric.startswith("MONOCHROME"):
        array = pixels.apply_modality_lut(array, dataset)
        array = pixels.apply_voi_lut(array, dataset)
        array = np.asarray(array, dtype=np.float64)
        if photometric == "MONOCHROME1":
            array = array.max() - array + array.min()
        return array
    if array.ndim == 3 and array.shape[-1] == 3:  # pydicom hands colour over as RGB
        return array.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    raise ValueError(f"unsupported DICOM photometric interpretation {photometric}")


def dicom_to_png(data: bytes) -> bytes:
    """Encoded DICOM file -> 8-bit grayscale (MONOCHROME2) PNG bytes.

    Raises ValueError, with a message in plain words, for anything that cannot be decoded.
    """
    dataset = _read(data, pixel_data=True)
    if "PixelData" not in dataset:
        raise ValueError("DICOM file has no pixel data (not an image)")
    array = _to_grayscale(dataset)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"DICOM pixel data has an unexpected shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    image = Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_size(data: bytes) -> Tuple[int, int]:
    """(width, height) from the header, so that oversized files are refused undecoded."""
    dataset = _read(data, pixel_data=False)
    try:
        return int(dataset.Columns), int(dataset.Rows)
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError("DICOM header lacks the image size (Rows, Columns)") from error


def age_group(patient_age: str) -> str:
    """DICOM age string ('045Y', '006M', '012W', '003D') -> adult, pediatric or unknown."""
    match = _AGE.match((patient_age or "").strip().upper())
    if not match:
        return features.UNKNOWN
    years = int(match.group(1)) * _DAYS_PER_UNIT[match.group(2)] / _DAYS_PER_UNIT["Y"]
    return "adult" if years >= ADULT_AGE_YEARS else "pediatric"


def dicom_metadata(data: bytes) -> Dict[str, str]:
    """The non-identifying header fields: view (ViewPosition), age group and sex.

    Missing or malformed values come back as 'unknown'. The patient's exact age is reduced
    to a group on purpose: together with other fields it can identify a person.
    """
    dataset = _read(data, pixel_data=False)
    view = str(dataset.get("ViewPosition", "") or "").strip().upper()
    sex = str(dataset.get("PatientSex", "") or "").strip().upper()
    return {
        features.VIEW_KEY: view or features.UNKNOWN,
        features.AGE_GROUP_KEY: age_group(str(dataset.get("PatientAge", "") or "")),
        features.SEX_KEY: sex if sex in features.SEXES else features.UNKNOWN,
    }
