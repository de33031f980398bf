"""Each bad-input case on a real file made here, and what Transform then decodes."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from imaging import prepare
from imaging.conftest import encode, gradient, png_header_only
from models.preprocessing import decode_image


def transform_view(encoded: bytes) -> np.ndarray:
    """The image as Transform decodes it (without resizing), 8-bit luminance."""
    with Image.open(io.BytesIO(encoded)) as image:
        height, width = image.height, image.width
    decoded = tf.io.decode_image(encoded, channels=0, dtype=tf.float32, expand_animations=False)
    if decoded.shape[-1] >= 3:
        decoded = tf.image.rgb_to_grayscale(decoded[..., :3])
    assert decoded.shape[:2] == (height, width)
    return np.round(decoded.numpy()[..., 0] * 255)


def rejected(data: bytes, **options) -> prepare.Rejected:
    with pytest.raises(prepare.Rejected) as info:
        prepare.prepare_image(data, prepare.CheckOptions(**options))
    return info.value


def test_plain_grayscale_jpeg_is_stored_unchanged():
    data = encode(gradient(), "JPEG")
    image = prepare.prepare_image(data)
    assert image.encoded == data and image.conversion is None
    assert (image.height, image.width) == (80, 96)


@pytest.mark.parametrize("data,reason,detail", [
    (b"", prepare.EMPTY, "0 bytes"),
    (b"patient list\nname,age\n", prepare.NOT_AN_IMAGE, "content is text"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", prepare.NOT_AN_IMAGE,
     "content is an HTML page"),
    (b"GIF89a\x01\x00\x01\x00", prepare.NOT_AN_IMAGE, "other than JPEG, PNG or DICOM"),
])
def test_non_images_are_rejected_by_content(data, reason, detail):
    rejection = rejected(data)
    assert rejection.reason == reason and detail in rejection.detail


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_corrupt(fmt):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120), np.uint8))
    data = encode(noisy, fmt)
    rejection = rejected(data[:len(data) // 2])
    assert rejection.reason == prepare.CORRUPT
    assert rejection.detail in ("image file is truncated",  # Pillow, reading PNG's eXIf
                                "TensorFlow cannot decode it: jpeg::Uncompress failed. Invalid "
                                "JPEG data or crop window.")
    assert "[Op:" not in rejection.detail and "\n" not in rejection.detail


def test_16_bit_png_keeps_its_bytes_and_decodes_to_the_full_range():
    twelve_bit = (np.arange(80 * 96).reshape(80, 96) * 4095 // (80 * 96 - 1)).astype(np.uint16)
    data = encode(Image.fromarray(twelve_bit), "PNG")
    image = prepare.prepare_image(data)
    assert image.encoded == data and image.conversion is None
    model_input = decode_image(tf.constant(image.encoded), 96).numpy()[..., 0]
    assert model_input.min() == pytest.approx(0.0) and model_input.max() == pytest.approx(1.0)
    assert np.mean(model_input > 0.99) < 0.02  # not clipped to white
    assert model_input[:, 48].mean() == pytest.approx(0.5, abs=0.02)


def test_rotated_16_bit_png_is_converted_without_clipping_to_white():
    twelve_bit = np.tile(np.linspace(0, 4095, 96).astype(np.uint16), (80, 1))
    exif = Image.Exif()
    exif[prepare.EXIF_ORIENTATION_TAG] = 3  # upside down
    image = prepare.prepare_image(encode(Image.fromarray(twelve_bit), "PNG", exif=exif.tobytes()))
    assert image.conversion == "EXIF orientation 3 applied"
    pixels = transform_view(image.encoded)
    expected = np.round(np.linspace(255, 0, 96))  # rotated 180 degrees: bright side first
    assert np.abs(pixels[0] - expected).max() <= 1


def test_rgba_with_transparency_is_flattened_onto_black():
    rgba = Image.new("RGBA", (96, 80), (200, 200, 200, 255))
    rgba.paste((250, 10, 10, 0), (0, 0, 48, 80))  # transparent half with a red "colour"
    image = prepare.prepare_image(encode(rgba, "PNG"))
    assert image.conversion == "transparency flattened onto black"
    pixels = transform_view(image.encoded)
    assert pixels[:, :48].max() == 0 and pixels[:, 48:].min() == 200


def test_opaque_rgba_and_palette_pngs_keep_their_bytes_and_decode_as_shown():
    opaque = encode(Image.merge("RGBA", [gradient()] * 3 + [Image.new("L", (96, 80), 255)]), "PNG")
    palette = encode(gradient().convert("P"), "PNG")
    for data in (opaque, palette):
        image = prepare.prepare_image(data)
        assert image.encoded == data and image.conversion is None
        with Image.open(io.BytesIO(data)) as shown:
            expected = np.asarray(shown.convert("L"), dtype=float)
        assert np.abs(transform_view(image.encoded) - expected).max() <= 1


def test_cmyk_jpeg_is_converted_as_pillow_shows_it():
    cmyk = Image.merge("CMYK", [Image.new("L", (96, 80), 0)] * 3 + [gradient()])
    data = encode(cmyk, "JPEG", quality=95)
    image = prepare.prepare_image(data)
    assert image.conversion == "CMYK JPEG converted to grayscale"
    with Image.open(io.BytesIO(data)) as shown:
        expected = np.asarray(shown.convert("L"), dtype=float)
    assert np.abs(transform_view(image.encoded) - expected).max() <= 1
    assert expected[:, 0].mean() > 240 and expected[:, -1].mean() < 15  # K=0 white, K=255 black


def test_exif_orientation_is_applied():
    upright = gradient(96, 80)
    exif = Image.Exif()
    exif[prepare.EXIF_ORIENTATION_TAG] = 6  # viewers rotate 90 degrees clockwise
    data = encode(upright, "JPEG", quality=95, exif=exif.tobytes())
    image = prepare.prepare_image(data)
    assert image.conversion == "EXIF orientation 6 applied"
    assert (image.height, image.width) == (96, 80)
    with Image.open(io.BytesIO(data)) as shown:
        expected = np.asarray(ImageOps.exif_transpose(shown).convert("L"), dtype=float)
    pixels = transform_view(image.encoded)
    assert np.abs(pixels - expected).max() <= 1
    assert pixels[0].mean() < 15 and pixels[-1].mean() > 240  # dark side now at the top


@pytest.mark.parametrize("size,min_side", [((1, 1), 64), ((200, 50), 64), ((40, 40), 41)])
def test_small_images_are_rejected_below_the_minimum_side(size, min_side):
    rejection = rejected(encode(Image.new("L", size, 90), "PNG"), min_side=min_side)
    assert rejection.reason == prepare.TOO_SMALL
    assert f"{size[0]}x{size[1]} px" in rejection.detail and f"at least {min_side} px" in rejection.detail


def test_minimum_side_is_configurable():
    assert prepare.prepare_image(encode(Image.new("L", (40, 40), 90), "PNG"),
                              prepare.CheckOptions(min_side=40)).width == 40


def test_decompression_bomb_is_refused_from_the_header():
    bomb = png_header_only(40000, 40000)
    assert len(bomb) < 200_000
    rejection = rejected(bomb)
    assert rejection.reason == prepare.TOO_LARGE
    assert rejection.detail == ("1600000000 pixels is over Pillow's hard limit of 178956970 "
                                "pixels; not decoded (possible decompression bomb)")
    over_limit = rejected(png_header_only(10000, 6000), max_pixels=50_000_000)
    assert over_limit.reason == prepare.TOO_LARGE
    assert over_limit.detail.startswith("10000x6000 px is over the limit of 50000000 pixels")


def test_identical_content_has_identical_hash_whatever_the_name():
    data = encode(gradient(), "PNG")
    assert prepare.prepare_image(data).content_sha256 == prepare.prepare_image(bytes(data)).content_sha256
    assert prepare.prepare_image(data).content_sha256 != \
        prepare.prepare_image(encode(gradient(97), "PNG")).content_sha256


def _tensorflow_words(data: bytes):
    """What tf.io.decode_image, the exported model's decoder, says of these bytes (None: it
    decodes them)."""
    try:
        tf.io.decode_image(data, channels=0, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        return error.message.split("} ")[-1].replace(" [Op:DecodeImage]", "")
    return None


def test_model_decode_error_gives_tensorflows_words_without_calling_it():
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120), np.uint8))
    jpeg, png = encode(noisy, "JPEG"), encode(noisy, "PNG")
    png16 = encode(Image.fromarray(np.full((70, 70), 4095, np.uint16)), "PNG")
    refused = [b"", b"patient notes, not an image\n", b"<html><body>502</body></html>",
               bytes(np.random.default_rng(1).integers(0, 256, 2048, np.uint8)),
               jpeg[:len(jpeg) // 3], jpeg[:-2], b"\xff\xd8\xff", png[:len(png) // 2],
               b"\x89PNG\r\n\x1a\n" + b"\x00" * 64]
    for data in refused:
        assert _tensorflow_words(data) is not None
        assert prepare.model_decode_error(data) == _tensorflow_words(data), data[:12]
    for data in (jpeg, png, png16, jpeg + b"\x00" * 100, png + b"trailer"):
        assert _tensorflow_words(data) is None
        assert prepare.model_decode_error(data) is None


def test_model_decode_error_decodes_only_files_that_do_not_end_complete(monkeypatch):
    """Good images cost no second decode: Pillow is not even asked."""
    jpeg = encode(gradient(), "JPEG")

    def no_pillow(*args, **kwargs):
        raise AssertionError("Pillow was asked to open a complete file")

    monkeypatch.setattr(prepare.Image, "open", no_pillow)
    assert prepare.model_decode_error(jpeg) is None
    assert prepare.model_decode_error(encode(gradient(), "PNG")) is None
    with pytest.raises(AssertionError, match="Pillow was asked"):
        prepare.model_decode_error(jpeg[:-10])
