"""Turning an uploaded file into the encoded image the model takes, or a message saying why not.

`image_bytes_from_upload` is the one place an upload's format is recognised. DICOM files are
converted as ingestion converts them (components.image_example_gen.dicom), so the app sees what
the pipeline trained on. Everything happens in memory: nothing uploaded is written to disk.
"""
import io
from typing import Optional, Tuple

from PIL import Image

from components.grad_cam import explain
from components.image_example_gen import dicom

MAX_UPLOAD_MB = 32
# Far above a 4,000 x 4,000 px scan; refusing larger images before decoding them keeps a small
# file that declares huge dimensions (a decompression bomb) from exhausting memory.
MAX_PIXELS = 50_000_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# Small: the check only needs the decoder to read every byte, not a useful picture.
_CHECK_SIZE = 8


class UploadError(ValueError):
    """The upload cannot be classified; the message is shown on the page as it is."""


def image_format(data: bytes) -> Optional[str]:
    """"png", "jpeg" or "dicom" from the file's first bytes (names and extensions can lie)."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SIGNATURE):
        return "jpeg"
    if dicom.is_dicom(data):
        return "dicom"
    return None


def _dimensions(name: str, data: bytes) -> Tuple[int, int]:
    """Width and height from the header alone, without decoding any pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError:
        raise UploadError(f"{name}: the image is too large (more than {MAX_PIXELS:,} "
                          "pixels)") from None
    except (OSError, SyntaxError, ValueError):
        raise UploadError(f"{name}: the file is damaged (its image header cannot be read)"
                          ) from None


def _dicom_to_png(name: str, data: bytes) -> bytes:
    try:
        width, height = dicom.image_size(data)
        if width * height > MAX_PIXELS:
            raise UploadError(f"{name} is {width} x {height} pixels; the limit is "
                              f"{MAX_PIXELS:,} pixels")
        return dicom.dicom_to_png(data)
    except ValueError as error:
        if isinstance(error, UploadError):
            raise
        raise UploadError(f"{name}: {error}") from None


def image_bytes_from_upload(name: str, data: bytes) -> bytes:
    """PNG or JPEG bytes that decode with the model's own preprocessing (DICOM becomes an
    8-bit PNG); UploadError otherwise."""
    if not data:
        raise UploadError(f"{name} is empty")
    if len(data) > MAX_UPLOAD_MB * 2 ** 20:
        raise UploadError(f"{name} is {len(data) / 2 ** 20:.1f} MB; the limit is "
                          f"{MAX_UPLOAD_MB} MB")
    kind = image_format(data)
    if kind == "dicom":
        data = _dicom_to_png(name, data)
    elif kind is None:
        raise UploadError(f"{name} is not a PNG, JPEG or DICOM image")
    width, height = _dimensions(name, data)
    if width * height > MAX_PIXELS:
        raise UploadError(f"{name} is {width} x {height} pixels; the limit is "
                          f"{MAX_PIXELS:,} pixels")
    try:
        explain.decode(data, _CHECK_SIZE)
    except ValueError:
        raise UploadError(f"{name}: the {kind.upper()} data is damaged or incomplete") from None
    return data
