"""Finding images and their metadata on disk, checking them, and the patient-level split.

Two layouts are accepted: a folder per class (Kaggle style) or a folder holding a
`manifest.csv`. Labels are mapped to the canonical class names through LABEL_ALIASES; a
label that matches no alias stops ingestion with an error listing the known labels, or, with
ignore_unknown_labels, skips its files (listed apart in the report, not quarantined). A
manifest `sex` that is not a known spelling stops it likewise (no flag: the cell is wrong, not the image). Every
file under a class folder is a candidate, whatever its extension: imaging/prepare.py decides
from the content.
Files are read through tf.io.gfile, so the folder may be on Cloud Storage (gs://...) for
Vertex AI and Dataflow.
"""
import csv
import hashlib
import io
import math
import os
import re
from collections import defaultdict
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from imaging import prepare, quarantine
from models import features

# Folder names users give their classes (Kaggle and hospital exports), matched after
# lower-casing and dropping spaces, dashes and underscores.
LABEL_ALIASES: Dict[str, str] = {
    "covid19": "COVID-19",
    "covid": "COVID-19",
    "sarscov2": "COVID-19",
    "pneumonia": "Pneumonia",
    "viral": "Pneumonia",
    "bacterial": "Pneumonia",
    "viralpneumonia": "Pneumonia",
    "bacterialpneumonia": "Pneumonia",
    "normal": "Normal",
    "nofinding": "Normal",
    "healthy": "Normal",
}
# Manifest spellings, matched after lower-casing and stripping; an empty cell is UNKNOWN too.
SEX_ALIASES: Dict[str, str] = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "o": "O",
    "other": "O",
    "u": features.UNKNOWN,
    "unknown": features.UNKNOWN,
}

MANIFEST_NAME = "manifest.csv"
MANIFEST_REQUIRED_COLUMNS = ("file", "label")
# Manifest column -> example feature, for the optional metadata columns.
MANIFEST_OPTIONAL_COLUMNS = {
    "patient_id": features.PATIENT_ID_KEY,
    "source_repo": features.SOURCE_KEY,
    "view": features.VIEW_KEY,
    "age_group": features.AGE_GROUP_KEY,
}
MANIFEST_SEX_COLUMN = "sex"
# Kermany-style file names carry the patient: person123_bacteria_456.jpeg, IM-0456-0001.jpeg.
_PATIENT_IN_FILENAME = re.compile(r"^(person\d+|(?:NORMAL2-)?IM-\d+)[_-]", re.IGNORECASE)


class DataError(ValueError):
    """The data directory cannot be read as a data set; the message says why."""


@dataclass(frozen=True)
class IngestOptions:
    """What the user can tune about ingestion (flags of `cxr run` and `cxr check-data`)."""
    min_image_side: int = prepare.CheckOptions.min_side
    max_image_pixels: int = prepare.CheckOptions.max_pixels
    max_quarantined_fraction: float = quarantine.DEFAULT_MAX_QUARANTINED_FRACTION
    ignore_unknown_labels: bool = False

    def __post_init__(self):
        if self.min_image_side < 1:
            raise ValueError(f"min_image_side must be at least 1, got {self.min_image_side}")
        if self.max_image_pixels < self.min_image_side ** 2:
            raise ValueError(f"max_image_pixels must be at least min_image_side squared "
                             f"({self.min_image_side ** 2}), got {self.max_image_pixels}")
        if not 0.0 <= self.max_quarantined_fraction <= 1.0:
            raise ValueError(f"max_quarantined_fraction must be between 0 and 1, got "
                             f"{self.max_quarantined_fraction}")

    @property
    def file_checks(self) -> prepare.CheckOptions:
        return prepare.CheckOptions(min_side=self.min_image_side, max_pixels=self.max_image_pixels)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "IngestOptions":
        """From to_dict's output after a JSON round trip (which turns ints into floats)."""
        return cls(min_image_side=int(values["min_image_side"]),
                   max_image_pixels=int(values["max_image_pixels"]),
                   max_quarantined_fraction=float(values["max_quarantined_fraction"]),
                   ignore_unknown_labels=bool(values["ignore_unknown_labels"]))


@dataclass(frozen=True)
class ImageRecord:
    path: str
    label: str
    patient_id: str
    source: str = features.UNKNOWN
    view: str = features.UNKNOWN
    age_group: str = features.UNKNOWN
    sex: str = features.UNKNOWN


@dataclass(frozen=True)
class Listing:
    """What the report needs of a scan. Beam pickles the report step with dill several times
    per run; a whole ScanResult (every record) took 0.16 s a time on 1,014 files."""
    files_seen: int
    quarantined: List[quarantine.QuarantineRecord]
    skipped: List[quarantine.SkippedFile]


@dataclass(frozen=True)
class ScanResult:
    records: List[ImageRecord]                   # files to check
    quarantined: List[quarantine.QuarantineRecord]  # files already rejected by the listing
    skipped: List[quarantine.SkippedFile] = dataclasses.field(default_factory=list)

    @property
    def files_seen(self) -> int:
        return len(self.records) + len(self.quarantined) + len(self.skipped)

    @property
    def listing(self) -> Listing:
        return Listing(self.files_seen, self.quarantined, self.skipped)

    def empty_classes(self) -> List[str]:
        """Classes without a single file: known before any file is checked."""
        present = {record.label for record in self.records}
        return [name for name in features.CLASS_NAMES if name not in present]


@dataclass(frozen=True)
class Accepted:
    record: ImageRecord  # view, age group and sex filled in from a DICOM header where unknown
    image: prepare.PreparedImage

    @property
    def content_sha256(self) -> str:
        return self.image.content_sha256


@dataclass(frozen=True)
class CheckedFile:
    """An accepted file without its bytes: what deduplication, the split and the report need.

    Ingestion passes these between its steps and reads each file again only to write it
    (reload): steps that carried the bytes held every image of the data set in memory at
    once (Beam's in-process runner keeps whole collections between fused stages).
    """
    record: ImageRecord
    content_sha256: str  # of the original file
    height: int
    width: int
    conversion: Optional[str] = None


class FileChangedError(RuntimeError):
    """A file's content changed between its check and its writing."""


def canonical_label(name: str) -> str:
    """Map a folder or manifest label to a class name; unknown names come back stripped."""
    if name in features.CLASS_NAMES:
        return name
    key = re.sub(r"[\s_\-]", "", name.strip().lower())
    return LABEL_ALIASES.get(key, name.strip())


def canonical_sex(value: Optional[str]) -> Optional[str]:
    """A manifest cell -> one of features.SEXES or UNKNOWN (empty cells too); None if invalid."""
    key = (value or "").strip().lower()
    return SEX_ALIASES.get(key) if key else features.UNKNOWN


def patient_from_filename(path: str) -> str:
    """Patient id for images without a manifest: Kermany's naming, else the file itself."""
    name = os.path.basename(path)
    match = _PATIENT_IN_FILENAME.match(name)
    return match.group(1) if match else os.path.splitext(name)[0]


def scan(data_dir: str, ignore_unknown_labels: bool = False) -> ScanResult:
    """List the data set's files with their metadata, in a stable order."""
    if not tf.io.gfile.isdir(data_dir):
        raise DataError(f"data directory not found: {data_dir}")
    manifest = os.path.join(data_dir, MANIFEST_NAME)
    has_manifest = tf.io.gfile.exists(manifest) and not tf.io.gfile.isdir(manifest)
    records, missing = _scan_manifest(manifest) if has_manifest else (_scan_folders(data_dir), [])
    if not records and not missing:
        raise DataError(
            f"no images found in {data_dir}: expected a folder per class or a {MANIFEST_NAME}")
    quarantined = list(missing)
    unknown = sorted({r.label for r in records if r.label not in features.CLASS_NAMES})
    if unknown:
        if not ignore_unknown_labels:
            counts = ", ".join(f"{label or '(empty)'} "
                               f"({sum(r.label == label for r in records)} files)"
                               for label in unknown)
            raise DataError(
                f"unknown label(s) {counts}; known labels: {', '.join(features.CLASS_NAMES)} "
                f"(folder names may also be any of: {', '.join(sorted(LABEL_ALIASES))}). "
                "Rename or move them, or pass --ignore-unknown-labels to skip those files")
        skipped = [quarantine.SkippedFile(r.path, r.label) for r in records if r.label in unknown]
        records = [r for r in records if r.label not in unknown]
    else:
        skipped = []
    return ScanResult(sorted(records, key=lambda r: r.path),
                      sorted(quarantined, key=lambda q: q.path),
                      sorted(skipped, key=lambda s: s.path))


def _scan_folders(data_dir: str) -> List[ImageRecord]:
    records = []
    for folder in sorted(entry.rstrip("/") for entry in tf.io.gfile.listdir(data_dir)):
        class_dir = os.path.join(data_dir, folder)
        if folder.startswith(".") or not tf.io.gfile.isdir(class_dir):
            continue
        label = canonical_label(folder)
        for root, _, files in tf.io.gfile.walk(class_dir):
            for name in files:
                path = os.path.join(root, name)
                records.append(ImageRecord(path, label, patient_from_filename(path)))
    return records


def _scan_manifest(manifest: str) -> Tuple[List[ImageRecord], List[quarantine.QuarantineRecord]]:
    base = os.path.dirname(manifest)
    with tf.io.gfile.GFile(manifest, "rb") as f:
        text = f.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    missing_columns = [c for c in MANIFEST_REQUIRED_COLUMNS if c not in columns]
    if missing_columns:
        raise DataError(f"{manifest} lacks required column(s): {', '.join(missing_columns)}")
    records, missing_files = [], []
    bad_sexes: Dict[str, List[int]] = defaultdict(list)
    for line, row in enumerate(reader, start=2):
        path = os.path.join(base, (row["file"] or "").strip())
        if not (row["file"] or "").strip() or not tf.io.gfile.exists(path) \
                or tf.io.gfile.isdir(path):
            missing_files.append(quarantine.QuarantineRecord(
                path, prepare.MISSING, f"{MANIFEST_NAME} line {line} names {row['file']!r}, "
                                       "which is not a file"))
            continue
        metadata = {
            feature: (row.get(column) or "").strip() or features.UNKNOWN
            for column, feature in MANIFEST_OPTIONAL_COLUMNS.items()
        }
        if metadata[features.PATIENT_ID_KEY] == features.UNKNOWN:
            metadata[features.PATIENT_ID_KEY] = patient_from_filename(path)
        sex = canonical_sex(row.get(MANIFEST_SEX_COLUMN))
        if sex is None:
            bad_sexes[row[MANIFEST_SEX_COLUMN].strip()].append(line)
            continue
        records.append(ImageRecord(path=path, label=canonical_label(row["label"] or ""),
                                   sex=sex, **metadata))
    if bad_sexes:
        values = ", ".join(
            f"{value!r} ({len(lines)} row{'s' * (len(lines) > 1)}, first on line {lines[0]})"
            for value, lines in sorted(bad_sexes.items()))
        raise DataError(f"{manifest}: unknown {MANIFEST_SEX_COLUMN} value(s) {values}; use one "
                        f"of {', '.join(SEX_ALIASES)} (any case), or leave the cell "
                        "empty when it is not known")
    return records, missing_files


def inspect_record(record: ImageRecord, options: prepare.CheckOptions
                   ) -> Union[Accepted, quarantine.QuarantineRecord]:
    """Read one file and check it; never raises for a bad file."""
    try:
        with tf.io.gfile.GFile(record.path, "rb") as f:
            data = f.read()
    except (tf.errors.OpError, OSError) as error:
        return quarantine.QuarantineRecord(record.path, prepare.MISSING if isinstance(
            error, tf.errors.NotFoundError) else prepare.CORRUPT, f"cannot read the file: {error}")
    try:
        image = prepare.prepare_image(data, options)
    except prepare.Rejected as rejection:
        return quarantine.QuarantineRecord(record.path, rejection.reason, rejection.detail)
    header = image.dicom_metadata or {}
    updates = {key: header[key]
               for key in (features.VIEW_KEY, features.AGE_GROUP_KEY, features.SEX_KEY)
               if getattr(record, key) == features.UNKNOWN and key in header}
    return Accepted(dataclasses.replace(record, **updates), image)


def without_bytes(accepted: Accepted) -> CheckedFile:
    image = accepted.image
    return CheckedFile(accepted.record, image.content_sha256, image.height, image.width,
                       image.conversion)


def reload(checked: CheckedFile, options: prepare.CheckOptions) -> Accepted:
    """The bytes to store for a file accepted earlier: read again, and converted again when
    it was converted (DICOM, EXIF rotation...). Raises FileChangedError when the content is
    no longer what was checked."""
    with tf.io.gfile.GFile(checked.record.path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != checked.content_sha256:
        raise FileChangedError(f"{checked.record.path} changed while it was being ingested; "
                               "run again once the data folder is no longer being written")
    if checked.conversion:
        image = prepare.prepare_image(data, options)
    else:
        image = prepare.PreparedImage(encoded=data, height=checked.height, width=checked.width,
                                      content_sha256=checked.content_sha256)
    return Accepted(checked.record, image)


def deduplicate(accepted: Iterable[Union[Accepted, CheckedFile]]
                ) -> Tuple[List[Union[Accepted, CheckedFile]], List[quarantine.QuarantineRecord]]:
    """Keep one file of each exact content; the others become quarantine records."""
    by_content: Dict[str, list] = defaultdict(list)
    for item in accepted:
        by_content[item.content_sha256].append(item)
    kept, duplicates = [], []
    for group in by_content.values():
        by_path = {item.record.path: item for item in group}
        kept_path, others = quarantine.choose_kept(by_path)
        kept.append(by_path[kept_path])
        duplicates += quarantine.duplicate_records(
            kept_path, others, {path: item.record.label for path, item in by_path.items()})
    return kept, duplicates


@dataclass
class KeptTally:
    """All the report needs of the kept images: a count per class and the converted files.

    A tally, not a list of every kept file: it is what ingestion holds for the report while
    it runs, and it grows with the conversions only.
    """
    per_class: Dict[str, int] = dataclasses.field(
        default_factory=lambda: {name: 0 for name in features.CLASS_NAMES})
    conversions: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, how)

    def add(self, label: str, path: str, conversion: Optional[str]) -> "KeptTally":
        self.per_class[label] = self.per_class.get(label, 0) + 1
        if conversion:
            self.conversions.append((path, conversion))
        return self

    def merge(self, other: "KeptTally") -> "KeptTally":
        for label, count in other.per_class.items():
            self.per_class[label] = self.per_class.get(label, 0) + count
        self.conversions += other.conversions
        return self


def make_report(listing: Listing, kept: KeptTally,
                rejected: Iterable[quarantine.QuarantineRecord], options: IngestOptions
                ) -> quarantine.IngestionReport:
    """The report from the listing, the tally of the kept images and the rejections."""
    return quarantine.IngestionReport(
        files_seen=listing.files_seen,
        accepted_per_class={name: kept.per_class.get(name, 0) for name in features.CLASS_NAMES},
        quarantined=sorted(list(listing.quarantined) + list(rejected), key=lambda q: q.path),
        converted=sorted((quarantine.Conversion(path, conversion)
                          for path, conversion in kept.conversions), key=lambda c: c.path),
        max_quarantined_fraction=options.max_quarantined_fraction,
        skipped=list(listing.skipped))


def check_data(data_dir: str, options: IngestOptions, progress: bool = False) -> Tuple[
        List[CheckedFile], quarantine.IngestionReport]:
    """Every check the executor makes, without Beam or TFX: for `cxr check-data`.

    progress: a progress bar on stderr (tqdm, on a terminal) while the files are checked.
    """
    from tqdm import tqdm

    scanned = scan(data_dir, options.ignore_unknown_labels)
    checked, rejected = [], []
    for record in tqdm(scanned.records, desc="checking files", unit="file",
                       disable=None if progress else True, mininterval=1):
        outcome = inspect_record(record, options.file_checks)
        if isinstance(outcome, Accepted):
            checked.append(without_bytes(outcome))
        else:
            rejected.append(outcome)
    kept, duplicates = deduplicate(checked)
    tally = KeptTally()
    for item in kept:
        tally.add(item.record.label, item.record.path, item.conversion)
    report = make_report(scanned.listing, tally, rejected + duplicates, options)
    return sorted(kept, key=lambda a: a.record.path), report


def _patient_position(seed: int, patient: str) -> float:
    """A patient's fixed place in [0, 1): a seeded hash of the id and nothing else."""
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _distance_to_split(position: float, bounds: Tuple[float, float]) -> float:
    low, high = bounds
    return max(low - position, position - high, 0.0)


def assign_splits(images: Iterable[Tuple[str, str]], proportions: Sequence[float],
                  seed: int = 0, split_names: Sequence[str] = features.SPLIT_NAMES
                  ) -> Dict[str, str]:
    """Patient id -> split name, from (patient_id, label) of every image.

    Every image of a patient goes to one split, so no patient leaks between train and
    test. A patient's split is read off its own seeded hash (a point in [0, 1) against the
    cumulative proportions), so it depends on that patient alone: images and patients added
    later never move a patient already there, and a model's next version is tested on the
    same test patients. Hashing alone can leave a small data set without some class in some
    split; then, for each such gap, the patient of that class whose hash lies nearest to the
    split is moved into it (one that is not the last of its class in its own split). That
    happens only while a class has few patients; with more of them the hash alone decides.
    """
    if len(proportions) != len(split_names) or any(p < 0 for p in proportions) \
            or not math.isclose(sum(proportions), 1.0, abs_tol=1e-6):
        raise DataError(f"split proportions must be {len(split_names)} non-negative "
                        f"numbers summing to 1, got {list(proportions)}")
    patient_labels: Dict[str, set] = defaultdict(set)
    for patient, label in images:
        patient_labels[patient].add(label)
    edges = [sum(proportions[:i]) for i in range(len(proportions) + 1)]
    bounds = {name: (edges[i], edges[i + 1]) for i, name in enumerate(split_names)}
    used = [name for name, share in zip(split_names, proportions) if share > 0]
    position = {patient: _patient_position(seed, patient) for patient in patient_labels}
    assignment = {patient: next((name for name in used if point < bounds[name][1]), used[-1])
                  for patient, point in position.items()}
    members: Dict[str, List[str]] = defaultdict(list)
    for patient in sorted(patient_labels, key=lambda p: (position[p], p)):
        for label in patient_labels[patient]:
            members[label].append(patient)

    def count(label: str, split: str) -> int:
        return sum(assignment[p] == split for p in members[label])

    for split in used:
        for label in sorted(members):
            if count(label, split) or len(members[label]) < len(used):
                continue
            movable = [p for p in members[label]
                       if all(count(other, assignment[p]) > 1 for other in patient_labels[p])]
            if movable:
                nearest = min(movable, key=lambda p: _distance_to_split(position[p],
                                                                        bounds[split]))
                assignment[nearest] = split
    return assignment
