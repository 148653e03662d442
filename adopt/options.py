"""pam_slurm_adopt's options, plus this hook's own, as one table (the class `Options`): each option once,
with its kind, default, whose it is and a one-line doc. The table drives parsing (as Slurm 26.05 parses),
`--check-config`'s listing in pam.d syntax, the admin command's help and the README's table (a test keeps
that one in step).

Names are matched case-insensitively; values as the module does, by prefix (`action_unknown=newest` and
`ACTION_UNKNOWN=Newest` are the same; so is `action_unknown=newestx`). A value the module would not
understand is reported and the current value kept; so is an unknown option. Booleans take 0/1 (and
join_container true/false), as in 24.11 and later.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from adopt.wire import DEFAULT_SOCKET, read_seconds
from adopt.wire import LOG_LEVELS as LOG_LEVELS

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

INFO = LOG_LEVELS.index("info")


class Action(Enum):
    ALLOW = "allow"
    DENY = "deny"
    IGNORE = "ignore"
    NEWEST = "newest"


class Unrecognized(ValueError):
    """A value the option does not take (the text says what it takes): the current value is kept."""


class Replaced(ValueError):
    """A value the module replaces by another (`value`); the text says so in full."""

    def __init__(self, message: str, value: object) -> None:
        super().__init__(message)
        self.value = value


class Kind(Generic[T]):
    """How one kind of option's value is read from pam.d (`read` raises Unrecognized or Replaced) and
    written back (`show`); `spellings` lists its values when there are only a few."""

    def __init__(self, read: Callable[[str], T], show: Callable[[T], str],
                 spellings: tuple[str, ...] = ()) -> None:
        self.read, self.show, self.spellings = read, show, spellings


def action(*choices: Action, aliases: tuple[tuple[str, Action], ...] = ()) -> Kind[Action]:
    """One of `choices`, by prefix; an alias (by prefix too) stands for a choice."""
    def read(value: str) -> Action:
        lowered = value.lower()
        alias = next((to.value for name, to in aliases if lowered.startswith(name)), None)
        match = next((c for c in choices if (alias or lowered).startswith(c.value)), None)
        if match is None:
            raise Unrecognized(f"expected {'|'.join(c.value for c in choices)}")
        return match
    return Kind(read, lambda chosen: chosen.value, tuple(c.value for c in choices))


def boolean(true: str, false: str) -> Kind[bool]:
    """True or false, by the prefix of their spelling."""
    def read(value: str) -> bool:
        if value.lower().startswith(true):
            return True
        if value.lower().startswith(false):
            return False
        raise Unrecognized(f"expected {true} or {false}")
    return Kind(read, lambda on: true if on else false, (true, false))


def one_of(*words: str) -> Kind[str]:
    """One of `words`, whole (case-insensitive)."""
    def read(value: str) -> str:
        if value.lower() not in words:
            raise Unrecognized(f"expected {' or '.join(words)}")
        return value.lower()
    return Kind(read, str, words)


def _log_level(value: str) -> int:
    """A level by name or number; anything else is the highest level, as the module does."""
    top = len(LOG_LEVELS) - 1
    if value.isascii() and value.isdigit():  # str.isdigit() alone also takes "²", which int() refuses
        number = int(value)
        if number > top:
            raise Replaced(f"log level {number} too high, lowering to max", top)
        return number
    if value.lower() in LOG_LEVELS:
        return LOG_LEVELS.index(value.lower())
    raise Replaced(f"unrecognized log level {value}, setting to max", top)


def _seconds(value: str) -> float:
    """ASCII digits with at most one dot ("3", "0.5"): float() alone also takes other scripts' digits,
    "1e3" and "inf". adopt.wire reads it too, for the hook's agent path."""
    seconds = read_seconds(value)
    if seconds is None:
        raise Unrecognized("seconds, above 0 and at most 300")
    return seconds


def _release(value: str) -> str:
    if value != "auto":
        from slurmproto.versions import parse_version  # only when named: the hook's start stays light

        try:
            parse_version(value)
        except ValueError as exc:
            raise Replaced(f"{exc}, keeping 'auto'", "auto") from None
    return value


def _unset_as_empty(value: str | None) -> str:
    return "" if value is None else value


LOG_LEVEL = Kind(_log_level, lambda level: LOG_LEVELS[level])
TEXT: Kind[str] = Kind(str, str)
NAME: Kind[str | None] = Kind(str, _unset_as_empty)
"""Text, unset (None) by default."""
PATH: Kind[str | None] = Kind(lambda value: value or None, _unset_as_empty)
"""A path; empty is unset (None)."""
SECONDS = Kind(_seconds, lambda seconds: f"{seconds:g}")
RELEASE = Kind(_release, str)
AGENT_SOCKET = Kind(lambda value: value or DEFAULT_SOCKET, str)
"""A path; empty is the default."""


class Option(Generic[T]):
    """One option: how its value is read, its default, a one-line doc, whether it is this hook's own
    (not the module's), and its values for the docs when the kind cannot list them.

    A class attribute of Options: read on an Options instance it is that instance's value."""

    def __init__(self, kind: Kind[T], default: T, doc: str, *, ours: bool = False, values: str = "") -> None:
        self.kind, self.default, self.doc, self.ours = kind, default, doc, ours
        shown = kind.show(default)
        self.values = values or ", ".join(sorted(kind.spellings, key=lambda spelling: spelling != shown))
        """Its values, default first (the docs' "values" column)."""
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Option[T]: ...
    @overload
    def __get__(self, instance: Options, owner: type) -> T: ...
    def __get__(self, instance: Options | None, owner: type) -> Option[T] | T:
        return self if instance is None else self.default  # set values live in the instance's __dict__

    def pam(self, opts: Options) -> str:
        """`name=value` as in pam.d."""
        return f"{self.name}={self.kind.show(getattr(opts, self.name))}"


class Options:
    """Every option with the module's default (26.05), then ours."""

    action_no_jobs = Option(action(Action.DENY, Action.IGNORE), Action.DENY,
                            'the user has no job here: deny ("you have no active jobs on this node") or ignore')
    action_unknown = Option(action(Action.ALLOW, Action.NEWEST, Action.DENY, aliases=(("any", Action.NEWEST),)),
                            Action.NEWEST, "several jobs, none known as the source: adopt into the newest (26.05's, "
                            'on every release: latest started, then highest job id), allow, or deny ("unable to '
                            "determine source job\"); any (older releases' name) is newest")
    action_adopt_failure = Option(action(Action.ALLOW, Action.DENY), Action.ALLOW,
                                  'adoption failed: allow, or deny ("adoption failure")')
    action_generic_failure = Option(action(Action.ALLOW, Action.IGNORE, Action.DENY), Action.IGNORE,
                                    "anything else failed (no slurm.conf, munged unusable, an SSH_CONNECTION sshd "
                                    "does not hold, the deadline); pam_slurm_adopt.so would carry on to action_unknown "
                                    "for the last two")
    ignore_root = Option(boolean("1", "0"), True, "let root through untouched; 0 is overridden, as the module does")
    single_job_skip_rpc = Option(boolean("1", "0"), True,
                                 "one job: adopt into it without asking the source's slurmd which job it is")
    log_level = Option(LOG_LEVEL, INFO, "what goes to syslog (authpriv)",
                       values="info; quiet, fatal, error, verbose, debug..debug5, or 0-9")
    nodename = Option(NAME, None, "also used on the RPC path (the module before 26.05 guessed it there)",
                      values="this host's NodeName")
    service = Option(TEXT, "sshd", "the PAM service to act for; any other is let through untouched",
                     values="sshd; * for any")
    disable_x11 = Option(boolean("1", "0"), False, "0: the job's DISPLAY and XAUTHORITY go into the PAM "
                         "environment (in-process module; the pam_exec hook can only log them)")
    join_container = Option(boolean("true", "false"), True,
                            "true: sshd's process enters the job's namespaces (in-process module; the pam_exec "
                            "hook cannot move sshd into them)")
    # This hook's own options.
    deadline = Option(SECONDS, 3.0, "the whole decision, whatever it waits for (neither pam_exec nor sshd has a "
                      "timeout); then action_generic_failure", ours=True, values="3 (seconds, at most 300)")
    conf = Option(PATH, None, "slurm.conf (never $SLURM_CONF: pam_exec gives the hook the PAM environment only, "
                  "and the in-process module does not read sshd's)",
                  ours=True, values="/etc/slurm/slurm.conf, then /run/slurm/conf/slurm.conf")
    munge_socket = Option(PATH, None, "munged's socket", ours=True, values="slurm.conf's AuthInfo socket=")
    protocol_version = Option(RELEASE, "auto", "the callerid RPC's header version; auto starts with this "
                              "node's slurmstepd's, else libslurm's", ours=True,
                              values="auto, or a release such as 24.11")
    agent_socket = Option(AGENT_SOCKET, DEFAULT_SOCKET, "slurm-adopt-agent's socket, asked first (only if root's); "
                          "without its answer in half the deadline the hook decides itself; none: never ask",
                          ours=True, values=f"{DEFAULT_SOCKET}, or none")
    ignore_as = Option(one_of("success", "failure"), "success",
                       "the pam_exec hook's exit status for PAM_IGNORE, which pam_exec cannot return: success (0) "
                       "suits required lines, failure (1) [success=done default=ignore] lines (the in-process "
                       "module returns PAM_IGNORE itself)", ours=True)

    def __repr__(self) -> str:
        return "Options(" + ", ".join(f"{o.name}={getattr(self, o.name)!r}" for o in OPTIONS) + ")"


OPTIONS: tuple[Option[Any], ...] = tuple(o for o in vars(Options).values() if isinstance(o, Option))
"""The table, in the order of the docs."""
_BY_NAME = {option.name: option for option in OPTIONS}


def parse_options(args: list[str]) -> tuple[Options, list[str]]:
    """Options from the module arguments, and one message per argument that was not understood."""
    opts = Options()
    problems: list[str] = []
    for arg in args:
        name, sep, value = arg.partition("=")
        option = _BY_NAME.get(name.lower()) if sep else None
        if option is None:
            problems.append(f"ignoring unrecognized option '{arg}'")
            continue
        try:
            setattr(opts, option.name, option.kind.read(value))
        except Unrecognized as exc:
            problems.append(f"unrecognized {option.name}={value} ({exc}), "
                            f"keeping '{option.kind.show(getattr(opts, option.name))}'")
        except Replaced as exc:
            setattr(opts, option.name, exc.value)
            problems.append(str(exc))
    return opts, problems
