"""Uploads go through the one image path: what ingestion would store, or one message."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from app import uploads
from conftest import SAMPLE_DIR
from imaging import prepare
from imaging.conftest import make_dicom

JPEG_PATH = os.path.join(SAMPLE_DIR, "images", "covid19_actualmed_0003.jpg")


def _jpeg() -> bytes:
    with open(JPEG_PATH, "rb") as f:
        return f.read()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_jpeg_and_png_pass_unchanged():
    jpeg = _jpeg()
    assert uploads.prepare_upload("x.jpg", jpeg).encoded == jpeg
    # 16-bit grayscale, as hospital exports store 12-bit data.
    deep = _png(Image.fromarray(np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 16))
    assert uploads.prepare_upload("scan.png", deep).encoded == deep
    # The format comes from the bytes, not the name.
    assert uploads.prepare_upload("no-extension", jpeg).encoded == jpeg


@pytest.mark.parametrize("name, data, message", [
    ("notes.txt", b"patient notes, not an image\n",
     "notes.txt: not an image: content is text, not a JPEG, PNG or DICOM image"),
    ("empty.png", b"", "empty.png: empty file: 0 bytes"),
    ("half.jpg", _jpeg()[:len(_jpeg()) // 2],
     "half.jpg: corrupt or truncated image: TensorFlow cannot decode it: jpeg::Uncompress "
     "failed. Invalid JPEG data or crop window."),
    ("header.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
     "header.png: corrupt or truncated image: unreadable header: Pillow cannot identify the "
     "image"),
    ("scan.dcm", b"\x00" * 128 + b"DICM" + b"\x00" * 64,
     "scan.dcm: unreadable DICOM: DICOM header lacks the image size (Rows, Columns)"),
    ("icon.png", _png(Image.new("L", (32, 32))),
     "icon.png: image too small: 32x32 px; the shorter side must be at least 64 px"),
])
def test_unusable_uploads_are_named_with_the_reason(name, data, message):
    with pytest.raises(uploads.UploadError) as error:
        uploads.prepare_upload(name, data)
    assert str(error.value) == message


def test_too_large_files_and_images_are_refused_before_decoding():
    oversized = _jpeg() + b"\x00" * (uploads.MAX_UPLOAD_MB * 2 ** 20)
    with pytest.raises(uploads.UploadError, match=r"^big.jpg is 32\.0 MB; the limit is 32 MB$"):
        uploads.prepare_upload("big.jpg", oversized)
    # A few kilobytes that declare 64 million pixels: refused from the header alone.
    bomb = _png(Image.new("1", (8_000, 8_000)))
    assert len(bomb) < 100_000
    with pytest.raises(uploads.UploadError) as error:
        uploads.prepare_upload("bomb.png", bomb)
    assert str(error.value) == ("bomb.png: image too large: 8000x8000 px is over the limit of "
                                "50000000 pixels; not decoded (possible decompression bomb)")


def test_a_dicom_upload_becomes_the_png_ingestion_would_store():
    scan = make_dicom(np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 4,
                      photometric="MONOCHROME1", bits_stored=12)
    converted = uploads.prepare_upload("scan", scan)
    assert converted == prepare.prepare_image(scan)
    assert converted.conversion == "DICOM converted to 8-bit PNG"
    assert prepare.sniff(converted.encoded) == "png"
