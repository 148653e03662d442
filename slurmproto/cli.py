"""slurm-callerid: `scontrol callerid` with deadlines, version fallback, JSON, and a frame decoder.

    slurm-callerid [options] IP_SRC PORT_SRC IP_DST PORT_DST [4|6]
    slurm-callerid batch [options] [FILE]
    slurm-callerid decode [--hex | --raw] [--munge-socket PATH] [--key PATH] [FILE]
    slurm-callerid decode --pcap FILE [--json] [--port N ...] [--munge-socket PATH] [--key PATH]

Exit status: 0 a job was named (batch: for every query); 1 indeterminate or an error (as scontrol); 2 usage.
No input ends in a traceback: an unexpected exception is one "internal error" line and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from slurmproto import package_version

EXIT_FOUND, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
PROG = "slurm-callerid"
MAX_LINE = 4096
"""A batch query is under 100 characters; longer lines are refused, not buffered."""


# --- argument values: ValueError with a message (batch lines use them too) --------------------------


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535, in ASCII digits."""
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r} is not a number between 1 and 65535")
    return int(text)


def address(text: str) -> str:
    """An IPv4 or IPv6 address (a name is not looked up)."""
    from slurmproto.client import Endpoint

    Endpoint.parse(text)  # ValueError naming the text
    return text


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text) if text.strip().isascii() else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{text!r} is not a positive number of seconds")
    return value


def protocol_version(text: str) -> int | None:
    """`auto` (None), a release such as 24.11, or a 16-bit number."""
    from slurmproto.versions import parse_version

    if text == "auto":
        return None
    if not text.isascii():
        raise ValueError(f"unknown Slurm release or protocol version {text!r}")
    return parse_version(text)


def _arg(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """`check` as an argparse type: its message becomes the usage error (exit 2)."""
    def convert(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = check.__name__
    return convert


class _Version(argparse.Action):
    """--version: the installed distribution's version, else the package's own."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"{PROG} {package_version()}")
        parser.exit()


# --- parsers ---------------------------------------------------------------------------------------


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, its width found as shutil finds it but without importing shutil (and bz2, lzma,
    fnmatch with it): argparse makes a formatter for every option it is given, a query included."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


def _columns() -> int:
    with contextlib.suppress(KeyError, ValueError):
        if (columns := int(os.environ["COLUMNS"])) > 0:
            return columns
    with contextlib.suppress(AttributeError, ValueError, OSError):
        if (columns := os.get_terminal_size(sys.__stdout__.fileno()).columns) > 0:  # type: ignore[union-attr]
            return columns
    return 80


def _parser(**kwargs: Any) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(formatter_class=_Formatter, **kwargs)


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument("--conf", metavar="PATH", help="slurm.conf (default: $SLURM_CONF, /etc/slurm/slurm.conf)")
    parser.add_argument("--munge-socket", metavar="PATH",
                        help="munged socket (default: slurm.conf's AuthInfo socket=, then munge's default)")
    return parser


def _options() -> argparse.ArgumentParser:
    """The options shared by a single query and `batch`."""
    from slurmproto.settings import DEFAULT_SLURMD_PORT

    options = _common(_parser(add_help=False))
    options.add_argument("--json", action="store_true", help="print the result as JSON")
    options.add_argument("--timeout", type=_arg(seconds), metavar="SECONDS",
                         help="overall deadline per query, munged and user lookups included "
                              "(default: TCPTimeout + MessageTimeout)")
    options.add_argument("--protocol-version", type=_arg(protocol_version), default="auto", metavar="VERSION",
                         help="header version: auto (default), a release such as 24.11, or a number (0x2a00)")
    options.add_argument("--port", type=_arg(port_number),
                         help=f"slurmd port (default: SlurmdPort from slurm.conf, {DEFAULT_SLURMD_PORT})")
    options.add_argument("-v", "--verbose", action="store_true", help="show what was sent and received")
    return options


def main_parser() -> argparse.ArgumentParser:
    """slurm-callerid's own options (its man page is written from this and the two below)."""
    parser = _parser(
        prog=PROG, parents=[_options()],
        description="Ask the slurmd on IP_SRC which Slurm job holds the TCP connection "
                    "IP_SRC:PORT_SRC -> IP_DST:PORT_DST, like `scontrol callerid`; prints JOBID NODENAME. "
                    "Only answers signed by root or SlurmdUser are believed. "
                    "`slurm-callerid batch` answers many queries in one process; "
                    "`slurm-callerid decode [FILE]` decodes captured frames.")
    parser.add_argument("ip_src", metavar="IP_SRC", type=_arg(address),
                        help="address of the remote end (whose slurmd is asked)")
    parser.add_argument("port_src", metavar="PORT_SRC", type=_arg(port_number))
    parser.add_argument("ip_dst", metavar="IP_DST", type=_arg(address), help="address of the local end")
    parser.add_argument("port_dst", metavar="PORT_DST", type=_arg(port_number))
    parser.add_argument("family", metavar="4|6", nargs="?", choices=("4", "6"),
                        help="address family of the addresses (default: from the addresses)")
    return parser


def batch_parser() -> argparse.ArgumentParser:
    """`slurm-callerid batch`."""
    parser = _parser(
        prog=f"{PROG} batch", parents=[_options()],
        description="Read queries `IP_SRC PORT_SRC IP_DST PORT_DST [4|6]`, one a line, and print one answer "
                    "a line, in order: `JOBID NODENAME`, `indeterminate` or `error: REASON` (JSON lines with "
                    "--json). One process for all: no interpreter start-up per query.")
    parser.add_argument("file", nargs="?", default="-", help="queries (default: stdin)")
    return parser


def decode_parser() -> argparse.ArgumentParser:
    """`slurm-callerid decode`."""
    parser = _common(_parser(
        prog=f"{PROG} decode",
        description="Decode captured Slurm frames (whole TCP payloads, length prefix included) to JSON. "
                    "Input: hex or raw bytes, a JSON file whose *_hex lists hold frames, or a capture file "
                    "(--pcap). Credentials are checked with munged, found like a query does."))
    parser.add_argument("file", nargs="?", help="input file (default: stdin)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--hex", action="store_true", help="input is hex")
    form.add_argument("--raw", action="store_true", help="input is raw bytes")
    form.add_argument("--pcap", metavar="FILE",
                      help="a pcap or pcapng capture: every Slurm frame of its TCP connections to --port")
    parser.add_argument("--port", type=_arg(port_number), action="append",
                        help="with --pcap: a Slurm port (repeatable; default: SlurmdPort and SlurmctldPort of "
                             "--conf, else 6818 and 6817)")
    parser.add_argument("--json", action="store_true",
                        help="with --pcap: one JSON object a line (without --pcap the output is JSON)")
    parser.add_argument("--no-munge", action="store_true", help="do not try to decode credentials")
    parser.add_argument("--key", metavar="PATH",
                        help="auth/slurm: check tokens' signatures with this slurm.key or slurm.jwks (default: "
                             "the key beside slurm.conf, when readable)")
    parser.add_argument("--timeout", type=_arg(seconds), default=10.0, metavar="SECONDS",
                        help="how long munged may take for all credential checks (default: 10)")
    parser.add_argument("--lenient", action="store_true",
                        help="read like a 22.05.8 receiver: strings without NUL, bytes after the body")
    return parser


# --- main ------------------------------------------------------------------------------------------


def run() -> None:
    """The console script: main(), then an exit that skips tearing the interpreter down.

    Freeing every module at exit costs a single query about a sixth of its time; nothing of ours needs it
    (no atexit work, no file left unflushed but stdout and stderr, flushed here)."""
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = EXIT_FAILED
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        _warn(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head`: no traceback, and none from the final flush either
        _silence_stdout()
        return EXIT_FAILED
    except Exception as exc:  # the last resort: never a traceback on a terminal
        _warn(f"{PROG}: internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["decode"]:
        parser = decode_parser()
        args = parser.parse_args(argv[1:])
        if args.pcap is None:
            from slurmproto.capture import run as decode

            if args.port:
                parser.error("--port goes with --pcap")
            args.file = args.file or "-"
            return decode(args)
        if args.file is not None:
            parser.error("a FILE and --pcap FILE: give one input")
        from slurmproto.pcapdecode import run as decode_pcap

        return decode_pcap(args)
    if argv[:1] == ["batch"]:
        return _batch(batch_parser().parse_args(argv[1:]))
    parser = main_parser()
    return _callerid(parser.parse_args(argv), parser)


def _warn(text: str) -> None:
    """One line on stderr, whatever it contains and even if stderr is gone."""
    with contextlib.suppress(OSError, ValueError):
        print(" ".join(text.split()), file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _callerid(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    started = time.monotonic()
    try:
        _check_query(args.family, args.ip_src, args.ip_dst)
    except ValueError as exc:
        parser.error(str(exc))
    from slurmproto.client import callerid
    from slurmproto.errors import SlurmError

    say = _printer(args.verbose)
    try:
        settings, deadline = _settings(args, say, started)
        say(f"asking slurmd at {args.ip_src} port {settings['port']}"
            + ("" if "signer" in settings else f"; munge socket {settings['munge_socket'] or 'default'}"))
        settings["timeout"] = deadline - time.monotonic()
        result = callerid(args.ip_src, args.port_src, args.ip_dst, args.port_dst, **settings)
    except (SlurmError, ValueError, OSError) as exc:
        if args.json:
            _print_json(_error_json(exc))
        else:
            _warn(_failure(exc))
        return EXIT_FAILED
    if args.verbose:
        _explain(result, say)
    if args.json:
        _print_json(_result_json(result))
    elif result.job_id is not None:
        print(f"{result.job_id} {result.node_name}")
    else:
        _warn("slurm_network_callerid: remote job id indeterminate")
    return EXIT_FOUND if result.job_id is not None else EXIT_FAILED


def _batch(args: argparse.Namespace) -> int:
    from slurmproto.errors import SlurmError

    say = _printer(args.verbose)
    try:
        settings, _ = _settings(args, say, time.monotonic())
        source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115 (closed below)
    except (SlurmError, ValueError, OSError) as exc:
        _warn(f"{PROG} batch: {_local_text(exc)}")
        return EXIT_FAILED
    learned: dict[str, int] = {}  # source host -> the version its slurmd answered in
    found_all = True
    with source:
        try:
            for line in _lines(source):
                if not line.split() or line.split()[0].startswith("#"):
                    continue
                found = _batch_query(line, settings, learned, args.json)
                found_all = found_all and found
        except (SlurmError, OSError) as exc:  # the input itself: no later line is read
            _warn(f"{PROG} batch: {_local_text(exc)}")
            return EXIT_FAILED
    return EXIT_FOUND if found_all else EXIT_FAILED


def _lines(source: IO[bytes]) -> Iterator[str]:
    """Lines as text (bad bytes replaced); InputError at a line longer than MAX_LINE (none is buffered)."""
    from slurmproto.errors import InputError

    number = 0
    while line := source.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise InputError(f"line {number} is longer than {MAX_LINE} characters: not a query file")
        yield line.decode("utf-8", "replace")


def _batch_query(line: str, settings: dict[str, Any], learned: dict[str, int], as_json: bool) -> bool:
    """Answer one query line; whether it named a job."""
    import json

    from slurmproto.client import callerid
    from slurmproto.errors import SlurmError

    fields = line.split()
    try:
        if len(fields) not in (4, 5) or (len(fields) == 5 and fields[4] not in ("4", "6")):
            raise ValueError(f"expected IP_SRC PORT_SRC IP_DST PORT_DST [4|6], got {line.strip()[:100]!r}")
        _check_query(fields[4] if len(fields) == 5 else None, fields[0], fields[2])
        start = learned.get(fields[0], settings["start_version"])
        result = callerid(fields[0], port_number(fields[1]), fields[2], port_number(fields[3]),
                          **{**settings, "start_version": start})
        learned[fields[0]] = result.protocol_version
    except (SlurmError, ValueError, OSError) as exc:
        print(json.dumps(_error_json(exc)) if as_json else f"error: {exc}", flush=True)
        return False
    if as_json:
        print(json.dumps(_result_json(result)), flush=True)
    else:
        print(f"{result.job_id} {result.node_name}" if result.job_id is not None else "indeterminate", flush=True)
    return result.job_id is not None


def _check_query(family: str | None, src: str, dst: str) -> None:
    """As scontrol: with a trailing 4 or 6, the addresses must be of that family; both of one family."""
    from slurmproto.addresses import is_ip, pack
    from slurmproto.client import Endpoint
    from slurmproto.constants import AF_INET, AF_INET6

    if family is not None:
        wanted = AF_INET if family == "4" else AF_INET6
        for text in (src, dst):
            if not is_ip(text) or pack(text)[0] != wanted:
                raise ValueError(f"{text} is not an IPv{family} address")
    if Endpoint.parse(src).af != Endpoint.parse(dst).af:
        raise ValueError(f"addresses of different families: {src} and {dst}")


# --- settings from the options and slurm.conf -------------------------------------------------------


def load_conf(path: str | None, say: Callable[[str], None]) -> Any:
    """slurm.conf, or None when there is none where Slurm looks (a host can still ask with the defaults)."""
    from slurmproto.conf import ConfNotFound, load

    try:
        conf = load(path)
    except ConfNotFound as exc:
        say(f"config: {exc}; using defaults")
        return None
    say(f"config: {conf.filename}")
    return conf


def _settings(args: argparse.Namespace, say: Callable[[str], None],
              started: float) -> tuple[dict[str, Any], float]:
    """callerid() keyword arguments from the options and slurm.conf, and the first query's deadline."""
    from slurmproto.settings import Settings

    conf = load_conf(args.conf, say)
    settings = Settings.from_conf(conf, port=args.port, munge_socket=args.munge_socket, env=os.environ)
    budget = args.timeout if args.timeout is not None else settings.timeout
    deadline = started + budget
    version = args.protocol_version
    start = None if version is not None else _local_version(conf, deadline, say)
    options = {**settings.callerid_options(), "version": version, "start_version": start, "timeout": budget,
               "trusted_uids": settings.trusted_uids(deadline)}
    if settings.auth.auth_type != "auth/munge":  # MUNGE: callerid() opens (and closes) its own context
        signer = options["signer"] = settings.signer(version or start)
        say(f"credentials: {signer.description}")
    return options, deadline


def _local_version(conf: Any, deadline: float, say: Callable[[str], None]) -> int | None:
    from slurmproto.conf import ConfError
    from slurmproto.localslurm import local_protocol_version
    from slurmproto.versions import name_of

    try:
        spool = conf.spool_dir() if conf else None
    except ConfError:  # SlurmdSpoolDir needs a node name this host lacks: only a hint is lost
        spool = None
    start = local_protocol_version(spool, deadline=deadline)
    say(f"local Slurm: {name_of(start) if start else 'unknown'}")
    return start


# --- output ----------------------------------------------------------------------------------------


def _is_local(exc: BaseException) -> bool:
    """Whether the failure happened on this host (munged, slurm.conf, files, NSS), not at the slurmd."""
    from slurmproto.conf import ConfError
    from slurmproto.errors import InputError, LocalTimeout
    from slurmproto.munge import CredDecode, MungeError

    if isinstance(exc, MungeError):
        return not isinstance(exc, CredDecode)  # CredDecode: the reply's credential is bad
    return isinstance(exc, LocalTimeout | ConfError | InputError | OSError | ValueError)


def _local_text(exc: BaseException) -> str:
    from slurmproto.munge import MungeError

    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"munge: {exc}" if isinstance(exc, MungeError) else str(exc)


def _failure(exc: BaseException) -> str:
    if _is_local(exc):
        return f"{PROG}: {_local_text(exc)}"
    return f"slurm_network_callerid: unable to retrieve callerid data from remote slurmd: {exc}"


def _printer(verbose: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if verbose:
            print(text, file=sys.stderr)
    return say


def _explain(result: Any, say: Callable[[str], None]) -> None:
    from slurmproto.versions import name_of

    for attempt in result.attempts:
        say(f"attempt {name_of(attempt.version)} (0x{attempt.version:04x}): {attempt.outcome} "
            f"in {attempt.seconds * 1000:.2f} ms")
    say(f"sent {len(result.sent)} bytes: {result.sent.hex()}")
    say(f"received {len(result.received)} bytes: {result.received.hex()}")
    say(f"reply: {result.reply} signed by uid {result.signer_uid}")
    say("timings: " + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in result.timings.items()))


def _result_json(result: Any) -> dict[str, Any]:
    from slurmproto.constants import step_name
    from slurmproto.versions import name_of

    return {
        "job_id": result.job_id,
        "node_name": result.node_name,
        "step_id": result.step_id,
        "step": step_name(result.step_id) if result.step_id is not None else None,
        "protocol_version": f"0x{result.protocol_version:04x}",
        "release": name_of(result.protocol_version),
        "slurmd": f"{result.slurmd[0]}:{result.slurmd[1]}",
        "signer_uid": result.signer_uid,
        "attempts": [{"version": f"0x{a.version:04x}", "outcome": a.outcome, "ms": round(a.seconds * 1000, 3)}
                     for a in result.attempts],
        "timings_ms": {k: round(v * 1000, 3) for k, v in result.timings.items()},
    }


def _error_json(exc: BaseException) -> dict[str, Any]:
    text = _local_text(exc) if _is_local(exc) else str(exc)
    return {"error": text, "error_type": type(exc).__name__, "rc": getattr(exc, "rc", None),
            "local": _is_local(exc)}


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    sys.exit(main())
