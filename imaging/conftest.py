"""Image files of every kind the one image path must handle, and messy data sets of them,
made on the fly for tests."""
import io
import os
import shutil
import struct
import zlib
from typing import Any, Dict, Optional

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from conftest import SAMPLE_DIR, sample_rows
from imaging import prepare

# Identifying tags written into the test DICOM files; they must never reach an output.
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN-0042"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 96, height: int = 80) -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b""))


def make_dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 16,
               syntax: str = ExplicitVRLittleEndian,
               compress_options: Optional[Dict[str, Any]] = None, **tags) -> bytes:
    """A DICOM Part 10 file as a hospital would export it (identifying tags included).

    Compressed syntaxes are encoded by pydicom's own encoders (compress_options go to
    Dataset.compress, e.g. jls_error for JPEG-LS near-lossless).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    bits_allocated = 8 if pixels.dtype == np.uint8 else 16
    dataset.BitsAllocated, dataset.BitsStored = bits_allocated, bits_stored
    dataset.HighBit = bits_stored - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    for name, value in tags.items():
        setattr(dataset, name, value)
    if syntax != ExplicitVRLittleEndian:
        dataset.compress(syntax, **(compress_options or {}))
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_messy_data(dest: str, per_class: int = 4) -> Dict[str, str]:
    """A folder per class: per_class sample images each, plus one file of every bad kind.

    Returns {relative path: expected outcome}: "ok", "converted" or a prepare.* reason.
    """
    expected = {}
    taken = {}
    folders = {"COVID-19": "COVID", "Pneumonia": "PNEUMONIA", "Normal": "NORMAL"}
    for row in sample_rows():
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            relative = os.path.join(folders[row["label"]], os.path.basename(row["file"]))
            os.makedirs(os.path.join(dest, folders[row["label"]]), exist_ok=True)
            shutil.copy(os.path.join(SAMPLE_DIR, row["file"]), os.path.join(dest, relative))
            expected[relative] = "ok"
    first_covid = sorted(p for p in expected if p.startswith("COVID/"))[0]
    jpeg = open(os.path.join(dest, first_covid), "rb").read()
    exif = Image.Exif()
    exif[0x0112] = 8
    twelve_bit = (np.arange(96 * 80).reshape(80, 96) * 4095 // (96 * 80 - 1)).astype(np.uint16)
    bad = {
        "COVID/zero.jpg": (b"", prepare.EMPTY),
        "COVID/notes.jpg": (b"scanned on ward 3, see report\n", prepare.NOT_AN_IMAGE),
        "NORMAL/error.png": (b"<html><body>502 Bad Gateway</body></html>", prepare.NOT_AN_IMAGE),
        "PNEUMONIA/truncated.jpg": (jpeg[:len(jpeg) // 2], prepare.CORRUPT),
        "NORMAL/tiny.png": (encode(Image.new("L", (1, 1)), "PNG"), prepare.TOO_SMALL),
        "NORMAL/bomb.png": (png_header_only(40000, 40000), prepare.TOO_LARGE),
        # Same content as a COVID image, in another class: one copy only may stay.
        "PNEUMONIA/zz_copy.jpg": (jpeg, prepare.DUPLICATE),
        # Extension-less DICOM, found by its preamble.
        "NORMAL/scan0001": (make_dicom(twelve_bit, bits_stored=12, ViewPosition="PA",
                                       PatientAge="045Y", PatientSex="F"), "converted"),
        "COVID/rotated.jpg": (encode(gradient(), "JPEG", exif=exif.tobytes()), "converted"),
    }
    for relative, (data, outcome) in bad.items():
        with open(os.path.join(dest, relative), "wb") as f:
            f.write(data)
        expected[relative] = outcome
    return expected
