"""README.md cannot rot: every ```python block in it runs as a script, as it is.

Each block is written to a file and run as ``python snippet.py`` in its own
interpreter (a fresh namespace, like a user pasting it into a file), from a temporary
directory. Running a file, not ``python -c``, matters for the blocks that spawn child
processes: multiprocessing's spawn start method re-imports the main module in each
child, which needs a real file (and the block's ``if __name__ == "__main__":`` guard).
The quick start and the list of examples are checked against the repository too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")

# A fenced block: the opening fence with its language, the body, the closing fence.
FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
BLOCKS = [(m.group(1), m.group(2)) for m in FENCE.finditer(TEXT)]
PYTHON_BLOCKS = [body for lang, body in BLOCKS if lang == "python"]


def block_id(index: int, body: str) -> str:
    first = next((ln.strip() for ln in body.splitlines() if ln.strip()), "")
    return f"block{index}: {first[:50]}"


def test_readme_has_python_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 8


@pytest.mark.parametrize(
    "body",
    PYTHON_BLOCKS,
    ids=[block_id(i, body) for i, body in enumerate(PYTHON_BLOCKS)],
)
def test_python_block_runs(body: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(body, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (
        f"README block failed (exit {proc.returncode}):\n{body}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def test_quick_start_is_the_two_tools() -> None:
    section = TEXT.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [body for _, body in FENCE.findall(section)]
    assert blocks == ["./tools/demo\n./tools/test\n"]
    for tool in ("demo", "test"):
        path = ROOT / "tools" / tool
        assert path.is_file() and os.access(path, os.X_OK), f"{path} is not executable"
    # Whatever example ./tools/demo runs exists and the quick start names it.
    demo = (ROOT / "tools" / "demo").read_text()
    scripts = re.findall(r"examples/[\w/]+\.py", demo)
    assert scripts, "tools/demo runs no example"
    for script in scripts:
        assert (ROOT / script).is_file(), f"tools/demo runs {script}, which does not exist"
        assert f"`{script}`" in section, f"the quick start does not mention {script}"


def test_examples_section_lists_every_example() -> None:
    section = TEXT.split("## Examples", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([\w./]+\.py)`", section, re.MULTILINE))
    examples = ROOT / "examples"
    present = {p.relative_to(examples).as_posix() for p in examples.glob("*.py")}
    present |= {p.relative_to(examples).as_posix() for p in examples.glob("*/main.py")}
    assert listed == present


# What changes from one session to the next in a `gostage` transcript.
_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\b\d+\.\d\d s\b"), "<n> s"),
    (re.compile(r"\b\d{9,}\.\d+"), "<epoch>"),
]


def _normalized(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, stand_in in _VOLATILE:
            line = pattern.sub(stand_in, line)
        lines.append(line.rstrip())
    return lines


def test_command_line_transcript_is_real(tmp_path: Path) -> None:
    """The shell session in "Command line" replays: same output, same exit statuses.

    The section's python block is written to flow.py; each ``$ command`` of the console
    block runs in a fresh process (``gostage`` as ``python -m gostage``), with the run id
    of the new session in place of the README's and times normalised.
    """
    section = TEXT.split("\n## Command line", 1)[1].split("\n## ", 1)[0]
    (flow,) = [body for lang, body in FENCE.findall(section) if lang == "python"]
    (session,) = [body for lang, body in FENCE.findall(section) if lang == "console"]
    (tmp_path / "flow.py").write_text(flow, encoding="utf-8")

    steps: list[tuple[str, list[str], int]] = []  # command, output lines, exit status
    lines = session.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        assert line.startswith("$ "), f"expected a command, got {line!r}"
        if line == "$ echo $?":
            command, output, _ = steps[-1]
            steps[-1] = (command, output, int(lines[i + 1]))
            i += 2
            continue
        output = []
        i += 1
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        steps.append((line[2:], output, 0))
    assert len(steps) >= 5

    readme_id = re.search(r"\b[0-9a-f]{32}\b", session)
    assert readme_id is not None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    env.pop("GOSTAGE_DB", None)
    run_id = None
    for command, expected, status in steps:
        words = shlex.split(command if run_id is None else command.replace(readme_id[0], run_id))
        extra = {}
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            extra[key] = value
        assert words[0] == "gostage", command
        proc = subprocess.run(
            [sys.executable, "-m", "gostage", *words[1:]],
            cwd=tmp_path,
            env={**env, **extra},
            timeout=60,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if run_id is None:
            found = re.search(r"^run ([0-9a-f]{32}):", proc.stdout, re.MULTILINE)
            assert found is not None, proc.stdout
            run_id = found[1]
        got = _normalized(proc.stdout.replace(run_id, readme_id[0]))
        assert (proc.returncode, got) == (status, _normalized("\n".join(expected))), command
