"""The commands the Markdown docs give a user still run as written.

Every shell block (```bash / ```sh) and every inline `python X.py ...` span in the
repository's Markdown files is read as a user would paste it:

* a shell block is still a list of commands: each command line starts with an environment
  assignment, a known program or an executable script of the repository, a continuation
  backslash ends its line, and no line holds two commands run together (a re-wrapped block
  once did, 2026-12-07);
* a ``python SCRIPT.py`` command names a script that exists, and each of its ``--options``
  is one the script has: for the absl tools (``trainers/``, ``export/``) one of that tool's
  declared options, for the other scripts a name its source defines.
"""

from __future__ import annotations

import os
import re
import shlex

import pytest

from keras_sf2f import flags as tool_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_LANGUAGES = ("bash", "sh")
# Programs a shell block may start a command with, besides the repository's own scripts.
PROGRAMS = {"bash", "cd", "curl", "docker", "echo", "git", "pip", "python", "python3"}
PYTHON = re.compile(r"^(\.venv/bin/)?python3?$")
# absl's own options and the help options, accepted by every tool (as keras_sf2f.flags has them).
ABSL_OPTIONS = set(tool_flags._ABSL_SPECIAL) | {
    arg.lstrip("-") for arg in tool_flags._HELP_ARGUMENTS}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def markdown_files() -> list[str]:
    found = []
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = sorted(d for d in subfolders
                               if not d.startswith(".") and d not in ("runs", "node_modules"))
        found += [os.path.relpath(os.path.join(folder, n), REPO) for n in sorted(names)
                  if n.endswith(".md")]
    return found


def shell_blocks(text: str) -> list[str]:
    return [body for language, body in _FENCE.findall(text) if language in SHELL_LANGUAGES]


def block_commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined, comments and blank lines dropped."""
    commands, current = [], ""
    for line in block.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        command = current.split(" #")[0].strip()
        if command and not command.startswith("#"):
            commands.append(command)
        current = ""
    return commands


def _without_assignments(words: list[str]) -> list[str]:
    """A command's words after its leading ``NAME=value`` environment assignments."""
    while words and re.match(r"^[A-Za-z_][A-Za-z_0-9]*=", words[0]):
        words = words[1:]
    return words


def inline_python_commands(text: str) -> list[str]:
    prose = _FENCE.sub("", text)
    return [span for span in re.findall(r"`([^`\n]+)`", prose)
            if re.match(r"(\.venv/bin/)?python3? \S+\.py", span)]


def structure_problems(block: str) -> list[str]:
    problems = []
    lines = block.splitlines()
    for index, line in enumerate(lines):
        if re.search(r" \\ +\S", line):
            problems.append(f"a continuation backslash inside the line: {line!r}")
        if line.rstrip().endswith("\\") and (index + 1 == len(lines)
                                             or not lines[index + 1].strip()):
            problems.append(f"a continuation with nothing after it: {line!r}")
    for command in block_commands(block):
        words = _without_assignments(command.split())
        if not words:
            continue
        first = words[0]
        path = os.path.join(REPO, first)
        if first in PROGRAMS or PYTHON.match(first) or first.startswith(".venv/bin/"):
            pass
        elif os.path.isfile(path) and os.access(path, os.X_OK):
            pass
        else:
            problems.append(f"a command starting with {first!r}: {command[:80]!r}")
        if PYTHON.match(first) and any(PYTHON.match(w) for w in words[1:]):
            problems.append(f"two commands run together: {command[:80]!r}")
    return problems


def option_problems(command: str) -> list[str]:
    """A ``python SCRIPT.py --option ...`` command's missing script or unknown options."""
    words = _without_assignments(shlex.split(command.split(" #")[0]))
    if len(words) < 2 or not PYTHON.match(words[0]) or not words[1].endswith(".py"):
        return []
    script = words[1]
    if "<" in script:
        return []  # a placeholder such as trainers/<name>.py
    path = os.path.join(REPO, script)
    if not os.path.isfile(path):
        return [f"{script} does not exist"]
    tool = os.path.basename(script)[:-3]
    declared = None
    if script.split("/")[0] in ("trainers", "export") and tool in tool_flags.TOOLS:
        declared = set(tool_flags.tool_options(tool)) | ABSL_OPTIONS
    with open(path) as f:
        source = f.read()
    problems = []
    for word in words[2:]:
        match = re.match(r"--([a-z_0-9]+)", word)
        if not match:
            continue
        name = match.group(1)
        candidates = {name, name[2:]} if name.startswith("no") else {name}
        if declared is not None:
            known = bool(candidates & declared)
        else:
            known = any(candidate in source for candidate in candidates)
        if not known:
            problems.append(f"{script} has no option --{name}")
    return problems


DOCS = markdown_files()


def test_the_docs_are_found():
    assert {"README.md", "BUILD_NOTES.md", "MODEL_CARD.md"} <= set(DOCS)
    commands = sum(len(block_commands(b)) for d in DOCS
                   for b in shell_blocks(open(os.path.join(REPO, d)).read()))
    assert commands > 20


@pytest.mark.parametrize("doc", DOCS)
def test_shell_blocks_are_lists_of_commands(doc):
    with open(os.path.join(REPO, doc)) as f:
        text = f.read()
    problems = [p for block in shell_blocks(text) for p in structure_problems(block)]
    assert not problems, f"{doc}: " + "; ".join(problems)


@pytest.mark.parametrize("doc", DOCS)
def test_python_commands_name_existing_scripts_and_options(doc):
    with open(os.path.join(REPO, doc)) as f:
        text = f.read()
    commands = [c for block in shell_blocks(text) for c in block_commands(block)]
    commands += inline_python_commands(text)
    problems = [p for command in commands for p in option_problems(command)]
    assert not problems, f"{doc}: " + "; ".join(problems)


def test_the_checks_catch_a_rewrapped_block_and_a_stale_option():
    rewrapped = (".venv/bin/python trainers/describe_model.py --json .venv/bin/python\n"
                 "trainers/train.py --data_dir=DATA \\ --model_dir=DIR\n")
    problems = structure_problems(rewrapped)
    assert any("inside the line" in p for p in problems)
    assert any("starting with 'trainers/train.py'" in p for p in problems)
    assert any("run together" in p for p in problems)
    assert structure_problems("bash scripts/main_job.sh\nSEED=1 scripts/main_job.sh\n") == []
    assert option_problems(".venv/bin/python trainers/train.py --model_dir=D --nojit_compile"
                           " --no_such_option=1") == ["trainers/train.py has no option "
                                                      "--no_such_option"]
    assert option_problems("python benchmarks/demo_seeds.py --seeds=3 --sedes=2") == [
        "benchmarks/demo_seeds.py has no option --sedes"]
    assert option_problems("python trainers/missing.py") == ["trainers/missing.py does not exist"]
