"""`python -m cxr.requirements EXTRA`: one extra's requirements from the installed metadata.

The Dockerfile installs the project with --no-deps on the TFX image and then only the extras
that image lacks; reading them from the metadata keeps setup.py their single source.
"""
import sys
from importlib import metadata
from typing import List

from packaging.requirements import Requirement

DISTRIBUTION = "cxr-tfx"


def extra_requirements(extra: str) -> List[str]:
    requirements = [Requirement(text) for text in metadata.requires(DISTRIBUTION) or []]
    chosen = [str(r).split(";")[0].strip() for r in requirements
              if r.marker is not None and r.marker.evaluate({"extra": extra})]
    if not chosen:
        raise SystemExit(f"{DISTRIBUTION} has no extra named {extra!r}")
    return chosen


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m cxr.requirements EXTRA")
    print("\n".join(extra_requirements(sys.argv[1])))
