"""Image files of every kind the one image path must handle, made on the fly for tests."""
import io
import struct
import zlib
from typing import Any, Dict, Optional

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

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
