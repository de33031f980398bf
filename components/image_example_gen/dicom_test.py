import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, ExplicitVRLittleEndian, RLELossless

from components.image_example_gen import dicom
from components.image_example_gen.conftest import make_dicom
from models import features

GRADIENT_12_BIT = (np.arange(64 * 80).reshape(64, 80) * 4095 // (64 * 80 - 1)).astype(np.uint16)


def _png_pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "L"
        return np.asarray(image)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
def test_12_bit_monochrome2_uses_the_full_8_bit_range(syntax):
    data = make_dicom(GRADIENT_12_BIT, bits_stored=12, syntax=syntax)
    if syntax != ExplicitVRLittleEndian:
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
    pixels = _png_pixels(dicom.dicom_to_png(data))
    assert pixels.shape == (64, 80)
    assert (pixels.min(), pixels.max()) == (0, 255)
    expected = np.round(GRADIENT_12_BIT / 4095 * 255)
    assert np.abs(pixels - expected).max() <= 1


def test_monochrome1_is_inverted_so_bone_is_bright():
    stored = np.zeros((64, 64), np.uint8)
    stored[:, 32:] = 200  # MONOCHROME1: high values are dark
    pixels = _png_pixels(dicom.dicom_to_png(make_dicom(stored, "MONOCHROME1", bits_stored=8)))
    assert pixels[:, :32].min() == 255 and pixels[:, 32:].max() == 0


def test_jpeg_baseline_pixel_data_is_decoded():
    source = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (72, 1))
    buffer = io.BytesIO()
    Image.fromarray(source).save(buffer, format="JPEG", quality=95)
    data = make_dicom(np.zeros((72, 96), np.uint8), bits_stored=8)
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.PixelData = encapsulate([buffer.getvalue()])
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    pixels = _png_pixels(dicom.dicom_to_png(out.getvalue())).astype(int)
    assert np.abs(pixels - source.astype(int)).max() <= 6


def test_rescale_and_window_come_before_scaling():
    stored = np.repeat(np.array([[0, 1000, 1500, 2000, 4000]], np.uint16), 64, axis=0)
    stored = np.repeat(stored, 13, axis=1)
    # Hounsfield-like values -1000..3000; the window 500 +- 500 saturates both ends.
    data = make_dicom(stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1000,
                      WindowCenter=500, WindowWidth=1000)
    row = _png_pixels(dicom.dicom_to_png(data))[0, ::13]
    assert row[0] == row[1] == 0  # -1000 and 0 are below the window
    assert 0 < row[2] < 255       # 500, the window's centre
    assert row[3] == row[4] == 255  # 1000 and 3000 are above it


def test_metadata_is_view_age_group_and_sex_only():
    data = make_dicom(GRADIENT_12_BIT, bits_stored=12, ViewPosition="PA", PatientAge="045Y",
                      PatientSex="F")
    assert dicom.dicom_metadata(data) == {
        features.VIEW_KEY: "PA", features.AGE_GROUP_KEY: "adult", features.SEX_KEY: "F"}
    child = make_dicom(GRADIENT_12_BIT, bits_stored=12, PatientAge="030M")
    assert dicom.dicom_metadata(child) == {
        features.VIEW_KEY: "unknown", features.AGE_GROUP_KEY: "pediatric",
        features.SEX_KEY: "unknown"}


@pytest.mark.parametrize("age,group", [("017Y", "pediatric"), ("018Y", "adult"),
                                       ("003D", "pediatric"), ("", "unknown"), ("4Y", "unknown")])
def test_age_group_from_dicom_age_strings(age, group):
    assert dicom.age_group(age) == group


def test_undecodable_input_raises_value_error_in_plain_words():
    data = make_dicom(GRADIENT_12_BIT, bits_stored=12)
    with pytest.raises(ValueError, match="not a DICOM file"):
        dicom.dicom_to_png(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="cannot decode DICOM pixel data|unreadable DICOM"):
        dicom.dicom_to_png(data[:len(data) - 4000])
    no_pixels = pydicom.dcmread(io.BytesIO(data))
    del no_pixels.PixelData
    buffer = io.BytesIO()
    no_pixels.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ValueError, match="no pixel data"):
        dicom.dicom_to_png(buffer.getvalue())
