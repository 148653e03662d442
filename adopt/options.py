"""pam_slurm_adopt's options, parsed as Slurm 26.05 parses them, plus this hook's own.

Names are matched case-insensitively by prefix, as the module does (`action_unknown=newest` and
`ACTION_UNKNOWN=Newest` are the same; so is `action_unknown=newestx`). A value the module would not
understand is reported and the default kept; so is an unknown option. Booleans take 0/1 (and
join_container true/false), as in 24.11 and later.
"""

from __future__ import annotations

from enum import Enum

LOG_LEVELS = ("quiet", "fatal", "error", "info", "verbose", "debug", "debug2", "debug3", "debug4", "debug5")
"""Slurm's log levels, by number (0 quiet ... 9 debug5)."""
INFO = LOG_LEVELS.index("info")


class Action(Enum):
    ALLOW = "allow"
    DENY = "deny"
    IGNORE = "ignore"
    NEWEST = "newest"


class Options:
    """Every option with the module's default (26.05), then ours."""

    def __init__(self) -> None:
        self.action_no_jobs = Action.DENY  # deny | ignore
        self.action_unknown = Action.NEWEST  # newest | allow | deny
        self.action_adopt_failure = Action.ALLOW  # allow | deny
        self.action_generic_failure = Action.IGNORE  # allow | ignore | deny
        self.ignore_root = True
        self.single_job_skip_rpc = True
        self.log_level = INFO
        self.nodename: str | None = None
        self.service = "sshd"  # "*" means any
        self.disable_x11 = False
        self.join_container = True
        # This hook's own options.
        self.deadline = 3.0
        """Seconds the whole decision may take (pam_exec has no timeout of its own)."""
        self.conf: str | None = None
        """slurm.conf (pam_exec hands the hook only the PAM environment, not sshd's SLURM_CONF)."""
        self.munge_socket: str | None = None
        self.protocol_version: str = "auto"
        self.ignore_as = "success"
        """The exit status for the module's PAM_IGNORE, which pam_exec cannot return: success (0) suits
        `required` lines, failure (1) `[success=done default=ignore]` ("sufficient") lines."""

    def __repr__(self) -> str:
        return "Options(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"


_ACTIONS = {
    "action_no_jobs": (Action.DENY, Action.IGNORE),
    "action_unknown": (Action.ALLOW, Action.NEWEST, Action.DENY),
    "action_generic_failure": (Action.ALLOW, Action.IGNORE, Action.DENY),
    "action_adopt_failure": (Action.ALLOW, Action.DENY),
}
_BOOLEANS = {"single_job_skip_rpc": ("1", "0"), "ignore_root": ("1", "0"), "disable_x11": ("1", "0"),
             "join_container": ("true", "false")}


def parse_options(args: list[str]) -> tuple[Options, list[str]]:
    """Options from the module arguments, and one message per argument that was not understood."""
    opts = Options()
    problems: list[str] = []
    for arg in args:
        name, sep, value = arg.partition("=")
        key = name.lower()
        if not sep:
            problems.append(f"ignoring unrecognized option '{arg}'")
        elif key in _ACTIONS:
            choices = _ACTIONS[key]
            lowered = value.lower()
            if key == "action_unknown" and lowered.startswith("any"):
                lowered = "newest"  # the name older releases used
            match = next((c for c in choices if lowered.startswith(c.value)), None)
            if match is None:
                default = getattr(opts, key).value
                problems.append(f"unrecognized {key}={value} (expected {'|'.join(c.value for c in choices)}), "
                                f"keeping '{default}'")
            else:
                setattr(opts, key, match)
        elif key in _BOOLEANS:
            true, false = _BOOLEANS[key]
            if value.lower().startswith(true):
                setattr(opts, key, True)
            elif value.lower().startswith(false):
                setattr(opts, key, False)
            else:
                default = true if getattr(opts, key) else false
                problems.append(f"unrecognized {key}={value} (expected {true} or {false}), keeping '{default}'")
        elif key == "log_level":
            level, problem = _log_level(value)
            opts.log_level = level
            if problem:
                problems.append(problem)
        elif key in ("nodename", "service"):
            setattr(opts, key, value)
        elif key in ("conf", "munge_socket"):
            setattr(opts, key, value or None)
        elif key == "protocol_version":
            opts.protocol_version = value
            if value != "auto":
                try:
                    from slurmproto.versions import parse_version

                    parse_version(value)
                except ValueError as exc:
                    problems.append(f"{exc}, keeping 'auto'")
                    opts.protocol_version = "auto"
        elif key == "ignore_as":
            if value.lower() in ("success", "failure"):
                opts.ignore_as = value.lower()
            else:
                problems.append(f"unrecognized ignore_as={value} (expected success or failure), keeping 'success'")
        elif key == "deadline":
            seconds = float(value) if _is_decimal(value) else 0.0
            if 0 < seconds <= 300:
                opts.deadline = seconds
            else:
                problems.append(f"unrecognized deadline={value} (seconds, above 0 and at most 300), keeping "
                                f"'{opts.deadline:g}'")
        else:
            problems.append(f"ignoring unrecognized option '{arg}'")
    return opts, problems


def _is_decimal(text: str) -> bool:
    """ASCII digits with at most one dot ("3", "0.5"); float() alone also takes other scripts' digits,
    "1e3" and "inf"."""
    whole, _, fraction = text.partition(".")
    return all(part.isascii() and part.isdigit() for part in (whole, fraction or "0")) and len(text) <= 12


def _log_level(value: str) -> tuple[int, str | None]:
    """A level by name or number; anything else is the highest level, as the module does."""
    top = len(LOG_LEVELS) - 1
    if value.isascii() and value.isdigit():  # str.isdigit() alone also takes "²", which int() refuses
        number = int(value)
        return (number, None) if number <= top else (top, f"log level {number} too high, lowering to max")
    if value.lower() in LOG_LEVELS:
        return LOG_LEVELS.index(value.lower()), None
    return top, f"unrecognized log level {value}, setting to max"
