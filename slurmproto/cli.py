"""slurm-callerid: `scontrol callerid` with deadlines, version fallback, JSON, and a frame decoder.

    slurm-callerid [options] IP_SRC PORT_SRC IP_DST PORT_DST [4|6]
    slurm-callerid batch [options] [FILE]
    slurm-callerid decode [--hex | --raw] [--munge-socket PATH] [FILE]

Exit status: 0 a job was named (batch: for every query); 1 indeterminate or an error (as scontrol); 2 usage.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

EXIT_FOUND, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _options() -> argparse.ArgumentParser:
    """The options shared by a single query and `batch`."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print the result as JSON")
    options.add_argument("--timeout", type=float, metavar="SECONDS",
                         help="overall deadline per query (default: TCPTimeout + MessageTimeout)")
    options.add_argument("--protocol-version", default="auto", metavar="VERSION",
                         help="header version: auto (default), a release such as 24.11, or a number (0x2a00)")
    options.add_argument("--port", type=int, help="slurmd port (default: SlurmdPort from slurm.conf, 6818)")
    options.add_argument("--conf", metavar="PATH", help="slurm.conf (default: $SLURM_CONF, /etc/slurm/slurm.conf)")
    options.add_argument("--munge-socket", metavar="PATH", help="munged socket (default: AuthInfo socket=)")
    options.add_argument("-v", "--verbose", action="store_true", help="show what was sent and received")
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-callerid", parents=[_options()],
        description="Ask the slurmd on IP_SRC which Slurm job holds the TCP connection "
                    "IP_SRC:PORT_SRC -> IP_DST:PORT_DST, like `scontrol callerid`; prints JOBID NODENAME. "
                    "`slurm-callerid batch` answers many queries in one process; "
                    "`slurm-callerid decode [FILE]` decodes captured frames.")
    parser.add_argument("ip_src", metavar="IP_SRC", help="address of the remote end (whose slurmd is asked)")
    parser.add_argument("port_src", metavar="PORT_SRC", type=int)
    parser.add_argument("ip_dst", metavar="IP_DST", help="address of the local end")
    parser.add_argument("port_dst", metavar="PORT_DST", type=int)
    parser.add_argument("family", metavar="4|6", nargs="?", choices=("4", "6"),
                        help="address family of the addresses (default: from the addresses)")
    return parser


def _batch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-callerid batch", parents=[_options()],
        description="Read queries `IP_SRC PORT_SRC IP_DST PORT_DST [4|6]`, one a line, and print one answer "
                    "a line, in order: `JOBID NODENAME`, `indeterminate` or `error: REASON` (JSON lines with "
                    "--json). One process for all: no interpreter start-up per query.")
    parser.add_argument("file", nargs="?", default="-", help="queries (default: stdin)")
    return parser


def _decode_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-callerid decode",
        description="Decode captured Slurm frames (whole TCP payloads, length prefix included) to JSON. "
                    "Input: hex or raw bytes, or a JSON file whose *_hex lists hold frames.")
    parser.add_argument("file", nargs="?", default="-", help="input file (default: stdin)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--hex", action="store_true", help="input is hex")
    form.add_argument("--raw", action="store_true", help="input is raw bytes")
    parser.add_argument("--munge-socket", metavar="PATH", help="munged socket used to verify credentials")
    parser.add_argument("--no-munge", action="store_true", help="do not try to decode credentials")
    parser.add_argument("--lenient", action="store_true",
                        help="read like a 22.05.8 receiver: strings without NUL, bytes after the body")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["decode"]:
        from slurmproto.decode import run as decode

        return decode(_decode_parser().parse_args(argv[1:]))
    if argv[:1] == ["batch"]:
        return _batch(_batch_parser().parse_args(argv[1:]))
    return _callerid(_parser().parse_args(argv))


def _callerid(args: argparse.Namespace) -> int:
    from slurmproto.client import callerid
    from slurmproto.errors import SlurmError

    say = _printer(args.verbose)
    try:
        settings = _settings(args, say)
        _check_family(args.family, args.ip_src, args.ip_dst)
        say(f"asking slurmd at {args.ip_src} port {settings['port']}; "
            f"munge socket {settings['munge_socket'] or 'default'}")
        result = callerid(args.ip_src, args.port_src, args.ip_dst, args.port_dst, **settings)
    except (SlurmError, ValueError, OSError) as exc:
        if args.json:
            _print_json(_error_json(exc))
        else:
            print(f"slurm_network_callerid: unable to retrieve callerid data from remote slurmd: {exc}",
                  file=sys.stderr)
        return EXIT_FAILED
    if args.verbose:
        _explain(result, say)
    if args.json:
        _print_json(_result_json(result))
    elif result.job_id is not None:
        print(f"{result.job_id} {result.node_name}")
    else:
        print("slurm_network_callerid: remote job id indeterminate", file=sys.stderr)
    return EXIT_FOUND if result.job_id is not None else EXIT_FAILED


def _batch(args: argparse.Namespace) -> int:
    import json

    from slurmproto.client import callerid
    from slurmproto.errors import SlurmError

    say = _printer(args.verbose)
    try:
        settings = _settings(args, say)
        source = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115 (closed below)
    except (SlurmError, ValueError, OSError) as exc:
        print(f"slurm-callerid batch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    learned: dict[str, int] = {}  # source host -> the version its slurmd answered in
    found_all = True
    with source:
        for line in source:
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            try:
                if len(fields) not in (4, 5) or (len(fields) == 5 and fields[4] not in ("4", "6")):
                    raise ValueError(f"expected IP_SRC PORT_SRC IP_DST PORT_DST [4|6], got {line.strip()!r}")
                _check_family(fields[4] if len(fields) == 5 else None, fields[0], fields[2])
                start = learned.get(fields[0], settings["start_version"])
                result = callerid(fields[0], int(fields[1]), fields[2], int(fields[3]),
                                  **{**settings, "start_version": start})
                learned[fields[0]] = result.protocol_version
            except (SlurmError, ValueError, OSError) as exc:
                found_all = False
                print(json.dumps(_error_json(exc)) if args.json else f"error: {exc}", flush=True)
                continue
            found_all = found_all and result.job_id is not None
            if args.json:
                print(json.dumps(_result_json(result)), flush=True)
            else:
                print(f"{result.job_id} {result.node_name}" if result.job_id is not None else "indeterminate",
                      flush=True)
    return EXIT_FOUND if found_all else EXIT_FAILED


def _check_family(family: str | None, *addresses: str) -> None:
    """As scontrol: with a trailing 4 or 6, the addresses must be of that family."""
    if family is None:
        return
    kind = socket.AF_INET if family == "4" else socket.AF_INET6
    for text in addresses:
        try:
            socket.inet_pton(kind, text)
        except OSError:
            raise ValueError(f"{text} is not an IPv{family} address") from None


def _settings(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """callerid() keyword arguments from the options and slurm.conf."""
    from slurmproto.conf import ConfNotFound, load
    from slurmproto.versions import name_of, parse_version

    try:
        conf = load(args.conf)
        say(f"config: {conf.filename}")
    except ConfNotFound as exc:  # a host without slurm.conf can still ask with the defaults
        conf = None
        say(f"config: {exc}; using defaults")
    version = start = None
    if args.protocol_version != "auto":
        version = parse_version(args.protocol_version)
    else:
        from slurmproto.localslurm import local_protocol_version

        start = local_protocol_version(conf.spool_dir(conf.guess_nodename()) if conf else None)
        say(f"local Slurm: {name_of(start) if start else 'unknown'}")
    return {
        "port": args.port or (conf.slurmd_port if conf else 6818),
        "version": version,
        "start_version": start,
        "munge_socket": args.munge_socket or (conf.munge_socket if conf else None),
        "munge_ttl": conf.auth_ttl if conf else None,
        "connect_timeout": float(conf.tcp_timeout) if conf else 2.0,
        "message_timeout": float(conf.message_timeout) if conf else 10.0,
        "timeout": args.timeout,
    }


def _printer(verbose: bool) -> Any:
    def say(text: str) -> None:
        if verbose:
            print(text, file=sys.stderr)
    return say


def _explain(result: Any, say: Any) -> None:
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
    return {"error": str(exc), "error_type": type(exc).__name__, "rc": getattr(exc, "rc", None)}


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    sys.exit(main())
