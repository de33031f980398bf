"""The README and docs/ pages against the project: every relative link and anchor resolves,
every project path they name exists, and every `cxr` command they show exists with the flags
they give it."""
import contextlib
import glob
import io
import os
import re
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from cxr import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("run", "compare", "compile", "submit", "run-spec", "predict", "serve", "export",
            "gradcam", "check-data", "app")
# Their flags are only registered when the command is chosen, and that imports TensorFlow.
FLAGS_NEED_TENSORFLOW = {"export", "app"}
LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*?\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
COMMAND = re.compile(r"(?:^|[\s/])cxr((?:\s+--[a-z-]+)*)\s+([a-z][a-z-]*)")
# A path into the project as the pages write it in code: `models/trainer.py`,
# `components/<name>/`, `models/trainer.BestEpoch` (a module's attribute).
PROJECT_PATH = re.compile(r"(?<![\w/.$<-])((?:cxr|pipeline|components|imaging|models|serving|app"
                          r"|schemas|data|notebooks|bench|docs|\.ci)/[\w./*<>-]*)")
FLAG = re.compile(r"(?<![\w=-])--([a-z][a-z0-9-]*)(?=[\s=\]|,)]|$)")


def doc_files() -> List[str]:
    files = [os.path.join(REPO, "README.md")]
    for folder, _, names in os.walk(os.path.join(REPO, "docs")):
        files += [os.path.join(folder, name) for name in names if name.endswith(".md")]
    return sorted(files)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: str) -> Set[str]:
    seen: Dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", read(path)).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: str) -> Iterator[str]:
    for target in LINK.findall(FENCE.sub("", read(path))):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
            if file_part else path
        if not os.path.exists(resolved):
            yield f"{target}: no such file"
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            yield f"{target}: no heading with that anchor"


def code_spans(text: str) -> List[str]:
    return [block.group(0) for block in FENCE.finditer(text)] + INLINE_CODE.findall(
        FENCE.sub("", text))


def missing_paths(path: str) -> Iterator[str]:
    for span in code_spans(read(path)):
        for shown in PROJECT_PATH.findall(span):
            pattern = re.sub(r"<[^>]*>", "*", shown.rstrip("/."))
            stem, dot, suffix = pattern.rpartition(".")
            if dot and "/" not in suffix:  # models/trainer.BestEpoch: the module's file
                candidates = [pattern, stem + ".py", stem]
            else:  # a folder, or a module named without .py
                candidates = [pattern, pattern + ".py"]
            if not any(glob.glob(os.path.join(REPO, candidate)) for candidate in candidates):
                yield shown


def shown_commands(text: str) -> Iterator[Tuple[str, Set[str]]]:
    """(command, flags) for every `cxr COMMAND ...` in code blocks and inline code."""
    for piece in code_spans(text):
        piece = piece.replace("\\\n", " ")
        for line in piece.splitlines():
            match = COMMAND.search(line)
            if match and match.group(2) in COMMANDS:
                rest = line[match.end():]
                flags = set(FLAG.findall(match.group(1) + " " + rest.split("#")[0]))
                yield match.group(2), flags


def known_flags(command: str) -> Set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return set(FLAG.findall(out.getvalue()))


def test_every_relative_link_and_anchor_resolves():
    broken = [f"{os.path.relpath(path, REPO)}: {problem}"
              for path in doc_files() for problem in broken_links(path)]
    assert not broken, "\n".join(broken)


def test_every_project_path_named_exists():
    missing = [f"{os.path.relpath(path, REPO)}: {shown}"
               for path in doc_files() for shown in missing_paths(path)]
    assert not missing, "\n".join(missing)


def test_every_cxr_command_shown_exists_with_its_flags():
    flags_of = {command: known_flags(command) for command in COMMANDS
                if command not in FLAGS_NEED_TENSORFLOW}
    shown, unknown = 0, []
    for path in doc_files():
        for command, flags in shown_commands(read(path)):
            shown += 1
            missing = flags - flags_of.get(command, flags)
            if missing:
                unknown.append(f"{os.path.relpath(path, REPO)}: cxr {command} "
                               + " ".join(f"--{flag}" for flag in sorted(missing)))
    assert shown > 30  # the parser found the commands the pages show
    assert not unknown, "\n".join(unknown)


def test_the_checks_catch_a_broken_link_a_missing_path_and_an_unknown_flag(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [bad](#nowhere)\n"
                    "```bash\n.venv/bin/cxr run --data-dir DIR \\\n    --no-such-flag\n```\n"
                    "`models/trainer.BestEpoch`, `components/<name>/`, `models/gone.py`\n")
    assert sorted(broken_links(str(page))) == ["#nowhere: no heading with that anchor",
                                               "missing.md: no such file"]
    assert list(shown_commands(page.read_text())) == [("run", {"data-dir", "no-such-flag"})]
    assert list(missing_paths(str(page))) == ["models/gone.py"]
