"""The quarantine report: one record per file that did not become an example.

Files skipped on request (a class folder the user asked to ignore) are listed apart: they
are not bad files, and do not count against the quarantined fraction.

The executor saves it inside the examples artifact (REPORT_NAME); `cxr check-data` writes
it where the user asks, as CSV or JSON. Both build it with `IngestionReport`, and both stop
on the same conditions (`IngestionReport.problems`).
"""
import collections
import csv
import dataclasses
import io
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import tensorflow as tf

from imaging import prepare
from models import features

REPORT_NAME = "quarantine.json"
DEFAULT_MAX_QUARANTINED_FRACTION = 0.1


class QuarantineError(ValueError):
    """Too much of the data set was rejected, or a class has no valid image left."""


@dataclasses.dataclass(frozen=True)
class QuarantineRecord:
    path: str
    reason: str  # one of the reason constants in imaging/prepare.py
    detail: str


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file skipped on request (--ignore-unknown-labels): its label is not a class."""
    path: str
    label: str


@dataclasses.dataclass(frozen=True)
class Conversion:
    path: str
    conversion: str


def choose_kept(paths: Iterable[str]) -> Tuple[str, List[str]]:
    """Of files with identical content, the first path (sorted) is kept; the rest are not."""
    ordered = sorted(paths)
    return ordered[0], ordered[1:]


def duplicate_records(kept: str, duplicates: Sequence[str], labels: Dict[str, str]
                      ) -> List[QuarantineRecord]:
    records = []
    for path in duplicates:
        detail = f"same content as {kept}"
        if labels.get(path) != labels.get(kept):
            detail += f" (labelled {labels.get(path)} here, {labels.get(kept)} there)"
        records.append(QuarantineRecord(path, prepare.DUPLICATE, detail))
    return records


@dataclasses.dataclass
class IngestionReport:
    files_seen: int
    accepted_per_class: Dict[str, int]
    quarantined: List[QuarantineRecord]
    converted: List[Conversion]
    max_quarantined_fraction: float = DEFAULT_MAX_QUARANTINED_FRACTION
    skipped: List[SkippedFile] = dataclasses.field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(self.accepted_per_class.values())

    @property
    def files_checked(self) -> int:
        """Files that had to become examples: all seen but those skipped on request."""
        return self.files_seen - len(self.skipped)

    def skipped_per_label(self) -> Dict[str, int]:
        return dict(sorted(collections.Counter(s.label for s in self.skipped).items()))

    def counts_per_reason(self) -> Dict[str, int]:
        counts = collections.Counter(record.reason for record in self.quarantined)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def problems(self) -> List[str]:
        """Why a run on this data must stop; empty when it may go on."""
        problems = []
        share = len(self.quarantined) / max(self.files_checked, 1)
        if share > self.max_quarantined_fraction:
            reasons = ", ".join(f"{reason} {count}"
                                for reason, count in self.counts_per_reason().items())
            problems.append(
                f"{len(self.quarantined)} of {self.files_checked} files ({share:.0%}) were "
                f"quarantined, more than the allowed {self.max_quarantined_fraction:.0%} "
                f"({reasons})")
        empty = [name for name in features.CLASS_NAMES if not self.accepted_per_class.get(name)]
        if empty:
            problems.append(f"no valid image of class {', '.join(empty)}; every class of "
                            f"{', '.join(features.CLASS_NAMES)} needs images")
        return problems

    def raise_on_problems(self, report_path: Optional[str]) -> None:
        """report_path: where the report was written; None when it was not."""
        problems = self.problems()
        if problems:
            where = (f"is in {report_path}" if report_path else
                     "is listed with --report PATH")
            raise QuarantineError(f"{'; '.join(problems)}. Every rejected file and its reason "
                                  f"{where}")

    def summary_lines(self) -> List[str]:
        per_class = ", ".join(f"{name} {self.accepted_per_class.get(name, 0)}"
                              for name in features.CLASS_NAMES)
        lines = [f"Ingestion: {self.files_seen} files, {self.accepted} accepted ({per_class}), "
                 f"{len(self.converted)} of them converted, {len(self.quarantined)} quarantined"]
        lines += [f"  {count:5d}  {reason}" for reason, count in self.counts_per_reason().items()]
        if self.skipped:
            labels = ", ".join(f"{label or '(empty)'} {count}"
                               for label, count in self.skipped_per_label().items())
            files = f"{len(self.skipped)} file{'' if len(self.skipped) == 1 else 's'}"
            lines.append(f"Skipped on request (--ignore-unknown-labels): {files}, not counted "
                         f"as quarantined ({labels})")
        return lines

    def to_json(self) -> dict:
        return {
            "files_seen": self.files_seen,
            "accepted_per_class": self.accepted_per_class,
            "max_quarantined_fraction": self.max_quarantined_fraction,
            "quarantined_per_reason": self.counts_per_reason(),
            "quarantined": [dataclasses.asdict(r) for r in self.quarantined],
            "converted": [dataclasses.asdict(c) for c in self.converted],
            "skipped_per_label": self.skipped_per_label(),
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_json(cls, data: dict) -> "IngestionReport":
        return cls(files_seen=data["files_seen"],
                   accepted_per_class=data["accepted_per_class"],
                   quarantined=[QuarantineRecord(**r) for r in data["quarantined"]],
                   converted=[Conversion(**c) for c in data["converted"]],
                   max_quarantined_fraction=data["max_quarantined_fraction"],
                   skipped=[SkippedFile(**s) for s in data.get("skipped", [])])

    def write(self, path: str) -> None:
        """JSON (everything) for .json paths, else CSV: path, reason, detail per rejected file."""
        parent = os.path.dirname(path)
        if parent:
            tf.io.gfile.makedirs(parent)
        if path.lower().endswith(".json"):
            text = json.dumps(self.to_json(), indent=2)
        else:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["path", "reason", "detail"])
            writer.writerows((r.path, r.reason, r.detail) for r in self.quarantined)
            text = buffer.getvalue()
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)


def load(path: str) -> IngestionReport:
    with tf.io.gfile.GFile(path) as f:
        return IngestionReport.from_json(json.load(f))
