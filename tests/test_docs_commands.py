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
    joined); a script with subcommands (`benchmark.py model ...`) is named with its subcommand."""
    commands = []
    for page in PAGES:
        text = page.read_text().replace("\\\n", " ")
        for match in COMMAND.finditer(text.replace("\n", " \n")):
            words = shlex.split(match.group(2), comments=False)
            flags = [word.split("=")[0] for word in words if word.startswith("--")]
            script = match.group(1)
            if words and words[0] in subcommands(script):
                script = f"{script} {words[0]}"
            commands.append((page.relative_to(ROOT).as_posix(), script, flags))
    return commands


@functools.cache
def subcommands(script: str) -> tuple[str, ...]:
    """The subcommands that `script --help` lists under its MODE argument, if it has one."""
    if not (ROOT / script).is_file():
        return ()
    help_text = accepted_flags(script)
    if "\n  MODE\n" not in help_text:
        return ()
    return tuple(re.findall(r"^    (\w+)\s", help_text.split("\n  MODE\n", 1)[1], re.MULTILINE))


@functools.cache
def accepted_flags(command: str) -> str:
    script, *subcommand = command.split()
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *subcommand, "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_pages_give_commands_for_every_script_users_run():
    scripts = {script.split()[0] for _, script, _ in documented_commands()}
    assert {"scripts/quickstart.py", "scripts/run_translation.py", "scripts/translate.py", "scripts/export.py"} <= scripts


@pytest.mark.parametrize(
    "page, script, flags", documented_commands(), ids=lambda value: value if isinstance(value, str) else None
)
def test_each_documented_command_names_a_script_and_flags_it_accepts(page, script, flags):
    assert (ROOT / script.split()[0]).is_file(), f"{page} runs {script}, which does not exist"
    assert " " in script or not subcommands(script), f"{page} runs {script} without one of {subcommands(script)}"
    help_text = accepted_flags(script)
    unknown = [flag for flag in flags if not re.search(rf"{re.escape(flag)}\b", help_text)]
    assert not unknown, f"{page}: {script} does not accept {unknown}"
