"""Scenario files: the simulated nodes and their jobs, in TOML or JSON.

    release = "26.05"               # optional: behave exactly like this release (default: answer any)
    slurm_user = "slurm"            # optional: besides root, who may ask about any job (default root)
    spool_dir = "/srv/fake/spool"   # optional: where the step sockets go (default: a private temp dir);
                                    # it must be this user's and writable by no one else
    munge_socket = "/run/munge/munge.socket.2"   # optional (default: munge's default)
    client_timeout = 10             # optional: seconds a client may take to send its request
    auth = "slurm"                  # optional: "munge" (default, with munged) or "slurm" (auth/slurm tokens)
    key = "/etc/slurm/slurm.key"    # auth/slurm's key (required with auth = "slurm")
    jwks = "/etc/slurm/slurm.jwks"  # optional: auth/slurm's key set (from 24.05; used instead of key)
    sack = "/run/slurm/sack.socket" # optional (auth/slurm): serve a sack socket here
    cluster = "cluster1"            # optional: ClusterName (auth/slurm's "cluster" claim in what it signs)
    communication_parameters = "block_null_hash,block_zero_hash"   # optional, as in slurm.conf
    network = "auto"                # optional: "host" (default): each node where its [[nodes]] entry says;
                                    # "namespaces": node N (from 1) in a network namespace of its own (root),
                                    # at `subnet` host N and fd78::N, port 6818; "loopback": node N on
                                    # 127.0.0.N, all on one free port; "auto": namespaces when root, else
                                    # loopback. Nodes then take only a name.
    subnet = "10.78.0.0/24"         # optional (network = "namespaces" or "auto"): the nodes' IPv4 subnet

    [[nodes]]
    name = "node1"
    address = "127.0.0.1"           # default 127.0.0.1
    port = 6818                     # default 6818 (a real slurmd's); 0 picks a free port
    netns = "ns1"                   # optional: listen inside /run/netns/ns1

    [[jobs]]
    job_id = 42
    user = "alice"                  # a name or a uid
    start_time = 1795960981         # optional, epoch seconds or a TOML datetime (default: now)
    nodes = ["node1"]               # optional (default: every node)
    steps = ["extern", "batch", 0]  # optional (default: extern and batch)
    pids = [1234]                   # processes of the job ...
    trees = [5678]                  # ... and everything below these
    cgroups = ["/sys/fs/cgroup/freezer/slurm/uid_1001/job_42"]   # ... and every process in these
    environ = true                  # ... and processes whose environment has SLURM_JOB_ID=42
    adopt_cgroup = "/sys/fs/cgroup/freezer/.../step_extern"      # ADD_EXTERN_PID also writes the pid here
    x11 = {display = 10, xauthority = "/home/alice/.Xauthority"}  # optional: REQUEST_X11_DISPLAY's answer
    namespaces = {mnt = "/proc/4321/ns/mnt"}   # optional: the job container's namespaces (GET_NS_FD(S)),
                                               # opened at each request; mnt, pid, net, ipc, uts, user, cgroup, time

Without [[nodes]] the scenario has one node, node1 on 127.0.0.1 and a free port. A job may name only
nodes of the scenario, and two nodes listening in one namespace may not share an address and port. JSON
files have the same keys (null means the default). Step sockets are created in start_time order, so their
ctimes (which the kernel sets, and which 26.05's pam_slurm_adopt sorts "newest" by) keep the jobs' order.

A value of the wrong kind is a ScenarioError naming the file and the field's path:
"node.toml: jobs[1].job_id: expected a job id (an integer from 1 to 4294967279), got 'x'".
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import pwd
import re
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmproto.constants import SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT, SLURM_INTERACTIVE_STEP
from slurmproto.linuxns import NAMESPACE_TYPES as NAMESPACE_TYPES  # the scenario's namespace kinds
from slurmproto.settings import DEFAULT_SLURMD_PORT
from slurmproto.versions import BY_NAME

STEP_WORDS = {"extern": SLURM_EXTERN_CONT, "batch": SLURM_BATCH_SCRIPT, "interactive": SLURM_INTERACTIVE_STEP}
MAX_SCENARIO_BYTES = 16 * 1024 * 1024
MAX_JOB_ID = 0xFFFFFFEF
"""The largest job id: 0xFFFFFFF0 and up are Slurm's sentinels (NO_VAL and its kin)."""
MAX_UID = 0xFFFFFFFE
"""(uid_t) -1 is no uid."""
MAX_PID = 4_194_304
"""PID_MAX_LIMIT on 64-bit Linux."""
MAX_TIME = float(2**34)
"""Epoch seconds: past the year 2500, where datetime still works."""
MAX_TIMEOUT = 86_400.0
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A host-name label: it names step sockets (<spool>/<node>_<job>.<step>) and slurm.conf's NodeName."""

TOP_KEYS = {"release", "slurm_user", "spool_dir", "munge_socket", "client_timeout", "nodes", "jobs", "auth", "key",
            "jwks", "sack", "cluster", "communication_parameters", "network", "subnet"}
HASH_BLOCKS = ("block_null_hash", "block_zero_hash")
AUTH_MODES = ("munge", "slurm")
NETWORKS = ("host", "namespaces", "loopback", "auto")
DEFAULT_SUBNET = "10.78.0.0/24"
MAX_CLUSTER_NODES = 256
"""With network = "namespaces" or "auto": each node costs two namespaces' worth of setup."""
ASSIGNED = {"address": "addresses", "port": "ports", "netns": "namespaces"}
"""Node keys FakeSlurmd sets itself when the scenario's network is not "host"."""
NODE_KEYS = {"name", "address", "port", "netns"}
JOB_KEYS = {"job_id", "user", "start_time", "nodes", "steps", "pids", "trees", "cgroups", "environ", "adopt_cgroup",
            "x11", "namespaces"}
X11_KEYS = {"display", "xauthority"}
MAX_DISPLAY = 0x7FFFFFFF
"""The display is a C int."""
MAX_XAUTHORITY_BYTES = 4095
"""The reply's length counts the NUL; clients (slurmproto.stepd) take at most 4096."""


class ScenarioError(ValueError):
    """A scenario file or value that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    address: str = "127.0.0.1"
    port: int = DEFAULT_SLURMD_PORT
    netns: str | None = None
    address6: str | None = None
    """An IPv6 address the node listens on as well (a cluster node's in its namespace; not a scenario key)."""


@dataclass(frozen=True)
class X11:
    """A job's X11 forwarding as its slurmstepd knows it: localhost:<display>.0 and the xauthority file."""

    display: int
    xauthority: str | None = None


@dataclass
class Job:
    """A simulated job and the ways to tell which processes belong to it."""

    job_id: int
    uid: int
    start_time: float = field(default_factory=time.time)
    nodes: tuple[str, ...] | None = None
    steps: tuple[int, ...] = (SLURM_EXTERN_CONT, SLURM_BATCH_SCRIPT)
    pids: set[int] = field(default_factory=set)
    trees: set[int] = field(default_factory=set)
    cgroups: tuple[str, ...] = ()
    environ: bool = False
    adopt_cgroup: str | None = None
    x11: X11 | None = None
    """What REQUEST_X11_DISPLAY answers; None: display 0, no xauthority (no X11 forwarding)."""
    namespaces: tuple[tuple[int, str], ...] = ()
    """The job container's namespaces as (CLONE_NEW* type, path of a namespace file); none: no plugin."""
    adopted: list[int] = field(default_factory=list)
    """Pids added through REQUEST_ADD_EXTERN_PID, in order (on any node)."""
    adopted_on: dict[str, list[int]] = field(default_factory=dict)
    """The same, by the node whose stepd added them (stepds that know their node)."""
    node_trees: dict[str, set[int]] = field(default_factory=dict)
    """Process trees of the job on one node only (FakeSlurmd.spawn_in_job(node=...))."""

    def runs_on(self, node: str) -> bool:
        return self.nodes is None or node in self.nodes


@dataclass
class Scenario:
    nodes: list[NodeSpec]
    jobs: dict[int, Job] = field(default_factory=dict)
    release: str | None = None
    slurm_user: int = 0
    spool_dir: str | None = None
    munge_socket: str | None = None
    client_timeout: float = 10.0
    auth: str = "munge"
    key: str | None = None
    jwks: str | None = None
    sack: str | None = None
    cluster: str | None = None
    """ClusterName: auth/slurm signs it into its tokens' "cluster" claim."""
    hash_blocks: frozenset[str] = frozenset()
    """CommunicationParameters' block_null_hash / block_zero_hash: payloads the body check refuses."""
    network: str = "host"
    """host, namespaces, loopback or auto (see the module's doc); FakeSlurmd assigns the addresses."""
    subnet: str = DEFAULT_SUBNET

    @classmethod
    def load(cls, path: str | Path, network: str | None = None) -> Scenario:
        """The scenario in the file; `network`, when given, in place of the file's own."""
        path = Path(path)
        text = _read_text(path)
        try:
            parse = json.loads if path.suffix == ".json" or text.lstrip().startswith("{") else tomllib.loads
            data = parse(text)
        except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError
            raise ScenarioError(f"{path}: {exc}") from None
        except RecursionError:
            raise ScenarioError(f"{path}: nested too deeply") from None
        if network is not None and isinstance(data, dict):
            data["network"] = network
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "scenario") -> Scenario:
        root = At(where)
        table = _table(data, root, TOP_KEYS)
        release = _optional(table, "release")
        if release is not None and (not isinstance(release, str) or release not in BY_NAME):
            raise root.key("release").expected(f"a release ({', '.join(BY_NAME)})", release)
        network = _optional(table, "network", "host")
        if network not in NETWORKS:
            raise root.key("network").expected(f"a network ({', '.join(NETWORKS)})", network)
        subnet = _subnet(table, network, root)
        nodes = _nodes(_optional(table, "nodes"), root.key("nodes"), network)
        if network != "host":
            _fits(len(nodes), subnet, root.key("nodes"))
        jobs: dict[int, Job] = {}
        names = [node.name for node in nodes]
        for i, raw in enumerate(_list(_optional(table, "jobs", []), root.key("jobs"))):
            at = root.key("jobs").item(i)
            job = _job(raw, at)
            if job.job_id in jobs:
                raise at.key("job_id").error(f"job {job.job_id} appears twice")
            for n, name in enumerate(job.nodes or ()):
                if name not in names:
                    raise at.key("nodes").item(n).error(f"no node {name!r} in the scenario (nodes: {', '.join(names)})")
            jobs[job.job_id] = job
        timeout = _optional(table, "client_timeout", 10.0)
        auth = _optional(table, "auth", "munge")
        if auth not in AUTH_MODES:
            raise root.key("auth").expected(f"an auth mode ({', '.join(AUTH_MODES)})", auth)
        key = _optional_path(table, "key", root)
        if auth == "slurm" and key is None:
            raise root.key("key").error("auth = \"slurm\" needs the node's key file")
        return cls(nodes, jobs, release, _uid(_optional(table, "slurm_user", 0), root.key("slurm_user")),
                   _optional_path(table, "spool_dir", root), _optional_path(table, "munge_socket", root),
                   _seconds(timeout, root.key("client_timeout")), auth=auth, key=key,
                   jwks=_optional_path(table, "jwks", root), sack=_sack(table, auth, root),
                   cluster=cluster_name(_optional(table, "cluster"), root.key("cluster")),
                   hash_blocks=_hash_blocks(_optional(table, "communication_parameters", ""),
                                            root.key("communication_parameters")),
                   network=network, subnet=subnet)


def _subnet(table: dict[str, Any], network: str, root: At) -> str:
    value = _optional(table, "subnet")
    if value is None:
        return DEFAULT_SUBNET
    at = root.key("subnet")
    if network in ("host", "loopback"):
        raise at.error(f'a subnet needs network = "namespaces" or "auto", not {network!r}')
    try:
        subnet = ipaddress.IPv4Network(_str(value, at, "an IPv4 subnet like 10.78.0.0/24"))
    except ValueError:
        raise at.expected("an IPv4 subnet like 10.78.0.0/24", value) from None
    if subnet.prefixlen > 30 or subnet.is_loopback or subnet.is_multicast or subnet.is_unspecified:
        raise at.expected("a subnet of at least 4 addresses, not loopback, multicast or 0.0.0.0", value)
    return str(subnet)


def _fits(count: int, subnet: str, at: At) -> None:
    hosts = ipaddress.IPv4Network(subnet).num_addresses - 2
    if count > min(hosts, MAX_CLUSTER_NODES):
        raise at.error(f"{count} nodes: at most {min(hosts, MAX_CLUSTER_NODES)} in subnet {subnet}")


def _hash_blocks(value: Any, at: At) -> frozenset[str]:
    """The body-hash options of a CommunicationParameters list (the others do not concern a callerid)."""
    if not isinstance(value, str):
        raise at.expected("a comma-separated list, as in slurm.conf", value)
    return frozenset(word.strip() for word in value.split(",") if word.strip() in HASH_BLOCKS)


def cluster_name(value: Any, at: At) -> str | None:
    # A label like a node name: it also names a directory (/run/slurm-<ClusterName>/sack.socket).
    if value is None:
        return None
    if not isinstance(value, str) or not NODE_NAME.fullmatch(value):
        raise at.expected("a cluster name (letters, digits, '.', '_', '-'; at most 63)", value)
    return value


def _sack(table: dict[str, Any], auth: str, root: At) -> str | None:
    path = _optional_path(table, "sack", root)
    if path is not None and auth != "slurm":
        raise root.key("sack").error("a sack socket needs auth = \"slurm\"")
    return path


def job_from_dict(data: dict[str, Any], where: str = "job") -> Job:
    """A Job from the keys a scenario's [[jobs]] table takes."""
    return _job(data, At(where))


# --- where a value sits, and what was wrong with it ---------------------------------------------------------


@dataclass(frozen=True)
class At:
    """The file (or "scenario", "job") and the field's path in it, like jobs[1].job_id."""

    where: str
    path: str = ""

    def key(self, name: object) -> At:
        return At(self.where, f"{self.path}.{name}" if self.path else str(name))

    def item(self, index: int) -> At:
        return At(self.where, f"{self.path}[{index}]")

    def error(self, text: str) -> ScenarioError:
        return ScenarioError(f"{self.where}: {self.path}: {text}" if self.path else f"{self.where}: {text}")

    def expected(self, what: str, value: Any) -> ScenarioError:
        return self.error(f"expected {what}, got {shown(value)}")


def shown(value: Any) -> str:
    """A value for an error message: short, and in the file's terms."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and value.bit_length() > 64:  # repr() of a huge int may itself fail
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, datetime.date | datetime.time):
        return f"a {type(value).__name__} ({value.isoformat()})"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_SCENARIO_BYTES of UTF-8 (a FIFO or /dev/zero is an
    error, not a hang or an unbounded read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:  # a NUL byte in the path
        raise ScenarioError(f"{path!r}: {exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ScenarioError(f"{path}: not a regular file")
        data = os.read(fd, MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{path}: larger than {MAX_SCENARIO_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None


# --- checks of one value ---------------------------------------------------------------------------------


def _table(value: Any, at: At, known: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise at.expected("a table", value)
    for key in value:
        if key not in known:
            raise at.key(key).error(f"unknown key {key!r} (known: {', '.join(sorted(known))})")
    return value


def _optional(table: dict[str, Any], key: str, default: Any = None) -> Any:
    """A key's value; a missing key or a JSON null is the default."""
    value = table.get(key)
    return default if value is None else value


def _list(value: Any, at: At) -> list[Any]:
    if not isinstance(value, list):
        raise at.expected("a list", value)
    return value


def _int(value: Any, at: At, low: int, high: int, what: str = "an integer") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise at.expected(f"{what} from {low} to {high}" if what == "an integer"
                          else f"{what} (an integer from {low} to {high})", value)
    return value


def _str(value: Any, at: At, what: str = "a string") -> str:
    if not isinstance(value, str) or not value:
        raise at.expected(f"{what} (not empty)" if value == "" else what, value)
    if "\0" in value:
        raise at.expected(f"{what} without NUL bytes", value)
    return value


def _path(value: Any, at: At, absolute: bool = False) -> str:
    text = _str(value, at, "an absolute path" if absolute else "a path")
    if absolute and not text.startswith("/"):
        raise at.expected("an absolute path", value)
    return text


def _optional_path(table: dict[str, Any], key: str, at: At) -> str | None:
    value = _optional(table, key)
    return None if value is None else _path(value, at.key(key))


def _bool(value: Any, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.expected("true or false", value)
    return value


def _seconds(value: Any, at: At) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT:
        raise at.expected(f"seconds (a number above 0, at most {MAX_TIMEOUT:g})", value)
    return float(value)


def _uid(value: Any, at: At) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(value, at, 0, MAX_UID, "a uid")
    if not isinstance(value, str):
        raise at.expected("a user name or uid", value)
    name = _str(value, at, "a user name or uid")
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        if name.isascii() and name.isdigit() and int(name) <= MAX_UID:
            return int(name)
        raise at.error(f"no such user {name!r}") from None


def _time(value: Any, at: At) -> float:
    moment: float | None = None
    if isinstance(value, datetime.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        moment = aware.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = float(value)
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value).timestamp()
        except (ValueError, OverflowError, OSError):
            moment = None
    if moment is None or not (math.isfinite(moment) and 0 <= moment <= MAX_TIME):
        raise at.expected("a time (epoch seconds from 0, or a date-time)", value)
    return moment


def parse_step(value: Any, where: str | At) -> int:
    at = where if isinstance(where, At) else At(where)
    if isinstance(value, str) and value.lower() in STEP_WORDS:
        return STEP_WORDS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return value
    raise at.expected("a step (extern, batch, interactive or an integer from 0 to 4294967295)", value)


# --- nodes and jobs --------------------------------------------------------------------------------------


def _nodes(value: Any, at: At, network: str = "host") -> list[NodeSpec]:
    if value is None or value == []:
        return [NodeSpec("node1", port=0)]  # nothing configured: never a real slurmd's port
    nodes: list[NodeSpec] = []
    for i, raw in enumerate(_list(value, at)):
        if network != "host" and isinstance(raw, dict):
            for key, what in ASSIGNED.items():
                if key in raw:
                    raise at.item(i).key(key).error(f"with network = {network!r} the nodes' {what} are assigned")
        node = node_from_dict(raw, at.item(i))
        if any(n.name == node.name for n in nodes):
            raise at.item(i).key("name").error(f"node {node.name!r} appears twice")
        other = clashing_node(nodes, node) if network == "host" else None
        if other is not None:
            raise at.item(i).key("address").error(
                f"{node.address} port {node.port or '0 (shared)'} is {other.name}'s already")
        nodes.append(node)
    return nodes


def clashing_node(nodes: list[NodeSpec], node: NodeSpec) -> NodeSpec | None:
    """The node of `nodes` that listens where `node` would (same namespace, port and address, or either
    on a wildcard address); port 0 is the one port all such nodes share."""
    for other in nodes:
        if other.netns != node.netns or other.port != node.port:
            continue
        mine, theirs = ipaddress.ip_address(node.address), ipaddress.ip_address(other.address)
        if mine == theirs or (mine.version == theirs.version and (mine.is_unspecified or theirs.is_unspecified)):
            return other
    return None


def node_from_dict(data: Any, at: At) -> NodeSpec:
    table = _table(data, at, NODE_KEYS)
    if "name" not in table:
        raise at.key("name").error("missing")
    name = node_name(table["name"], at.key("name"))
    address = ip_address(_optional(table, "address", "127.0.0.1"), at.key("address"))
    port = _int(_optional(table, "port", DEFAULT_SLURMD_PORT), at.key("port"), 0, 65535, "a port")
    netns = _optional(table, "netns")
    return NodeSpec(name, address, port, None if netns is None else _path(netns, at.key("netns")))


def node_name(value: Any, at: At) -> str:
    if not isinstance(value, str) or not NODE_NAME.fullmatch(value):
        raise at.expected("a node name (letters, digits, '.', '_', '-'; at most 63)", value)
    return value


def ip_address(value: Any, at: At) -> str:
    text = _str(value, at, "an IP address")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise at.expected("an IP address", value) from None
    return text


def _ids(value: Any, at: At, low: int, high: int, what: str) -> list[int]:
    return [_int(v, at.item(i), low, high, what) for i, v in enumerate(_list(value, at))]


def _steps(value: Any, at: At) -> tuple[int, ...]:
    steps: list[int] = []
    for i, raw in enumerate(_list(value, at)):
        step = parse_step(raw, at.item(i))
        if step in steps:
            raise at.item(i).error(f"step {raw!r} appears twice")
        steps.append(step)
    if not steps:
        raise at.expected("at least one step", value)
    return tuple(steps)


def _job(data: Any, at: At) -> Job:
    table = _table(data, at, JOB_KEYS)
    if "job_id" not in table:
        raise at.key("job_id").error("missing")
    job_id = _int(table["job_id"], at.key("job_id"), 1, MAX_JOB_ID, "a job id")
    if "user" not in table:
        raise at.key("user").error("missing")
    nodes = _optional(table, "nodes")
    adopt = _optional(table, "adopt_cgroup")
    start = _optional(table, "start_time")
    return Job(
        job_id=job_id,
        uid=_uid(table["user"], at.key("user")),
        start_time=time.time() if start is None else _time(start, at.key("start_time")),
        nodes=None if nodes is None else tuple(node_name(n, at.key("nodes").item(i))
                                               for i, n in enumerate(_list(nodes, at.key("nodes")))),
        steps=_steps(_optional(table, "steps", ["extern", "batch"]), at.key("steps")),
        pids=set(_ids(_optional(table, "pids", []), at.key("pids"), 1, MAX_PID, "a pid")),
        trees=set(_ids(_optional(table, "trees", []), at.key("trees"), 1, MAX_PID, "a pid")),
        cgroups=tuple(_path(c, at.key("cgroups").item(i), absolute=True)
                      for i, c in enumerate(_list(_optional(table, "cgroups", []), at.key("cgroups")))),
        environ=_bool(_optional(table, "environ", False), at.key("environ")),
        adopt_cgroup=None if adopt is None else _path(adopt, at.key("adopt_cgroup"), absolute=True),
        x11=_x11(_optional(table, "x11"), at.key("x11")),
        namespaces=_namespaces(_optional(table, "namespaces", {}), at.key("namespaces")),
    )


def _x11(value: Any, at: At) -> X11 | None:
    if value is None:
        return None
    table = _table(value, at, X11_KEYS)
    if "display" not in table:
        raise at.key("display").error("missing")
    display = _int(table["display"], at.key("display"), 0, MAX_DISPLAY, "a display number")
    xauthority = _optional(table, "xauthority")
    if xauthority is not None:
        xauthority = _path(xauthority, at.key("xauthority"), absolute=True)
        try:
            size = len(xauthority.encode())
        except UnicodeEncodeError:  # a lone surrogate from JSON
            raise at.key("xauthority").expected("a path in UTF-8", xauthority) from None
        if size > MAX_XAUTHORITY_BYTES:
            raise at.key("xauthority").expected(f"a path of at most {MAX_XAUTHORITY_BYTES} bytes", xauthority)
    return X11(display, xauthority)


def _namespaces(value: Any, at: At) -> tuple[tuple[int, str], ...]:
    table = _table(value, at, set(NAMESPACE_TYPES))
    return tuple((NAMESPACE_TYPES[kind], _path(path, at.key(kind), absolute=True)) for kind, path in table.items())
