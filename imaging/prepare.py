"""The one image path: input bytes -> exactly the encoded image ingestion stores.

`prepare_image` is used by ImageExampleGen and `cxr check-data` (each file becomes an example
or a quarantine record), and by everything that asks a model about an image: the web app,
`cxr predict` and the Python clients (gRPC and REST), and `cxr gradcam`. So an image is
prepared the same way for training and for every prediction; the exported model itself only
decodes JPEG and PNG (models/preprocessing.decode_image).

Each input is either accepted, with the bytes to store or send, or rejected with a reason in
plain words. The format is sniffed from the content, never from the extension. The final gate
is tf.io.decode_image on the bytes that will be stored, the call Transform makes
(models/preprocessing.decode_image), so an accepted image always decodes in training.

Stored bytes are the original file's unless TensorFlow would decode them differently from
what the file shows; then an 8-bit grayscale PNG of the corrected image is stored and the
conversion is recorded:
- EXIF orientation (TensorFlow ignores it): the rotation is applied;
- CMYK JPEG: converted with Pillow, which honours Adobe's inverted CMYK;
- transparency (RGBA, LA, palette with a transparent entry): flattened onto black, the
  background of a radiograph, instead of exposing whatever colour sits under alpha 0;
- DICOM: see dicom.py.
16-bit PNGs are kept as they are: tf.io.decode_image scales them by 1/65535 and
decode_image then stretches them to the full range, so 12-bit data is not clipped.

`model_decode_error` is the other side: a server receiving raw bytes from any TF Serving
client learns, without calling TensorFlow, that the model would refuse them and with which
words (see its docstring for why no TensorFlow call).
"""
import dataclasses
import hashlib
import io
import re
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from imaging import dicom

# Pillow refuses to open anything above twice its own limit; such files are refused too.
PIL_HARD_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
EXIF_ORIENTATION_TAG = 0x0112

# Reasons, in plain words; the report counts files per reason.
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
CORRUPT = "corrupt or truncated image"
TOO_SMALL = "image too small"
TOO_LARGE = "image too large"
BAD_DICOM = "unreadable DICOM"
DUPLICATE = "duplicate image"
MISSING = "file listed in the manifest does not exist"

# tf.io.decode_image (the exported model's decoder) tells formats apart by their first bytes
# and says this of anything else; its words for a JPEG or PNG it cannot decode follow.
TF_FORMAT_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF8",
                        "bmp": b"BM"}
TF_EMPTY = "Input is empty."
TF_UNKNOWN_FORMAT = "Unknown image file format. One of JPEG, PNG, GIF, BMP required."
TF_BAD_JPEG = "jpeg::Uncompress failed. Invalid JPEG data or crop window."
TF_BAD_PNG_HEADER = "Invalid PNG. Failed to initialize decoder."
TF_BAD_PNG_DATA = "Invalid PNG data, size {size}"
# A complete file ends with these; one that does not (cut short, or junk after them) is
# decoded by model_decode_error.
JPEG_END = b"\xff\xd9"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    min_side: int = 64
    max_pixels: int = 50_000_000


class Rejected(Exception):
    """A file that cannot become an example; reason is one of the constants above."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    encoded: bytes          # what the example stores
    height: int
    width: int
    content_sha256: str     # of the original file, for exact duplicates
    conversion: Optional[str] = None  # why `encoded` is not the original file, if it is not
    dicom_metadata: Optional[dict] = None


def sniff(data: bytes) -> str:
    """'jpeg', 'png', 'dicom', or a plain description of what the content looks like."""
    for kind in ("jpeg", "png"):
        if data.startswith(TF_FORMAT_SIGNATURES[kind]):
            return kind
    if dicom.is_dicom(data):
        return "dicom"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if head.startswith((b"gif8", b"bm", b"ii*\x00", b"mm\x00*", b"riff")):
        return "an image format other than JPEG, PNG or DICOM"
    try:
        data[:512].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_size(width: int, height: int, options: CheckOptions) -> None:
    if width * height > options.max_pixels:
        raise Rejected(TOO_LARGE, f"{width}x{height} px is over the limit of "
                                  f"{options.max_pixels} pixels; not decoded (possible "
                                  "decompression bomb)")
    if min(width, height) < options.min_side:
        raise Rejected(TOO_SMALL, f"{width}x{height} px; the shorter side must be at least "
                                  f"{options.min_side} px")


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P"
                                              and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        return alpha.getextrema()[0] < 255
    return False


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Grayscale, 8-bit; 16-bit and float data are stretched, not clipped at 255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = array.min(), array.max()
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    return image.convert("L")


def _normalise(image: Image.Image) -> Tuple[Optional[Image.Image], Optional[str]]:
    """(corrected 8-bit grayscale image, why) when TF would decode the file differently."""
    reasons = []
    orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    transparent = _has_transparency(image)
    if image.mode == "CMYK":
        reasons.append("CMYK JPEG converted to grayscale")
    if transparent:
        reasons.append("transparency flattened onto black")
    if orientation not in (None, 1):
        reasons.append(f"EXIF orientation {orientation} applied")
    if not reasons:
        return None, None
    corrected = image
    if transparent:
        rgba = image.convert("RGBA")
        corrected = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        corrected.alpha_composite(rgba)
    return _to_8bit_gray(ImageOps.exif_transpose(corrected)), "; ".join(reasons)


def _check_raster(data: bytes, options: CheckOptions) -> Tuple[bytes, Optional[str]]:
    """JPEG or PNG: sizes from the header first, pixels only once they are within limits."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        raise Rejected(TOO_LARGE, f"{claimed.group(1) if claimed else 'more'} pixels is over "
                                  f"Pillow's hard limit of {PIL_HARD_PIXEL_LIMIT} pixels; not "
                                  "decoded (possible decompression bomb)") from error
    except Image.UnidentifiedImageError as error:  # its message names a BytesIO object
        raise Rejected(CORRUPT, "unreadable header: Pillow cannot identify the image") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise Rejected(CORRUPT, f"unreadable header: {error}") from error
    with image:
        _check_size(*image.size, options)
        try:  # pixels are decoded here only for transparency checks and conversions
            corrected, conversion = _normalise(image)
        except (OSError, ValueError, SyntaxError) as error:
            raise Rejected(CORRUPT, str(error)) from error
        if corrected is None:
            return data, None
        return _encode_png(corrected), conversion


def _decode_like_transform(encoded: bytes) -> Tuple[int, int]:
    """(height, width) as tf.io.decode_image sees the stored bytes: Transform's own call."""
    try:
        shape = tf.io.decode_image(encoded, channels=0, expand_animations=False).shape
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        message = message.split("} ")[-1].replace(" [Op:DecodeImage]", "")
        raise Rejected(CORRUPT, f"TensorFlow cannot decode it: {message}") from error
    return int(shape[0]), int(shape[1])


def prepare_image(data: bytes, options: CheckOptions = CheckOptions()) -> PreparedImage:
    """Accept input bytes as a model image (the bytes to store or send), or raise Rejected
    saying why."""
    if not data:
        raise Rejected(EMPTY, "0 bytes")
    kind = sniff(data)
    metadata = None
    if kind == "dicom":
        try:
            _check_size(*dicom.image_size(data), options)
            metadata = dicom.dicom_metadata(data)
            encoded, conversion = dicom.dicom_to_png(data), "DICOM converted to 8-bit PNG"
        except ValueError as error:
            raise Rejected(BAD_DICOM, str(error)) from error
    elif kind in ("jpeg", "png"):
        encoded, conversion = _check_raster(data, options)
    else:
        raise Rejected(NOT_AN_IMAGE, f"content is {kind}, not a JPEG, PNG or DICOM image")
    height, width = _decode_like_transform(encoded)
    return PreparedImage(encoded=encoded, height=height, width=width,
                        content_sha256=hashlib.sha256(data).hexdigest(),
                        conversion=conversion, dicom_metadata=metadata)


def model_decode_error(data: bytes) -> Optional[str]:
    """TensorFlow's own words for why the exported model cannot decode these bytes, found
    without calling TensorFlow; None when nothing shows that it cannot (the model decides).

    Every TensorFlow call that fails keeps about 1 KiB for good (TF 2.16's Python binding
    leaves the failed call's output list behind), so a server that lets the model find bad
    inputs grows with each one. Unknown formats are told by their first bytes, as TensorFlow
    tells them. A JPEG or PNG that does not end as a complete file does (cut short: an
    interrupted upload or copy) is decoded with Pillow and refused when Pillow cannot decode
    it, which TensorFlow cannot either. Files that end properly are not decoded here, so good
    images cost no second decode; what TensorFlow refuses and this does not see (a file damaged
    inside, a PNG cut just before its end chunk, GIF and BMP) still reaches the model.
    """
    if not data:
        return TF_EMPTY
    kind = next((name for name, start in TF_FORMAT_SIGNATURES.items()
                 if data.startswith(start)), None)
    if kind is None:
        return TF_UNKNOWN_FORMAT
    end = {"jpeg": JPEG_END, "png": PNG_END}.get(kind)
    if end is None or data.endswith(end):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Image.DecompressionBombError:
        return None  # over Pillow's limit, not necessarily TensorFlow's
    except Image.UnidentifiedImageError:
        return TF_BAD_JPEG if kind == "jpeg" else TF_BAD_PNG_HEADER
    except (OSError, SyntaxError, ValueError, EOFError):
        return TF_BAD_JPEG if kind == "jpeg" else TF_BAD_PNG_DATA.format(size=len(data))
    return None
