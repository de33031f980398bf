"""Digests of the project's own code, for TFX cache keys.

TFX keys a component's cache on its parameters and input artifacts. Code named by module
path (Transform's preprocessing_fn, Trainer's run_fn, Tuner's tuner_fn) or run inside a
custom executor is not among them, so after an edit TFX would reuse results the old code
made. A parameter carrying the code's digest makes the edit re-run the step.
"""
import glob
import hashlib
import os
from typing import Optional, Tuple

CODE_SHA256_KEY = "code_sha256"
# The folder holding the project's packages (the checkout, or site-packages when installed).
PACKAGES_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_sha256(*paths: str) -> str:
    """sha256 over the named files and packages (their *.py, tests aside), relative to
    PACKAGES_ROOT; only content and names count, so every checkout of one commit agrees."""
    files = []
    for path in paths:
        full = os.path.join(PACKAGES_ROOT, path)
        if os.path.isdir(full):
            files += sorted(name for name in glob.glob(os.path.join(full, "*.py"))
                            if not name.endswith(("_test.py", "conftest.py")))
        elif os.path.isfile(full):
            files.append(full)
        else:
            raise FileNotFoundError(f"no such source to fingerprint: {full}")
    digest = hashlib.sha256()
    for name in files:
        with open(name, "rb") as f:
            digest.update(os.path.relpath(name, PACKAGES_ROOT).encode() + b"\0" + f.read())
    return digest.hexdigest()


# Library packages outside components/ whose code a component's executor runs.
LIBRARIES = {"image_example_gen": ("imaging",)}


def component_paths(package: str) -> Tuple[str, ...]:
    """A custom component's code: components/<package>/, the libraries it runs and the
    constants it shares."""
    return (os.path.join("components", package), *LIBRARIES.get(package, ()),
            os.path.join("models", "features.py"))


def component_sha256(package: str) -> str:
    return source_sha256(*component_paths(package))


class CodeMismatchError(ValueError):
    """The code running now is not the code the pipeline was compiled with."""


def check(recorded: Optional[str], *paths: str) -> None:
    """Fails when the code at `paths` here differs from the digest recorded at compile time.

    A compiled spec names code by module path and carries these digests; on Vertex AI the
    code comes from the image, which may have been built from another checkout. Without the
    check the run would go on under a cache key that describes other code. recorded=None
    or "" (a component built before digests existed, or a test) checks nothing.
    """
    if not recorded:
        return
    actual = source_sha256(*paths)
    if actual != recorded:
        raise CodeMismatchError(
            f"the code of {', '.join(paths)} has sha256 {actual[:12]}…, not {recorded[:12]}… "
            "as when the pipeline was compiled: build the image and compile the spec from "
            "one checkout")


def check_component(recorded: Optional[str], package: str) -> None:
    check(recorded, *component_paths(package))
