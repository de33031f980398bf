"""Upload checks: what the model can read passes unchanged, everything else gets one message."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from app import uploads
from conftest import SAMPLE_DIR

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
    assert uploads.image_bytes_from_upload("x.jpg", jpeg) == jpeg
    # 16-bit grayscale, as hospital exports store 12-bit data.
    deep = _png(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 16))
    assert uploads.image_bytes_from_upload("scan.png", deep) == deep
    # The format comes from the bytes, not the name.
    assert uploads.image_bytes_from_upload("no-extension", jpeg) == jpeg


@pytest.mark.parametrize("name, data, message", [
    ("notes.txt", b"patient notes, not an image\n",
     "notes.txt is not a PNG, JPEG or DICOM image"),
    ("empty.png", b"", "empty.png is empty"),
    ("half.jpg", _jpeg()[:len(_jpeg()) // 2],
     "half.jpg: the JPEG data is damaged or incomplete"),
    ("header.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
     "header.png: the file is damaged (its image header cannot be read)"),
    ("scan.dcm", b"\x00" * 128 + b"DICM" + b"\x00" * 64,
     "scan.dcm: DICOM header lacks the image size (Rows, Columns)"),
])
def test_unusable_uploads_are_named_with_the_reason(name, data, message):
    with pytest.raises(uploads.UploadError) as error:
        uploads.image_bytes_from_upload(name, data)
    assert str(error.value) == message


def test_too_large_files_and_images_are_refused_before_decoding():
    oversized = _jpeg() + b"\x00" * (uploads.MAX_UPLOAD_MB * 2 ** 20)
    with pytest.raises(uploads.UploadError, match=r"^big.jpg is 32\.0 MB; the limit is 32 MB$"):
        uploads.image_bytes_from_upload("big.jpg", oversized)
    # A few kilobytes that declare 64 million pixels: refused from the header alone.
    bomb = _png(Image.new("1", (8_000, 8_000)))
    assert len(bomb) < 100_000
    with pytest.raises(uploads.UploadError) as error:
        uploads.image_bytes_from_upload("bomb.png", bomb)
    assert str(error.value) == ("bomb.png is 8000 x 8000 pixels; the limit is "
                                "50,000,000 pixels")


def test_a_dicom_upload_becomes_the_png_ingestion_would_store():
    from components.image_example_gen.conftest import make_dicom
    from components.image_example_gen.dicom import dicom_to_png

    scan = make_dicom(np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 4,
                      photometric="MONOCHROME1", bits_stored=12)
    converted = uploads.image_bytes_from_upload("scan", scan)
    assert converted == dicom_to_png(scan)
    assert uploads.image_format(converted) == "png"
