"""Finding images and their metadata on disk, and the patient-level split.

Two layouts are accepted: a folder per class (Kaggle style) or a folder holding a
`manifest.csv`. Labels are mapped to the canonical class names through the aliases in
models.features; a label that matches no alias is kept as written so that the schema's
label domain, checked by ExampleValidator, names it and stops the run. Files are read
through tf.io.gfile, so the folder may be on Cloud Storage (gs://...) for Vertex AI and
Dataflow.
"""
import csv
import hashlib
import io
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

import tensorflow as tf

from models import features

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MANIFEST_NAME = "manifest.csv"
MANIFEST_REQUIRED_COLUMNS = ("file", "label")
# Manifest column -> example feature, for the optional metadata columns.
MANIFEST_OPTIONAL_COLUMNS = {
    "patient_id": features.PATIENT_ID_KEY,
    "source_repo": features.SOURCE_KEY,
    "view": features.VIEW_KEY,
    "age_group": features.AGE_GROUP_KEY,
}
# Kermany-style file names carry the patient: person123_bacteria_456.jpeg, IM-0456-0001.jpeg.
_PATIENT_IN_FILENAME = re.compile(r"^(person\d+|(?:NORMAL2-)?IM-\d+)[_-]", re.IGNORECASE)


class DataError(ValueError):
    """The data directory cannot be read as a data set; the message says why."""


@dataclass(frozen=True)
class ImageRecord:
    path: str
    label: str
    patient_id: str
    source: str = features.UNKNOWN
    view: str = features.UNKNOWN
    age_group: str = features.UNKNOWN


def canonical_label(name: str) -> str:
    """Map a folder or manifest label to a class name; unknown names come back unchanged."""
    if name in features.CLASS_NAMES:
        return name
    key = re.sub(r"[\s_\-]", "", name.strip().lower())
    return features.LABEL_ALIASES.get(key, name.strip())


def patient_from_filename(path: str) -> str:
    """Patient id for images without a manifest: Kermany's naming, else the file itself."""
    name = os.path.basename(path)
    match = _PATIENT_IN_FILENAME.match(name)
    return match.group(1) if match else os.path.splitext(name)[0]


def scan(data_dir: str) -> List[ImageRecord]:
    """List the data set's images with their metadata, in a stable order."""
    if not tf.io.gfile.isdir(data_dir):
        raise DataError(f"data directory not found: {data_dir}")
    manifest = os.path.join(data_dir, MANIFEST_NAME)
    has_manifest = tf.io.gfile.exists(manifest) and not tf.io.gfile.isdir(manifest)
    records = _scan_manifest(manifest) if has_manifest else _scan_folders(data_dir)
    if not records:
        raise DataError(
            f"no images found in {data_dir}: expected a folder per class with "
            f"{'/'.join(IMAGE_EXTENSIONS)} files, or a {MANIFEST_NAME}")
    return sorted(records, key=lambda r: r.path)


def _scan_folders(data_dir: str) -> List[ImageRecord]:
    records = []
    for folder in sorted(entry.rstrip("/") for entry in tf.io.gfile.listdir(data_dir)):
        class_dir = os.path.join(data_dir, folder)
        if folder.startswith(".") or not tf.io.gfile.isdir(class_dir):
            continue
        label = canonical_label(folder)
        for root, _, files in tf.io.gfile.walk(class_dir):
            for name in files:
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    path = os.path.join(root, name)
                    records.append(ImageRecord(path, label, patient_from_filename(path)))
    return records


def _scan_manifest(manifest: str) -> List[ImageRecord]:
    base = os.path.dirname(manifest)
    with tf.io.gfile.GFile(manifest, "rb") as f:
        text = f.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in MANIFEST_REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{manifest} lacks required column(s): {', '.join(missing)}")
    records = []
    for row in reader:
        path = os.path.join(base, row["file"])
        metadata = {
            feature: (row.get(column) or "").strip() or features.UNKNOWN
            for column, feature in MANIFEST_OPTIONAL_COLUMNS.items()
        }
        if metadata[features.PATIENT_ID_KEY] == features.UNKNOWN:
            metadata[features.PATIENT_ID_KEY] = patient_from_filename(path)
        records.append(ImageRecord(path=path, label=canonical_label(row["label"]), **metadata))
    return records


def _split_sizes(n: int, proportions: Sequence[float]) -> List[int]:
    """Largest-remainder allocation, giving every split one patient once there are enough."""
    raw = [n * p for p in proportions]
    sizes = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (sizes[i] - raw[i], i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    if n >= len(proportions):
        for i, size in enumerate(sizes):
            if size == 0 and proportions[i] > 0:
                donor = max(range(len(sizes)), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] = 1
    return sizes


def assign_splits(images: Iterable[Tuple[str, str, str]], proportions: Sequence[float],
                  seed: int = 0, split_names: Sequence[str] = features.SPLIT_NAMES
                  ) -> Dict[str, str]:
    """Patient id -> split name, from (patient_id, label, source) of every image.

    Stratified by class and source.
    Every image of a patient goes to one split, so no patient leaks between train and
    test. The order within a stratum comes from a seeded hash of the patient id, so the
    result does not depend on file listing order and is the same on every machine.
    """
    if len(proportions) != len(split_names) or any(p < 0 for p in proportions) \
            or not math.isclose(sum(proportions), 1.0, abs_tol=1e-6):
        raise DataError(f"split proportions must be {len(split_names)} non-negative "
                        f"numbers summing to 1, got {list(proportions)}")
    patient_labels: Dict[str, set] = defaultdict(set)
    patient_sources: Dict[str, set] = defaultdict(set)
    for patient, label, source in images:
        patient_labels[patient].add(label)
        patient_sources[patient].add(source)
    strata: Dict[tuple, List[str]] = defaultdict(list)
    for patient in patient_labels:
        key = (tuple(sorted(patient_labels[patient])), tuple(sorted(patient_sources[patient])))
        strata[key].append(patient)

    def rank(patient: str) -> str:
        return hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()

    assignment = {}
    for key in sorted(strata):
        patients = sorted(strata[key], key=rank)
        start = 0
        for name, size in zip(split_names, _split_sizes(len(patients), proportions)):
            for patient in patients[start:start + size]:
                assignment[patient] = name
            start += size
    return assignment
