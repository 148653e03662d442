"""fake-slurmd: run a simulated compute node from a scenario file until interrupted.

    fake-slurmd [--scenario node.toml] [--release 24.11] [--listen NAME=ADDRESS:PORT ... | --network auto]
                [--munge-socket PATH] [--auth munge|slurm --key PATH [--jwks PATH] [--sack PATH]]
                [--cluster NAME] [--spool-dir DIR] [--slurm-conf PATH]
                [--log-format text|json] [--log-level info]

Once every node listens, stdout gets one line per node and nothing else, ever:

    listening NAME ADDRESS PORT        (e.g. "listening node1 127.0.0.1 40321"; IPv6 without brackets)

With nothing configured the node is node1 on 127.0.0.1 and a free port (never slurmd's 6818). With
`--network namespaces` (or `auto`, as root) each node is in a network namespace of its own, made for it,
at 10.78.0.N (the scenario's subnet) port 6818; `--network loopback` (and `auto` without root) puts node N
on 127.0.0.N, all on one free port. Logs go to
stderr, one event a line. SIGHUP reloads the scenario's jobs; SIGINT or SIGTERM stops (exit 0). Exit 1:
it could not start (a port in use, an unusable spool dir or slurm.conf path); exit 2: a usage or
scenario error, given as one line (with --log-format json, a "not started" event with the error's keys,
docs/json-output.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import signal
import sys
import threading
import time
from typing import Any

from fake_slurmd.controller import LEVELS, FakeSlurmd
from fake_slurmd.scenario import (
    NETWORKS,
    At,
    NodeSpec,
    Scenario,
    ScenarioError,
    clashing_node,
    cluster_name,
    ip_address,
    node_name,
)
from slurmproto import package_version
from slurmproto.errors import KeyFileError
from slurmproto.versions import BY_NAME

LISTEN = re.compile(r"(?P<name>[^=]*)=(?P<host>.*):(?P<port>[0-9]{1,5})")


def _fields_text(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" if isinstance(v, str) and (" " in v or not v) else f"{k}={v}"
                    for k, v in fields.items())


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", {}))
    if record.exc_info and record.exc_info[1] is not None:  # one line for the exception, never a traceback
        fields["exception"] = repr(record.exc_info[1])
    return fields


class TextFormatter(logging.Formatter):
    """`time level event key=value ...`, always one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname.lower()} {record.getMessage()} "
        return (line + _fields_text(_fields(record))).rstrip().replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": round(record.created, 6), "level": record.levelname.lower(),
                                "event": record.getMessage()}
        data.update(_fields(record))
        return json.dumps(data, default=str)


def main_parser() -> argparse.ArgumentParser:
    """fake-slurmd's options (its man page is written from this)."""
    summary, _, rest = (__doc__ or "").partition("\n\n")
    parser = argparse.ArgumentParser(prog="fake-slurmd", description=summary.split(": ", 1)[-1],
                                     epilog=rest.partition("\n\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--scenario", help="scenario file (TOML or JSON); default: one node on a free port, no jobs")
    parser.add_argument("--release", choices=list(BY_NAME), help="behave exactly like this Slurm release")
    parser.add_argument("--listen", action="append", metavar="NAME=ADDRESS:PORT",
                        help="a node to simulate (repeatable; overrides the scenario's nodes; port 0: a free one)")
    parser.add_argument("--network", choices=NETWORKS,
                        help="where the nodes listen: host (as the scenario's nodes say), namespaces (each in its "
                             "own, root), loopback (127.0.0.N) or auto (namespaces when root, else loopback)")
    parser.add_argument("--munge-socket", help="munged socket (default: the scenario's, else munge's default)")
    parser.add_argument("--auth", choices=("munge", "slurm"),
                        help="AuthType of the node: munge (default, with munged) or slurm (tokens, --key)")
    parser.add_argument("--key", metavar="PATH", help="auth/slurm: the node's slurm.key")
    parser.add_argument("--jwks", metavar="PATH", help="auth/slurm: the node's slurm.jwks (used instead of --key)")
    parser.add_argument("--sack", metavar="PATH", help="auth/slurm: also serve a sack socket here")
    parser.add_argument("--cluster", metavar="NAME", help="ClusterName (auth/slurm signs it into its tokens; "
                                                          "default: the scenario's, else none)")
    parser.add_argument("--spool-dir", help="where the step sockets go (default: the scenario's, else a private "
                                            "temp dir); must be this user's and writable by no one else")
    parser.add_argument("--slurm-conf", metavar="PATH", help="also write a slurm.conf for real Slurm clients here "
                                                              "(replaced, never written through a symlink)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", choices=list(LEVELS), default="info")
    return parser


def _node(text: str) -> NodeSpec:
    at = At("--listen", repr(text))
    match = LISTEN.fullmatch(text)
    if match is None:
        raise at.error("expected NAME=ADDRESS:PORT")
    port = int(match["port"])
    if port > 65535:
        raise at.expected("a port from 0 to 65535", port)
    host = match["host"].removeprefix("[").removesuffix("]") or "127.0.0.1"
    return NodeSpec(node_name(match["name"], at), ip_address(host, at), port)


def _listen_nodes(texts: list[str]) -> list[NodeSpec]:
    nodes: list[NodeSpec] = []
    for text in texts:
        node, at = _node(text), At("--listen", repr(text))
        if any(n.name == node.name for n in nodes):
            raise at.error(f"node {node.name!r} appears twice")
        other = clashing_node(nodes, node)
        if other is not None:
            raise at.error(f"{node.address} port {node.port or '0 (shared)'} is {other.name}'s already")
        nodes.append(node)
    return nodes


def _setup_logging(log_format: str, level: str) -> logging.Logger:
    # On the root logger: asyncio's and any other library's records get the same one-line format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.getLogger().addHandler(handler)
    logging.raiseExceptions = False  # a failing log write is dropped, not reported with a traceback
    logger = logging.getLogger("fake_slurmd")
    logger.setLevel(LEVELS[level])
    return logger


def _start(args: argparse.Namespace) -> FakeSlurmd:
    if args.listen and args.network not in (None, "host"):
        raise ScenarioError(f"--network {args.network}: the nodes' addresses are assigned, not --listen's")
    network = "host" if args.listen else args.network
    scenario = Scenario.load(args.scenario, network) if args.scenario else Scenario([NodeSpec("node1", port=0)])
    if args.listen:
        scenario.nodes = _listen_nodes(args.listen)
    elif args.network and not args.scenario:
        scenario.network = args.network
    fake = FakeSlurmd(scenario, release=args.release, munge_socket=args.munge_socket, spool_dir=args.spool_dir,
                      auth=args.auth, key=args.key, jwks=args.jwks, sack=args.sack,
                      cluster=cluster_name(args.cluster, At("--cluster")))
    fake.start()
    try:
        if args.slurm_conf:
            fake.slurm_conf(args.slurm_conf)
    except BaseException:
        fake.stop()
        raise
    return fake


def _serve(fake: FakeSlurmd, scenario_path: str | None, logger: logging.Logger) -> None:
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    for node in fake.nodes:
        print(f"listening {node.name} {node.address} {node.port}", flush=True)
    nodes = ", ".join(f"{n.name} on {n.address}:{n.port}" for n in fake.nodes)
    network = {"namespaces": "; each node in a network namespace of its own",
               "loopback": "; on loopback (no network namespaces)"}.get(fake.network, "")
    print(f"fake-slurmd: serving {nodes}{network}; step sockets in {fake.spool_dir}", file=sys.stderr, flush=True)
    while not stop.wait(0.2):
        if reload.is_set():
            reload.clear()
            if scenario_path:
                try:
                    fake.reload(Scenario.load(scenario_path, fake.scenario.network))
                except ScenarioError as exc:  # keep serving the old jobs
                    logger.error("reload failed", extra={"fields": {"reason": str(exc)}})


def _failed(log_format: str, exc: Exception, status: int) -> int:
    """The one line saying why it could not start: text, or with --log-format json the shape every JSON
    error of the project has (error, error_type, rc), as a log record (docs/json-output.md)."""
    if log_format == "json":
        line = json.dumps({"time": round(time.time(), 6), "level": "error", "event": "not started", "error": str(exc),
                           "error_type": type(exc).__name__, "rc": None, "exit_status": status})
    else:
        line = f"fake-slurmd: {exc}"
    print(line, file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = main_parser().parse_args(argv)
    logger = _setup_logging(args.log_format, args.log_level)
    # Every held client connection is a descriptor: allow as many as the hard limit does.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        fake = _start(args)
    except ScenarioError as exc:
        return _failed(args.log_format, exc, 2)
    except (OSError, ValueError, KeyFileError) as exc:  # a port in use, a spool dir of someone else's, a path too long
        return _failed(args.log_format, exc, 1)
    except KeyboardInterrupt:
        return 130
    try:
        _serve(fake, args.scenario, logger)
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
