"""The man pages packaging/manpages.py writes (the .deb and the RPM install them): every option and argument
the commands' parsers define, and every hook option, is on its page; man renders them without warnings."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adopt import admin
from adopt.options import OPTIONS
from fake_slurmd import cli as fake_cli
from slurmproto import cli as callerid_cli

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {
    "slurm-callerid.1": [callerid_cli.main_parser(), callerid_cli.batch_parser(), callerid_cli.decode_parser()],
    "fake-slurmd.1": [fake_cli.main_parser()],
    "slurm-adopt.8": [admin._parser()],
}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    subprocess.run([sys.executable, str(ROOT / "packaging/manpages.py"), str(out)], check=True, timeout=60)
    return out


def _names(parser: argparse.ArgumentParser) -> list[str]:
    """What a reader types: each option string, and each positional argument's name."""
    return [name for action in parser._actions
            for name in (action.option_strings or [str(action.metavar or action.dest)])]


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def _tags(roff: str) -> str:
    """The tagged paragraphs' tags (the line after each .TP), where options are described, unescaped."""
    lines = roff.splitlines()
    tags = "\n".join(lines[i + 1] for i, line in enumerate(lines[:-1]) if line == ".TP")
    return re.sub(r"\\f[BIRP]", " ", tags).replace("\\-", "-")


@pytest.mark.parametrize("page", sorted(PARSERS))
def test_every_option_is_described_on_its_page(pages: Path, page: str) -> None:
    """Described, not only in the synopsis: each has a paragraph of its own."""
    tags = _tags((pages / page).read_text())
    missing = [name for parser in PARSERS[page] for name in _names(parser) if not _mentions(tags, name)]
    assert not missing, f"{page} lacks {missing}"


def test_every_hook_option_is_on_the_adopt_page(pages: Path) -> None:
    roff = (pages / "slurm-adopt.8").read_text()
    missing = [o.name for o in OPTIONS if f"\\fB{o.name}\\fR=" not in roff]
    assert not missing, missing
    text = roff.replace("\\-", "-")
    for python in ("/usr/bin/python3", "/opt/slurm-adopt/bin/python3"):  # the package's pam.d line, a venv's
        assert f"-u __PYVENV_LAUNCHER__ {python} -I -m adopt" in text


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed (scripts/setup installs man-db)")
@pytest.mark.parametrize("page", sorted(PARSERS))
def test_man_renders_without_warnings(pages: Path, page: str) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MANWIDTH": "80", "LANG": "C.UTF-8"}
    shown = subprocess.run(["man", "--warnings", "-l", str(pages / page)], capture_output=True, text=True,
                           env=env, timeout=60, check=False)
    assert (shown.returncode, shown.stderr) == (0, ""), shown.stderr
    assert shown.stdout.startswith(page.split(".")[0].upper()) and "\nNAME\n" in shown.stdout
