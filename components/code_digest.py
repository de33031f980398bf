"""Digests of the project's own code, for TFX cache keys.

TFX keys a component's cache on its parameters and input artifacts. Code named by module
path (Transform's preprocessing_fn, Trainer's run_fn, Tuner's tuner_fn) or run inside a
custom executor is not among them, so after an edit TFX would reuse results the old code
made. A parameter carrying the code's digest makes the edit re-run the step.
"""
import ast
import hashlib
import os
from typing import Iterator, Optional, Tuple

CODE_SHA256_KEY = "code_sha256"
# The folder holding the project's packages (the checkout, or site-packages when installed).
PACKAGES_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_sha256(*files: str) -> str:
    """sha256 over the named files, relative to PACKAGES_ROOT; only content and names count,
    so every checkout of one commit agrees."""
    digest = hashlib.sha256()
    for name in sorted(files):
        with open(os.path.join(PACKAGES_ROOT, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


# The project's top-level packages (setup.py's `packages`): imports of anything else are
# third-party code, which the installed versions pin, not this digest.
PROJECT_PACKAGES = ("app", "components", "cxr", "evaluation", "explain", "imaging", "models",
                    "pipeline", "schemas", "serving")


def _module_file(module: str) -> Optional[str]:
    base = os.path.join(PACKAGES_ROOT, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _imported_modules(path: str, module: str) -> Iterator[str]:
    """Every module an import statement anywhere in the file may load (lazy imports inside
    functions included: an executor runs them), and for `from a import b` both a and a.b."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(part for part in [*parent, base] if part)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def imported_sources(*modules: str) -> Tuple[str, ...]:
    """The project's files that running `modules` loads: the modules, what they import
    (transitively) and the packages' __init__.py files on the way, relative to PACKAGES_ROOT."""
    seen, files, pending = set(), set(), list(modules)
    while pending:
        module = pending.pop()
        if module in seen or module.split(".")[0] not in PROJECT_PACKAGES:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = _module_file(module)
        if path is None:
            continue  # `from package import name` where name is not a module
        files.add(os.path.relpath(path, PACKAGES_ROOT))
        pending += list(_imported_modules(path, module))
    missing = [module for module in modules if _module_file(module) is None]
    if missing:
        raise FileNotFoundError(f"no such module to fingerprint: {', '.join(missing)}")
    return tuple(sorted(files))


def module_sha256(*modules: str) -> str:
    """sha256 over the project code that running `modules` loads."""
    return source_sha256(*imported_sources(*modules))


def function_module(function_path: str) -> str:
    """"models.trainer.run_fn" -> "models.trainer"."""
    return function_path.rpartition(".")[0]


def component_modules(package: str) -> Tuple[str, str]:
    """A custom component's code: components/<package>/ component.py and executor.py."""
    return f"components.{package}.component", f"components.{package}.executor"


def component_sha256(package: str) -> str:
    return module_sha256(*component_modules(package))


class CodeMismatchError(ValueError):
    """The code running now is not the code the pipeline was compiled with."""


def check(recorded: Optional[str], *modules: str) -> None:
    """Fails when the code that `modules` load here differs from the digest recorded at
    compile time.

    A compiled spec names code by module path and carries these digests; on Vertex AI the
    code comes from the image, which may have been built from another checkout. Without the
    check the run would go on under a cache key that describes other code. recorded=None
    or "" (a component built before digests existed, or a test) checks nothing.
    """
    if not recorded:
        return
    sources = imported_sources(*modules)
    actual = source_sha256(*sources)
    if actual != recorded:
        folders = sorted({os.path.dirname(source) for source in sources})
        raise CodeMismatchError(
            f"the code of {', '.join(modules)} ({len(sources)} files in {', '.join(folders)}) "
            f"has sha256 {actual[:12]}…, not {recorded[:12]}… as when the pipeline was "
            "compiled: build the image and compile the spec from one checkout")


def check_component(recorded: Optional[str], package: str) -> None:
    check(recorded, *component_modules(package))
