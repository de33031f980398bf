import io

import numpy as np
import pydicom
import pytest
import tensorflow as tf
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit,
                         JPEGLSLossless, JPEGLSNearLossless, RLELossless)

from imaging import ingest
from imaging import dicom, prepare
from imaging.conftest import make_dicom
from models import features

GRADIENT_12_BIT = (np.arange(64 * 80).reshape(64, 80) * 4095 // (64 * 80 - 1)).astype(np.uint16)
# Noise is what a lossless codec finds hardest to keep exact; 0 and 4095 fix the 8-bit stretch.
NOISE_12_BIT = np.random.default_rng(7).integers(0, 4096, (64, 80)).astype(np.uint16)
NOISE_12_BIT[0, :2] = (0, 4095)


def _png_pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "L"
        return np.asarray(image)


def _ingested_pixels(tmp_path, data: bytes) -> np.ndarray:
    """The file through the pipeline's own path (inspect_record), as Transform decodes it."""
    path = tmp_path / "scan0001"  # no extension: found by its preamble, as in hospital exports
    path.write_bytes(data)
    outcome = ingest.inspect_record(ingest.ImageRecord(str(path), "Normal", "p1"),
                                    prepare.CheckOptions())
    assert isinstance(outcome, ingest.Accepted), outcome
    assert outcome.image.conversion == "DICOM converted to 8-bit PNG"
    decoded = tf.io.decode_image(outcome.image.encoded, channels=0, expand_animations=False)
    assert decoded.dtype == tf.uint8 and decoded.shape[-1] == 1
    return decoded.numpy()[..., 0]


def _transfer_syntax(data: bytes) -> str:
    return pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless,
                                    JPEGLSLossless], ids=lambda syntax: syntax.name)
def test_12_bit_lossless_syntaxes_are_stored_exactly_over_the_full_8_bit_range(tmp_path, syntax):
    data = make_dicom(NOISE_12_BIT, bits_stored=12, syntax=syntax)
    assert _transfer_syntax(data) == syntax

    pixels = _ingested_pixels(tmp_path, data)

    np.testing.assert_array_equal(pixels, np.round(NOISE_12_BIT / 4095 * 255).astype(np.uint8))


def test_jpeg_ls_near_lossless_stays_within_its_error_bound(tmp_path):
    data = make_dicom(NOISE_12_BIT, bits_stored=12, syntax=JPEGLSNearLossless,
                      compress_options={"jls_error": 3})
    assert _transfer_syntax(data) == JPEGLSNearLossless
    stored = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(int)
    assert 0 < np.abs(stored - NOISE_12_BIT).max() <= 3  # really lossy, within the bound

    pixels = _ingested_pixels(tmp_path, data).astype(int)

    assert np.abs(pixels - np.round(NOISE_12_BIT / 4095 * 255)).max() <= 1


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEGLSNearLossless],
                         ids=lambda syntax: syntax.name)
def test_jpeg_ls_decodes_with_the_plugin_setup_py_installs(syntax):
    """pyjpegls only makes the test files; production decodes with pylibjpeg-libjpeg."""
    assert "pylibjpeg" in get_decoder(syntax).available_plugins
    data = make_dicom(NOISE_12_BIT, bits_stored=12, syntax=syntax)
    decoded = pydicom.pixels.pixel_array(io.BytesIO(data), decoding_plugin="pylibjpeg")
    np.testing.assert_array_equal(decoded, NOISE_12_BIT)


def test_8_bit_rle_is_stored_unchanged(tmp_path):
    source = (NOISE_12_BIT >> 4).astype(np.uint8)
    data = make_dicom(source, bits_stored=8, syntax=RLELossless)
    assert _transfer_syntax(data) == RLELossless
    np.testing.assert_array_equal(_ingested_pixels(tmp_path, data), source)


def test_monochrome1_is_inverted_so_bone_is_bright():
    stored = np.zeros((64, 64), np.uint8)
    stored[:, 32:] = 200  # MONOCHROME1: high values are dark
    pixels = _png_pixels(dicom.dicom_to_png(make_dicom(stored, "MONOCHROME1", bits_stored=8)))
    assert pixels[:, :32].min() == 255 and pixels[:, 32:].max() == 0


def test_jpeg_baseline_pixel_data_is_decoded(tmp_path):
    """pydicom cannot encode JPEG baseline: Pillow's JPEG is encapsulated as PACS do."""
    source = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (72, 1))
    source[:, 40:56] = np.random.default_rng(7).integers(0, 256, (72, 16))  # detail to lose
    buffer = io.BytesIO()
    Image.fromarray(source).save(buffer, format="JPEG", quality=95)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:  # libjpeg-turbo, as a viewer
        expected = np.asarray(image).astype(int)
    assert np.abs(expected - source).max() > 0  # lossy: the comparison is with a decoder
    data = make_dicom(np.zeros((72, 96), np.uint8), bits_stored=8)
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.PixelData = encapsulate([buffer.getvalue()])
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    pixels = _ingested_pixels(tmp_path, out.getvalue()).astype(int)
    assert (pixels.min(), pixels.max()) == (0, 255) == (expected.min(), expected.max())
    assert np.abs(pixels - expected).max() <= 1  # IDCTs may round differently


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
