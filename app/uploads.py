"""Turning an uploaded file into the encoded image the model takes, or a message saying why not.

Uploads go through the one image path (imaging.prepare), the function ingestion stores every
training image with: the format is read from the content, EXIF rotation, CMYK and
transparency are corrected and DICOM is converted exactly as for training, and the same size
limits apply. Everything happens in memory: nothing uploaded is written to disk.
"""
from imaging import prepare

MAX_UPLOAD_MB = 32


class UploadError(ValueError):
    """The upload cannot be classified; the message is shown on the page as it is."""


def prepare_upload(name: str, data: bytes) -> prepare.PreparedImage:
    """The upload as ingestion would have stored it; UploadError naming the file otherwise."""
    if len(data) > MAX_UPLOAD_MB * 2 ** 20:
        raise UploadError(f"{name} is {len(data) / 2 ** 20:.1f} MB; the limit is "
                          f"{MAX_UPLOAD_MB} MB")
    try:
        return prepare.prepare_image(data)
    except prepare.Rejected as rejection:
        raise UploadError(f"{name}: {rejection}") from None
