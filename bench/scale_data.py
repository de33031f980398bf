"""N-image data sets for the scale benchmark: distinct augmented variants of a real set.

Ingestion drops exact duplicates, so copies would not grow the data; every image here is
a different file: the source image rotated by up to ±4°, cropped to 90-100 % of each side,
brightened or darkened by up to 8 % and saved as a JPEG of quality 85-95 at the source's
size, all drawn from a generator seeded by the image's index. Each variant keeps its
source's label, patient, source, view, age group and sex, so the patient-level split keeps
every variant of a patient in one split, as it would the real images.
"""
import csv
import json
import os
import random
from typing import Dict, Optional, Sequence

from PIL import Image, ImageEnhance

from imaging import ingest
from models import features

# Written last: a folder without it (an interrupted build) is rebuilt.
MARKER = "scale_dataset.json"
MANIFEST_COLUMNS = ("file", "label", "patient_id", "source_repo", "view", "age_group", "sex")


def variant(image: Image.Image, rng: random.Random) -> Image.Image:
    """One augmented grayscale variant of the same size."""
    gray = image.convert("L")
    width, height = gray.size
    rotated = gray.rotate(rng.uniform(-4.0, 4.0), resample=Image.BILINEAR, fillcolor=0)
    crop_w, crop_h = (round(side * rng.uniform(0.90, 1.0)) for side in (width, height))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    cropped = rotated.crop((left, top, left + crop_w, top + crop_h)).resize(
        (width, height), Image.BILINEAR)
    return ImageEnhance.Brightness(cropped).enhance(rng.uniform(0.92, 1.08))


def _manifest_row(record: ingest.ImageRecord, file_name: str) -> Dict[str, str]:
    return {"file": file_name, "label": record.label, "patient_id": record.patient_id,
            "source_repo": record.source, "view": record.view, "age_group": record.age_group,
            "sex": record.sex}


def existing(out_dir: str) -> Optional[dict]:
    """The description of a finished data set in out_dir, or None."""
    try:
        with open(os.path.join(out_dir, MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build(source_dir: str, images: int, out_dir: str, seed: int = 0,
          progress: bool = True) -> dict:
    """Write `images` variants of source_dir's images to out_dir, cycling through them in a
    seeded shuffled order (so that a small set holds every class in about its share).

    Reuses a finished set with the same source, size and seed. Returns its description.
    """
    wanted = {"source": os.path.abspath(source_dir), "images": images, "seed": seed,
              "order": "shuffled"}
    found = existing(out_dir)
    if found and all(found.get(k) == v for k, v in wanted.items()):
        return found
    records = list(ingest.scan(source_dir).records)
    random.Random(seed).shuffle(records)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    marker = os.path.join(out_dir, MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    from tqdm import tqdm

    rows, bytes_written = [], 0
    for index in tqdm(range(images), desc=f"building {images} images", unit="img",
                      disable=not progress, mininterval=5):
        record = records[index % len(records)]
        rng = random.Random(f"{seed}:{index}")
        name = os.path.join("images", f"{index:06d}.jpg")
        with Image.open(record.path) as image:
            variant(image, rng).save(os.path.join(out_dir, name), format="JPEG",
                                     quality=rng.randint(85, 95))
        bytes_written += os.path.getsize(os.path.join(out_dir, name))
        rows.append(_manifest_row(record, name))
    with open(os.path.join(out_dir, ingest.MANIFEST_NAME), "w", newline="",
              encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    description = {**wanted, "source_images": len(records), "bytes": bytes_written,
                   "per_class": {name: sum(r["label"] == name for r in rows)
                                 for name in features.CLASS_NAMES}}
    with open(marker, "w", encoding="utf-8") as f:
        json.dump(description, f, indent=2)
    return description


def sizes_from_text(text: str) -> Sequence[int]:
    """'2k,10k,20000' -> [2000, 10000, 20000]."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        value = int(float(part[:-1]) * 1000) if part.endswith("k") else int(part)
        if value < 30:
            raise ValueError(f"a scale size must be at least 30 images, got {part!r}")
        sizes.append(value)
    return sorted(set(sizes))
