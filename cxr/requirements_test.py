import subprocess
import sys

from cxr import requirements


def test_dicom_extra_lists_the_readers_the_tfx_image_lacks():
    names = [r.split("<")[0].split(">")[0] for r in requirements.extra_requirements("dicom")]
    assert names == ["pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
                     "pylibjpeg-rle"]


def test_unknown_extra_is_one_line_and_non_zero():
    result = subprocess.run([sys.executable, "-m", "cxr.requirements", "dicomm"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "cxr-tfx has no extra named 'dicomm'"
