"""`python -m cxr.requirements EXTRA`: one extra's requirements from the installed metadata.

The Dockerfile installs the project with --no-deps on the TFX image and then only the extras
that image lacks; the CLI checks an optional part (setup.py's extras) is installed before a
command uses it. Reading them from the metadata keeps setup.py their single source.
"""
import sys
from importlib import metadata
from typing import List, Optional

from packaging.requirements import Requirement

DISTRIBUTION = "cxr-tfx"


def extra_requirements(extra: str) -> List[str]:
    requirements = [Requirement(text) for text in metadata.requires(DISTRIBUTION) or []]
    chosen = [str(r).split(";")[0].strip() for r in requirements
              if r.marker is not None and r.marker.evaluate({"extra": extra})]
    if not chosen:
        raise SystemExit(f"{DISTRIBUTION} has no extra named {extra!r}")
    return chosen


def _installed_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_extra(extra: str) -> Optional[str]:
    """None when every requirement of `extra` is installed, else one line: what is missing
    and the command that installs it."""
    try:
        requirements = [Requirement(text) for text in extra_requirements(extra)]
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        return None
    versions = {r.name: _installed_version(r.name) for r in requirements}
    absent = [r.name for r in requirements if versions[r.name] is None]
    problems = [f"{r.name} is {versions[r.name]}, needs {r.specifier}" for r in requirements
                if versions[r.name] is not None
                and not r.specifier.contains(versions[r.name], prereleases=True)]
    if absent:
        problems.insert(0, f"{', '.join(absent)} not installed")
    if not problems:
        return None
    return (f"needs the optional part {extra!r} ({'; '.join(problems)}): "
            f"pip install -c constraints.txt -e \".[{extra}]\"")

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m cxr.requirements EXTRA")
    print("\n".join(extra_requirements(sys.argv[1])))
