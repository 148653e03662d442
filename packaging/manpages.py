"""Write the man pages slurm-callerid(1), fake-slurmd(1) and slurm-adopt(8) from the commands' own argparse
parsers and the hook's option table, so a page never lists options the command lacks or misses one it has.

    python3 packaging/manpages.py OUTDIR        (from the source tree: it imports the project's packages)

Why not argparse-manpage (Debian 12's python3-argparse-manpage 1.2.2): it renders one parser per page, but
slurm-callerid's `batch` and `decode` have parsers of their own that its main parser does not know of (they
are dispatched on the first word, not argparse subcommands), and slurm-adopt's main options are the hook's
name=value words from pam.d (adopt/options.py), which are no argparse options at all. The few lines below
render all of them alike.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the source tree, not an installed copy

from adopt import admin
from adopt.options import OPTIONS
from fake_slurmd import cli as fake_cli
from fake_slurmd.pamexec import hook_line
from slurmproto import cli as callerid_cli
from slurmproto import package_version

PAGE_OPTIONS = ["action_adopt_failure=deny"]
"""The options the page's pam.d lines show."""


def esc(text: str) -> str:
    """Text safe in roff: backslashes, minus signs, and a leading control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def paragraphs(text: str) -> list[str]:
    """Plain text as roff paragraphs; indented lines (examples) kept as they are."""
    out: list[str] = []
    for block in text.strip().split("\n\n"):
        if block.startswith(" "):
            out += [".PP", ".nf", ".RS 4", esc("\n".join(line.strip() for line in block.splitlines())),
                    ".RE", ".fi"]
        else:
            out += [".PP", esc(" ".join(block.split()))]
    return out


def invocation(action: argparse.Action) -> str:
    """How an option or argument is written: `--port PORT`, `-v, --verbose`, `IP_SRC`."""
    if not action.option_strings:
        return str(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}" if action.choices
                                 else action.dest.upper())
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


def options(parser: argparse.ArgumentParser) -> list[str]:
    """Each argument and option of `parser` (help included) as a tagged paragraph."""
    out: list[str] = []
    for action in parser._actions:
        text = (action.help or "").strip()
        if text and not text.endswith((".", ")")):
            text += "."
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS, [], ""):
            text += f" Default: {action.default}."
        out += [".TP", "\\fB" + esc(invocation(action)) + "\\fR", esc(text.strip() or "(see above)")]
    return out


def usage(parser: argparse.ArgumentParser) -> list[str]:
    """argparse's usage line, filled to the reader's width (a hanging indent for the continuation); lines
    break between bracketed groups, never inside one."""
    text, depth, out = " ".join(parser.format_usage().removeprefix("usage: ").split()), 0, []
    for char in esc(text):
        depth += (char == "[") - (char == "]")
        out.append("\\~" if char == " " and depth else char)
    return [".HP 4", "".join(out)]


def page(name: str, section: int, summary: str, body: Iterable[str]) -> str:
    date = datetime.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or
                                           datetime.datetime.now().timestamp(), datetime.UTC)
    head = [f'.TH {name.upper()} {section} "{date:%Y-%m-%d}" "slurm-adopt-toolkit {package_version()}"',
            ".nh", ".ad l", ".SH NAME", f"{esc(name)} \\- {esc(summary)}"]
    return "\n".join([*head, *body]) + "\n"


def slurm_callerid() -> str:
    main, batch, decode = (callerid_cli.main_parser(), callerid_cli.batch_parser(), callerid_cli.decode_parser())
    return page("slurm-callerid", 1, "ask a slurmd which Slurm job holds a TCP connection", [
        ".SH SYNOPSIS", *usage(main), *usage(batch), *usage(decode),
        ".SH DESCRIPTION", *paragraphs(main.description or ""),
        ".SH OPTIONS", *options(main),
        ".SH BATCH", *paragraphs(batch.description or ""), *options(batch),
        ".SH DECODE", *paragraphs(decode.description or ""), *options(decode),
        ".SH EXIT STATUS",
        *paragraphs("0: a job was named. 1: the answer is indeterminate (no such connection, or a job of "
                    "another user), or the query failed (the reason on stderr, in one line). 2: a usage "
                    "error."),
        ".SH SEE ALSO", "\\fBslurm\\-adopt\\fR(8), \\fBscontrol\\fR(1)",
    ])


def fake_slurmd() -> str:
    parser = fake_cli.main_parser()
    return page("fake-slurmd", 1, "a simulated Slurm compute node for tests", [
        ".SH SYNOPSIS", *usage(parser),
        ".SH DESCRIPTION", *paragraphs(parser.description or ""), *paragraphs(parser.epilog or ""),
        ".SH OPTIONS", *options(parser),
        ".SH SEE ALSO", "\\fBslurm\\-callerid\\fR(1), \\fBslurm\\-adopt\\fR(8)",
    ])


def slurm_adopt() -> str:
    parser = admin._parser()
    hook_options: list[str] = []
    for option in OPTIONS:
        whose = " (this hook's own, not the module's)" if option.ours else ""
        hook_options += [".TP", f"\\fB{esc(option.name)}\\fR=\\fIVALUE\\fR{esc(whose)}",
                         esc(f"{option.doc}. Values (default first): {option.values}.")]
    return page("slurm-adopt", 8, "pam_slurm_adopt as a pam_exec hook", [
        ".SH SYNOPSIS", ".HP 4", esc(hook_line("/usr", PAGE_OPTIONS) + " [OPTION=VALUE...]"),
        *usage(parser),
        ".SH DESCRIPTION", *paragraphs(parser.description or ""),
        *paragraphs("Run by pam_exec in sshd's account stack, it lets a user in who has a job on this node "
                    "and adopts the login's sshd process into the job the connection comes from (asking the "
                    "source host's slurmd, the callerid RPC, when the user has several jobs here), as "
                    "pam_slurm_adopt does."),
        ".SH PAM", *paragraphs(
            "In /etc/pam.d/sshd, in place of pam_slurm_adopt's account line, after the distribution's "
            "account modules; run Python isolated (-I) with the variables removed that choose its venv in "
            "spite of -I. Installed from the Debian or RPM package:\n\n"
            f"    {hook_line('/usr', PAGE_OPTIONS)}\n\n"
            "Installed in a virtualenv at /opt/slurm-adopt:\n\n"
            f"    {hook_line('/opt/slurm-adopt', PAGE_OPTIONS)}\n\n"
            "Put these two lines in front, so that root and the slurm-admins group never depend on the hook:\n\n"
            "    account [success=2 default=ignore] pam_succeed_if.so quiet uid eq 0\n"
            "    account [success=1 default=ignore] pam_succeed_if.so quiet user ingroup slurm-admins"),
        ".SH HOOK OPTIONS", *paragraphs("Written after the command in pam.d, as name=value words."),
        *hook_options,
        ".SH OPTIONS", *paragraphs("At a shell (no PAM_TYPE in the environment) it never adopts; it explains "
                                   "and checks:"),
        *options(parser),
        ".SH FILES", ".TP", "/etc/slurm/slurm.conf, /run/slurm/conf/slurm.conf",
        "slurm.conf, unless conf= names another (SLURM_CONF is never read).",
        ".SH SEE ALSO", "\\fBpam_exec\\fR(8), \\fBslurm\\-callerid\\fR(1), \\fBfake\\-slurmd\\fR(1)",
    ])


PAGES = {"slurm-callerid.1": slurm_callerid, "fake-slurmd.1": fake_slurmd, "slurm-adopt.8": slurm_adopt}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: manpages.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, render in PAGES.items():
        (out / name).write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
