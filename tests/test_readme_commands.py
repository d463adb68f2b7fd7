"""Every script command in README.md parses with that script's own get_parser(): the documented
flags exist, take the values shown, and no flag the README uses was renamed away."""
import runpy
import shlex
from typing import List, Tuple

import pytest

from conftest import REPO_DIR

README = REPO_DIR / "README.md"


def readme_commands() -> List[Tuple[str, List[str]]]:
    """(script, argv) of each `./zipformer*/x.py` or `./local/x.py` line in README's code blocks."""
    commands, in_code, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_code, pending = not in_code, ""
            continue
        if not in_code:
            continue
        line = pending + line.split(" #", 1)[0].strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line.startswith(("./zipformer", "./local/")):
            continue
        words = shlex.split(line)
        if words[0].endswith(".py"):
            commands.append((words[0][2:], [w for w in words[1:] if w != "..."]))
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_the_tutorials_commands():
    scripts = {script for script, _ in COMMANDS}
    assert {
        "zipformer/train.py",
        "zipformer/decode.py",
        "zipformer/decode_gigaspeech.py",
        "zipformer_adapter/train.py",
        "zipformer_adapter/decode.py",
        "zipformer_adapter/export-onnx.py",
    } <= scripts


@pytest.mark.parametrize("script, argv", COMMANDS, ids=[f"{i}-{s}" for i, (s, _) in enumerate(COMMANDS)])
def test_readme_command_parses(script: str, argv: List[str]):
    get_parser = runpy.run_path(str(REPO_DIR / script), run_name="readme_check")["get_parser"]
    parser = get_parser()
    known, unknown = parser.parse_known_args(argv)
    positionals = [a for a in unknown if not a.startswith("-")]
    assert not [a for a in unknown if a.startswith("-")], f"{script}: unknown flags {unknown}"
    assert not positionals or script.endswith("pretrained.py"), f"{script}: stray arguments {positionals}"
