"""The commands that the README and docs/ give run as written, as far as a test without data can tell: each names a
script that exists, and its every flag is one the script accepts (a renamed or dropped flag fails here, not in a
reader's terminal). The runs themselves are tested elsewhere on small data (quick start, training, serving, Hub)."""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python (scripts/\w+\.py)((?: [^`|>\n]*)?)")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, script, flags) for every `python scripts/...` command, inline or in a code block (continued lines
    joined)."""
    commands = []
    for page in PAGES:
        text = page.read_text().replace("\\\n", " ")
        for match in COMMAND.finditer(text.replace("\n", " \n")):
            flags = [word.split("=")[0] for word in shlex.split(match.group(2), comments=False) if word.startswith("--")]
            commands.append((page.relative_to(ROOT).as_posix(), match.group(1), flags))
    return commands


@functools.cache
def accepted_flags(script: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_pages_give_commands_for_every_script_users_run():
    scripts = {script for _, script, _ in documented_commands()}
    assert {"scripts/quickstart.py", "scripts/run_translation.py", "scripts/translate.py", "scripts/export.py"} <= scripts


@pytest.mark.parametrize(
    "page, script, flags", documented_commands(), ids=lambda value: value if isinstance(value, str) else None
)
def test_each_documented_command_names_a_script_and_flags_it_accepts(page, script, flags):
    assert (ROOT / script).is_file(), f"{page} runs {script}, which does not exist"
    help_text = accepted_flags(script)
    unknown = [flag for flag in flags if not re.search(rf"{re.escape(flag)}\b", help_text)]
    assert not unknown, f"{page}: {script} does not accept {unknown}"
