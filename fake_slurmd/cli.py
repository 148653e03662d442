"""fake-slurmd: run a simulated compute node from a scenario file until interrupted.

    fake-slurmd --scenario node.toml [--release 24.11] [--munge-socket PATH] [--spool-dir DIR]
                [--log-format text|json] [--log-level info] [--slurm-conf PATH]

SIGHUP reloads the scenario's jobs; SIGINT or SIGTERM stops.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import signal
import sys
import threading
import time
from typing import Any

from fake_slurmd.controller import LEVELS, FakeSlurmd
from fake_slurmd.scenario import NodeSpec, Scenario, ScenarioError
from slurmproto.versions import BY_NAME


class TextFormatter(logging.Formatter):
    """`time level event key=value ...`"""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        text = " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}" for k, v in fields.items())
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d} {record.levelname.lower()} {record.getMessage()} {text}".rstrip()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": round(record.created, 6), "level": record.levelname.lower(),
                                "event": record.getMessage()}
        data.update(getattr(record, "fields", {}))
        return json.dumps(data, default=str)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fake-slurmd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", help="scenario file (TOML or JSON); default: one node, no jobs")
    parser.add_argument("--release", choices=list(BY_NAME), help="behave exactly like this Slurm release")
    parser.add_argument("--listen", action="append", metavar="NAME=ADDRESS:PORT",
                        help="a node to simulate (repeatable; overrides the scenario's nodes)")
    parser.add_argument("--munge-socket", help="munged socket (default: the scenario's, else munge's default)")
    parser.add_argument("--spool-dir", help="where the step sockets go (default: the scenario's, else a temp dir)")
    parser.add_argument("--slurm-conf", metavar="PATH", help="also write a slurm.conf for real Slurm clients here")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", choices=list(LEVELS), default="info")
    return parser


def _node(text: str) -> NodeSpec:
    name, sep, where = text.partition("=")
    host, _, port = where.rpartition(":")
    if not sep or not name or not port.isdigit():
        raise ScenarioError(f"--listen {text!r}: expected NAME=ADDRESS:PORT")
    return NodeSpec(name, host.strip("[]") or "127.0.0.1", int(port))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else TextFormatter())
    logger = logging.getLogger("fake_slurmd")
    logger.addHandler(handler)
    logger.setLevel(LEVELS[args.log_level])
    # Every held client connection is a descriptor: allow as many as the hard limit does.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        scenario = Scenario.load(args.scenario) if args.scenario else Scenario([NodeSpec("node1")])
        if args.listen:
            scenario.nodes = [_node(text) for text in args.listen]
        fake = FakeSlurmd(scenario, release=args.release, munge_socket=args.munge_socket,
                          spool_dir=args.spool_dir).start()
    except (ScenarioError, OSError) as exc:
        print(f"fake-slurmd: {exc}", file=sys.stderr)
        return 1
    if args.slurm_conf:
        fake.slurm_conf(args.slurm_conf)
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    nodes = ", ".join(f"{n.name} on {n.address}:{n.port}" for n in fake.nodes)
    print(f"fake-slurmd: serving {nodes}; step sockets in {fake.spool_dir}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.2):
            if reload.is_set():
                reload.clear()
                if args.scenario:
                    try:
                        fake.reload(Scenario.load(args.scenario))
                    except ScenarioError as exc:  # keep serving the old jobs
                        logger.error("reload failed", extra={"fields": {"reason": str(exc)}})
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
