"""Real bad files and data sets for the ingestion tests, made on the fly."""
import os
import shutil
from typing import Dict

import numpy as np
from PIL import Image

from conftest import SAMPLE_DIR, sample_rows
from imaging import prepare
from imaging.conftest import (PATIENT_ID, PATIENT_NAME, encode, gradient,  # noqa: F401
                              make_dicom, png_header_only)


def make_messy_data(dest: str, per_class: int = 4) -> Dict[str, str]:
    """A folder per class: per_class sample images each, plus one file of every bad kind.

    Returns {relative path: expected outcome}: "ok", "converted" or a prepare.* reason.
    """
    expected = {}
    taken = {}
    folders = {"COVID-19": "COVID", "Pneumonia": "PNEUMONIA", "Normal": "NORMAL"}
    for row in sample_rows():
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            relative = os.path.join(folders[row["label"]], os.path.basename(row["file"]))
            os.makedirs(os.path.join(dest, folders[row["label"]]), exist_ok=True)
            shutil.copy(os.path.join(SAMPLE_DIR, row["file"]), os.path.join(dest, relative))
            expected[relative] = "ok"
    first_covid = sorted(p for p in expected if p.startswith("COVID/"))[0]
    jpeg = open(os.path.join(dest, first_covid), "rb").read()
    exif = Image.Exif()
    exif[0x0112] = 8
    twelve_bit = (np.arange(96 * 80).reshape(80, 96) * 4095 // (96 * 80 - 1)).astype(np.uint16)
    bad = {
        "COVID/zero.jpg": (b"", prepare.EMPTY),
        "COVID/notes.jpg": (b"scanned on ward 3, see report\n", prepare.NOT_AN_IMAGE),
        "NORMAL/error.png": (b"<html><body>502 Bad Gateway</body></html>", prepare.NOT_AN_IMAGE),
        "PNEUMONIA/truncated.jpg": (jpeg[:len(jpeg) // 2], prepare.CORRUPT),
        "NORMAL/tiny.png": (encode(Image.new("L", (1, 1)), "PNG"), prepare.TOO_SMALL),
        "NORMAL/bomb.png": (png_header_only(40000, 40000), prepare.TOO_LARGE),
        # Same content as a COVID image, in another class: one copy only may stay.
        "PNEUMONIA/zz_copy.jpg": (jpeg, prepare.DUPLICATE),
        # Extension-less DICOM, found by its preamble.
        "NORMAL/scan0001": (make_dicom(twelve_bit, bits_stored=12, ViewPosition="PA",
                                       PatientAge="045Y", PatientSex="F"), "converted"),
        "COVID/rotated.jpg": (encode(gradient(), "JPEG", exif=exif.tobytes()), "converted"),
    }
    for relative, (data, outcome) in bad.items():
        with open(os.path.join(dest, relative), "wb") as f:
            f.write(data)
        expected[relative] = outcome
    return expected
