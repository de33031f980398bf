"""Images that are not frontal chest X-rays, made offline, for measuring the model's gate.

Each sample is an encoded file as a user would upload or send it; it goes through the one
image path (imaging.prepare) before the model sees it. Categories:

- text: rendered pages (dark on light and light on dark), like a scanned report;
- flat: constant images and smooth gradients;
- noise: uniform, Gaussian, blurred ("clouds") and salt-and-pepper noise;
- phantom: Shepp-Logan-style ellipse phantoms, a synthetic CT slice;
- photograph: the photographs shipped inside installed packages (scikit-learn's two sample
  images, matplotlib's portrait and product photo) and crops of them;
- medical, not chest: the CT, MR, nuclear-medicine and ultrasound images shipped inside
  pydicom and matplotlib (real scans of heads, spines, abdomens, a whole-body bone scan);
- rotated film / inverted film: held-out chest films turned by 90, 180 or 270 degrees, or
  with their gray levels inverted.

Nothing is downloaded: the same command gives the same set on every machine with the
project's pinned packages.
"""
import dataclasses
import gzip
import io
import os
import random
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

MIN_SIDE = 64  # imaging.prepare's default: smaller images are refused before any model
WORDS = ("patient report ward radiology discharge summary medication dose history exam "
         "results normal findings follow up clinic referral laboratory blood pressure "
         "temperature signature date page of the and with for no").split()


@dataclasses.dataclass(frozen=True)
class Sample:
    category: str
    name: str
    data: bytes  # the encoded file


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _page(rng: random.Random, inverted: bool) -> Image.Image:
    width, height = rng.choice([(600, 800), (800, 600), (512, 512), (700, 990)])
    ink, paper = (230, 20) if inverted else (20, 240)
    page = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(page)
    size = rng.randint(14, 36)
    font = ImageFont.load_default(size=size)
    y = rng.randint(10, 60)
    while y < height - size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        draw.text((rng.randint(10, 60), y), line, fill=ink, font=font)
        y += int(size * rng.uniform(1.3, 2.2))
    return page


def _shepp_logan(size: int, rng: random.Random, jitter: float) -> np.ndarray:
    """Ellipses (value, a, b, x0, y0, angle) in the unit square: a head slice's layout."""
    ellipses = [(1.0, .69, .92, 0, 0, 0), (-.8, .6624, .874, 0, -.0184, 0),
                (-.2, .11, .31, .22, 0, -18), (-.2, .16, .41, -.22, 0, 18),
                (.1, .21, .25, 0, .35, 0), (.1, .046, .046, 0, .1, 0),
                (.1, .046, .046, 0, -.1, 0), (.1, .046, .023, -.08, -.605, 0),
                (.1, .023, .023, 0, -.606, 0), (.1, .023, .046, .06, -.605, 0)]
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    image = np.zeros((size, size))
    for value, a, b, x0, y0, angle in ellipses:
        a, b = a * rng.uniform(1 - jitter, 1 + jitter), b * rng.uniform(1 - jitter, 1 + jitter)
        theta = np.radians(angle)
        xr = (x - x0) * np.cos(theta) + (y - y0) * np.sin(theta)
        yr = -(x - x0) * np.sin(theta) + (y - y0) * np.cos(theta)
        image[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += value
    return image


def _to_uint8(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return np.round((array - low) / max(high - low, 1e-9) * 255).astype(np.uint8)


def generated(seed: int = 0) -> List[Sample]:
    """Text pages, flat images, noise and phantoms."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    samples = []
    for index in range(12):
        samples.append(Sample("text", f"page-{index}",
                              _encode(_page(rng, inverted=index % 3 == 2),
                                      "JPEG" if index % 2 else "PNG")))
    for level in (0, 40, 128, 200, 255):
        samples.append(Sample("flat", f"flat-{level}",
                              _encode(Image.new("L", (256, 256), level))))
    ramp = np.linspace(0, 255, 320)
    radial = np.hypot(*np.mgrid[-1:1:320j, -1:1:320j])
    for name, array in (("horizontal-gradient", np.tile(ramp, (240, 1))),
                        ("vertical-gradient", np.tile(ramp[:240, None], (1, 320))),
                        ("radial-gradient", radial), ("colour-gradient", None)):
        if array is None:
            rgb = np.dstack([np.tile(ramp, (240, 1)), np.tile(ramp[::-1], (240, 1)),
                             np.full((240, 320), 128.0)]).astype(np.uint8)
            image = Image.fromarray(rgb, mode="RGB")
        else:
            image = Image.fromarray(_to_uint8(array), mode="L")
        samples.append(Sample("flat", name, _encode(image)))
    for index in range(3):
        samples.append(Sample("noise", f"uniform-{index}", _encode(Image.fromarray(
            nprng.integers(0, 256, (256, 256), np.uint8), mode="L"))))
        samples.append(Sample("noise", f"gaussian-{index}", _encode(Image.fromarray(
            _to_uint8(nprng.normal(0, 1, (300, 300))), mode="L"), "JPEG")))
        clouds = Image.fromarray(nprng.integers(0, 256, (320, 320), np.uint8), mode="L")
        samples.append(Sample("noise", f"clouds-{index}", _encode(
            clouds.filter(ImageFilter.GaussianBlur(4 + 6 * index)))))
        rgb = nprng.integers(0, 256, (256, 256, 3), np.uint8)
        samples.append(Sample("noise", f"colour-noise-{index}",
                              _encode(Image.fromarray(rgb, mode="RGB"))))
    salt = np.full((256, 256), 128, np.uint8)
    mask = nprng.random((256, 256))
    salt[mask < 0.1], salt[mask > 0.9] = 0, 255
    samples.append(Sample("noise", "salt-and-pepper", _encode(Image.fromarray(salt, mode="L"))))
    for index in range(4):
        phantom = _shepp_logan(256, rng, jitter=0.1 * index)
        phantom += nprng.normal(0, 0.02 * index, phantom.shape)
        samples.append(Sample("phantom", f"shepp-logan-{index}",
                              _encode(Image.fromarray(_to_uint8(phantom), mode="L"))))
    return samples


def _site_packages() -> str:
    return os.path.dirname(os.path.dirname(np.__file__))


def _photographs() -> List[Tuple[str, Image.Image]]:
    root = _site_packages()
    paths = [os.path.join(root, "sklearn", "datasets", "images", "china.jpg"),
             os.path.join(root, "sklearn", "datasets", "images", "flower.jpg"),
             os.path.join(root, "matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
             os.path.join(root, "matplotlib", "mpl-data", "sample_data",
                          "Minduka_Present_Blue_Pack.png")]
    photos = []
    for path in paths:
        if os.path.isfile(path):
            with Image.open(path) as image:
                photos.append((os.path.basename(path), image.convert("RGB")))
    return photos


def packaged(seed: int = 0) -> List[Sample]:
    """Photographs (and crops) and non-chest medical images from installed packages."""
    rng = random.Random(seed)
    samples = []
    for name, photo in _photographs():
        samples.append(Sample("photograph", name, _encode(photo, "JPEG", quality=90)))
        samples.append(Sample("photograph", f"{name}-gray", _encode(photo.convert("L"))))
        width, height = photo.size
        for index in range(3 if min(width, height) >= 2 * MIN_SIDE else 0):
            side = max(MIN_SIDE, int(min(width, height) * rng.uniform(0.35, 0.7)))
            left, top = rng.randint(0, width - side), rng.randint(0, height - side)
            crop = photo.crop((left, top, left + side, top + side))
            samples.append(Sample("photograph", f"{name}-crop-{index}",
                                  _encode(crop, "JPEG", quality=90)))
    dicom_dir = os.path.join(_site_packages(), "pydicom", "data", "test_files")
    for name in ("693_J2KI.dcm", "CT_small.dcm", "J2K_pixelrep_mismatch.dcm", "JPEG2000.dcm",
                 "MR_small.dcm", "examples_overlay.dcm", "examples_jpeg2k.dcm",
                 "examples_rgb_color.dcm"):
        path = os.path.join(dicom_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                samples.append(Sample("medical, not chest", name, f.read()))
    mri = os.path.join(_site_packages(), "matplotlib", "mpl-data", "sample_data", "s1045.ima.gz")
    if os.path.isfile(mri):
        with gzip.open(mri) as f:
            head = np.frombuffer(f.read(), ">u2").reshape(256, 256).astype(np.uint16)
        samples.append(Sample("medical, not chest", "s1045.ima (MR head)",
                              _encode(Image.fromarray(head))))
    return samples


def transformed_films(films: Sequence[Tuple[str, bytes]]) -> List[Sample]:
    """Each film turned by 90, 180 and 270 degrees, and inverted (already prepared bytes:
    8-bit JPEG or PNG)."""
    samples = []
    for name, data in films:
        with Image.open(io.BytesIO(data)) as image:
            gray = image.convert("L")
        for angle in (90, 180, 270):
            samples.append(Sample("rotated film", f"{name}-rot{angle}",
                                  _encode(gray.rotate(angle, expand=True))))
        samples.append(Sample("inverted film", f"{name}-inverted",
                              _encode(Image.fromarray(255 - np.asarray(gray), mode="L"))))
    return samples


def all_samples(films: Sequence[Tuple[str, bytes]], seed: int = 0) -> List[Sample]:
    return generated(seed) + packaged(seed) + transformed_films(films)

