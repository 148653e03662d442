"""A reader for slurm.conf: the keys this package needs, the node table, and Slurm's file syntax.

Written from the behaviour of Slurm's read_config.c and parse_config.c (22.05 to 26.05):

* ``Key=Value`` pairs, several to a line, keys case-insensitive, values either ``"quoted"`` (no escapes)
  or a run of non-whitespace; whitespace around ``=`` is allowed, as in Slurm.
* ``#`` starts a comment unless an odd number of backslashes precede it; a backslash then escapes the
  next character (``\\#`` is ``#``, ``\\\\`` is ``\\``); an odd run of backslashes at the end of a line
  continues it onto the next.
* ``Include <path>`` parses another file in place (``%c`` is the lowercased ClusterName, relative paths
  are relative to the directory of the including file, wildcards are globbed in sorted order).
* Slurm allows one ``Key=Value`` per line outside records; several are accepted here (a superset: every
  line Slurm accepts means the same here).
* A ``NodeName=`` / ``PartitionName=`` / ... key starts a record that owns the rest of its line.

This module is imported on the per-login path of pam_slurm_adopt, so it imports only os, typing and
collections.abc; pathlib, glob and pwd are imported when first needed.
Unknown keys are kept (not rejected as Slurm would): a newer slurm.conf must not break logins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from slurmproto.errors import SlurmError
from slurmproto.hostlist import expand_hostlist

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = [
    "CONFIGLESS_CONF", "DEFAULT_CONF", "DEFAULT_SEARCH_PATHS", "MAX_INCLUDE_DEPTH", "ConfError", "ConfNotFound",
    "NodeConf",
    "Options", "SlurmConf", "expand_hostlist", "find_conf", "load", "parse_file", "parse_text",
]

DEFAULT_CONF = "/etc/slurm/slurm.conf"
CONFIGLESS_CONF = "/run/slurm/conf/slurm.conf"
"""Where slurmd keeps the configuration it fetched from slurmctld in configless mode."""
DEFAULT_SEARCH_PATHS: tuple[str, ...] = (DEFAULT_CONF, CONFIGLESS_CONF)

MAX_INCLUDE_DEPTH = 16
"""Include nesting beyond this is taken for an Include loop."""

DEFAULT_SLURMD_PORT = 6818
DEFAULT_SLURMD_SPOOL_DIR = "/var/spool/slurmd"

# Keys that start a record owning the rest of the line, by lowercased name -> canonical spelling.
_RECORD_KEYS = {
    "nodename": "NodeName",
    "partitionname": "PartitionName",
    "nodeset": "NodeSet",
    "downnodes": "DownNodes",
    "frontendname": "FrontendName",
}

# How _checked_uint() bounds a number.
_PORT, _UINT16, _COUNT = "port", "uint16", "count"

# Numeric keys checked while parsing (so errors carry file:line): lowercased name -> (spelling, kind).
_UINT_KEYS = {
    "slurmdport": ("SlurmdPort", _PORT),
    "messagetimeout": ("MessageTimeout", _UINT16),
    "tcptimeout": ("TCPTimeout", _UINT16),
}

_INFINITE16 = 0xFFFF
_WILDCARDS = frozenset("*?[")


class ConfError(SlurmError):
    """slurm.conf is missing, unreadable or malformed; the message starts with ``file:line:`` when known."""

    def __init__(self, message: str, path: str | None = None, lineno: int | None = None) -> None:
        if path is not None and lineno is not None:
            message = f"{path}:{lineno}: {message}"
        elif path is not None:
            message = f"{path}: {message}"
        super().__init__(message)
        self.path = path
        self.lineno = lineno


class ConfNotFound(ConfError):
    """No slurm.conf was named and none exists where Slurm looks."""


class Options(Mapping[str, str]):
    """A read-only mapping with case-insensitive keys that remembers how each key was spelled.

    Read-only so that all nodes of one NodeName line can share one instance (a hostlist may expand to
    thousands of nodes, and copying a mapping per node would dominate parsing time).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # lowercased key -> (key as written, value); a later key overrides an earlier one.
        self._items: dict[str, tuple[str, str]] = {k.lower(): (k, v) for k, v in items}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Options({dict(self._items.values())!r})"


class NodeConf(NamedTuple):
    """One node of slurm.conf after hostlist expansion and NodeName=DEFAULT merging."""

    name: str
    addr: str
    """NodeAddr; defaults to the hostname."""
    hostname: str
    """NodeHostname; defaults to the node name."""
    port: int | None
    """Port of this node's slurmd, None when slurm.conf sets none (then SlurmdPort applies)."""
    options: Options
    """The other keys of the node's line and of NodeName=DEFAULT (shared by nodes of the same line)."""


class SlurmConf:
    """The parsed contents of one slurm.conf and the files it includes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        # lowercased key -> every value in file order (SlurmctldHost may repeat; otherwise the last wins).
        self._values: dict[str, list[str]] = {}
        self._uints: dict[str, int] = {}
        self.nodes: dict[str, NodeConf] = {}
        """Every node (expanded, in file order), by NodeName."""
        self.records: dict[str, list[Options]] = {}
        """Every record line (NodeName, PartitionName, NodeSet, DownNodes, FrontendName) raw, by kind;
        DEFAULT lines included."""

    def __repr__(self) -> str:
        return f"<SlurmConf {self._path} ({len(self._values)} keys, {len(self.nodes)} nodes)>"

    @property
    def filename(self) -> str:
        """The file's path as given (a str: no pathlib import)."""
        return self._path

    @property
    def path(self) -> Path:
        from pathlib import Path  # pathlib (and the urllib.parse it pulls in) only when asked

        return Path(self._path)

    # --- raw access ---------------------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of a top-level key (case-insensitive; the last one wins); record keys are not here."""
        values = self._values.get(key.lower())
        return values[-1] if values else default

    def getall(self, key: str) -> list[str]:
        """Every value a top-level key was given, in file order."""
        return list(self._values.get(key.lower(), ()))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._values

    @property
    def partitions(self) -> list[Options]:
        """The PartitionName lines, raw (PartitionName=DEFAULT lines included, not merged)."""
        return self.records.get("PartitionName", [])

    # --- typed keys ---------------------------------------------------------------------------------

    @property
    def slurmd_port(self) -> int:
        return self._uints.get("slurmdport", DEFAULT_SLURMD_PORT)

    @property
    def slurmd_spool_dir(self) -> str:
        """SlurmdSpoolDir as written (may contain %h and %n; see spool_dir())."""
        return self.get("SlurmdSpoolDir") or DEFAULT_SLURMD_SPOOL_DIR

    @property
    def auth_type(self) -> str:
        return self.get("AuthType") or "auth/munge"

    @property
    def auth_info(self) -> str | None:
        return self.get("AuthInfo")

    @property
    def auth_alt_types(self) -> list[str]:
        return _comma_list(self.get("AuthAltTypes"))

    @property
    def munge_socket(self) -> str | None:
        """The munged socket from AuthInfo (``socket=PATH``, or the whole value in the legacy form)."""
        return _munge_socket(self.auth_info)

    @property
    def auth_ttl(self) -> int | None:
        """The credential lifetime from AuthInfo ``ttl=SECONDS``; None leaves munged's default."""
        info = self.auth_info
        if not info:
            return None
        ttl = _auth_option(info, "ttl")
        return None if ttl is None else _to_uint(ttl)

    @property
    def message_timeout(self) -> int:
        return self._uints.get("messagetimeout", 10)

    @property
    def tcp_timeout(self) -> int:
        return self._uints.get("tcptimeout", 2)

    @property
    def slurm_user(self) -> str:
        return self.get("SlurmUser") or "root"

    @property
    def slurmd_user(self) -> str:
        return self.get("SlurmdUser") or "root"

    @property
    def cluster_name(self) -> str | None:
        """ClusterName, lowercased as Slurm does."""
        name = self.get("ClusterName")
        return name.lower() if name else None

    @property
    def communication_parameters(self) -> list[str]:
        return _comma_list(self.get("CommunicationParameters"))

    def has_communication_parameter(self, name: str) -> bool:
        """Whether CommunicationParameters lists `name` (case-insensitive; ``name=value`` items count)."""
        name = name.lower()
        return any(p.lower().partition("=")[0] == name for p in self.communication_parameters)

    @property
    def hash_plugin(self) -> str:
        return self.get("HashPlugin") or "hash/k12"

    @property
    def tls_type(self) -> str:
        return self.get("TLSType") or "tls/none"

    @property
    def plugin_dir(self) -> str | None:
        return self.get("PluginDir")

    @property
    def slurmctld_hosts(self) -> list[tuple[str, str]]:
        """(hostname, address) of each SlurmctldHost in order (``host(addr)`` form; the address defaults
        to the hostname), falling back to the pre-SlurmctldHost ControlMachine/ControlAddr."""
        hosts = []
        for value in self._values.get("slurmctldhost", ()):
            name, sep, rest = value.partition("(")
            hosts.append((name, rest.rstrip(")") if sep else name))
        if not hosts and (machine := self.get("ControlMachine")):
            hosts.append((machine, self.get("ControlAddr") or machine))
        return hosts

    def slurm_uid(self) -> int:
        """The uid of SlurmUser."""
        return self._uid("SlurmUser", self.slurm_user)

    def slurmd_uid(self) -> int:
        """The uid of SlurmdUser."""
        return self._uid("SlurmdUser", self.slurmd_user)

    def _uid(self, key: str, user: str) -> int:
        import pwd

        # Like Slurm's uid_from_string: a user name first, then a number.
        try:
            return pwd.getpwnam(user).pw_uid
        except KeyError:
            if user.isascii() and user.isdigit():
                return int(user)
        raise ConfError(f"{key} {user!r}: no such user", self._path)

    # --- nodes --------------------------------------------------------------------------------------

    def node_port(self, nodename: str) -> int:
        """The port of `nodename`'s slurmd: its Port, else SlurmdPort."""
        node = self.nodes.get(nodename)
        return node.port if node is not None and node.port is not None else self.slurmd_port

    def spool_dir(self, nodename: str | None = None) -> str:
        """SlurmdSpoolDir for `nodename`: the first %h becomes its NodeHostname, then the first %n its name.

        Without a node name, this host's is guessed (guess_nodename()); ConfError if that fails and the
        directory depends on it. A name slurm.conf does not list is its own hostname.
        """
        template = self.slurmd_spool_dir
        if "%h" not in template and "%n" not in template:
            return template
        if nodename is None:
            nodename = self.guess_nodename()
            if nodename is None:
                raise ConfError(
                    f"SlurmdSpoolDir {template!r} depends on the node name, and no NodeName matches this "
                    "host (set SLURMD_NODENAME)", self._path)
        node = self.nodes.get(nodename)
        hostname = node.hostname if node is not None else nodename
        # One substitution each, %h first, like Slurm's xstrsubstitute() in slurm_conf_expand_slurmd_path().
        return template.replace("%h", hostname, 1).replace("%n", nodename, 1)

    def guess_nodename(self, hostname: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
        """The NodeName of this host (or of `hostname`), as slurmstepd and pam_slurm_adopt guess it.

        $SLURMD_NODENAME if set; else the first node whose NodeHostname, then NodeName, is the short
        hostname; else the full hostname; else "localhost"; else None. No DNS lookups.
        """
        environ = os.environ if env is None else env
        if name := environ.get("SLURMD_NODENAME"):
            return name
        if hostname is None:
            hostname = os.uname().nodename  # what gethostname() returns, without importing socket
        index = self._hostname_index()  # not cached: nodes is a public, mutable dict
        for candidate in (hostname.partition(".")[0], hostname, "localhost"):
            if (found := index.get(candidate)) is not None:
                return found
        return None

    def _hostname_index(self) -> dict[str, str]:
        """NodeHostname and NodeName -> NodeName; hostnames take precedence, then the first node wins."""
        index: dict[str, str] = {}
        for node in self.nodes.values():
            index.setdefault(node.hostname, node.name)
        for name in self.nodes:
            index.setdefault(name, name)
        return index


# --- finding and loading ------------------------------------------------------------------------------


def _find(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None,
          search: Sequence[str] | None) -> str:
    if search is None:
        search = DEFAULT_SEARCH_PATHS
    if path is not None:
        found = os.fspath(path)
        if not os.path.exists(found):
            raise ConfError("no such file (slurm.conf path given explicitly)", found)
        return found
    environ = os.environ if env is None else env
    if found := environ.get("SLURM_CONF", ""):
        if not os.path.exists(found):
            raise ConfError("no such file (named by $SLURM_CONF)", found)
        return found
    for candidate in search:
        if os.path.exists(candidate):
            return candidate
    raise ConfNotFound(
        "no slurm.conf found: $SLURM_CONF is not set and none of " + ", ".join(search) + " exists "
        "(configless DNS SRV lookup is not supported; pass a path or set SLURM_CONF)")


def find_conf(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None, *,
              search: Sequence[str] | None = None) -> Path:
    """Where slurm.conf is: `path`, else $SLURM_CONF, else the first of `search` that exists.

    `search` defaults to /etc/slurm/slurm.conf, then slurmd's configless cache /run/slurm/conf/slurm.conf.
    An explicit or $SLURM_CONF path that does not exist is an error (no fallback, as in Slurm).
    """
    from pathlib import Path

    return Path(_find(path, env, search))


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None, *,
         search: Sequence[str] | None = None) -> SlurmConf:
    """find_conf() and parse_file()."""
    return parse_file(_find(path, env, search))


def parse_file(path: str | os.PathLike[str]) -> SlurmConf:
    """Parse slurm.conf at `path` and the files it includes."""
    conf = SlurmConf(path)
    _Parser(conf).parse_file(conf._path, 0, None)
    return conf


def parse_text(text: str, path: str | os.PathLike[str] = "<string>") -> SlurmConf:
    """Parse slurm.conf contents; `path` names it in errors and anchors relative Includes."""
    conf = SlurmConf(path)
    _Parser(conf).parse_text(text, conf._path, 0)
    return conf


# --- parsing ------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, conf: SlurmConf) -> None:
        self.conf = conf
        self.node_defaults: list[tuple[str, str]] = []

    def parse_file(self, path: str, depth: int, include_site: tuple[str, int] | None) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            reason = e.strerror or str(e)
            if include_site is None:
                raise ConfError(f"cannot read: {reason}", path) from None
            raise ConfError(f"Include {path}: cannot read: {reason}", *include_site) from None
        # Slurm reads bytes; surrogateescape keeps odd bytes (say, Latin-1 in a comment) from failing.
        self.parse_text(data.decode("utf-8", "surrogateescape"), path, depth)

    def parse_text(self, text: str, path: str, depth: int) -> None:
        lines = text.split("\n")  # not splitlines(): fgets() ends lines at \n only
        count = len(lines)
        i = 0
        while i < count:
            lineno = i + 1
            # Comments go first, line by line; then a trailing odd run of backslashes joins the next line.
            parts = []
            while True:
                physical = _strip_comment(lines[i])
                i += 1
                joined = _continued(physical)
                if joined is None:
                    parts.append(physical)
                    break
                parts.append(joined)
                if i >= count:
                    break
            line = "".join(parts) if len(parts) > 1 else parts[0]
            if "\\" in line:
                line = _strip_escapes(line)
            if not line or line.isspace():
                continue
            self.parse_line(line, path, lineno, depth)

    def parse_line(self, line: str, path: str, lineno: int, depth: int) -> None:
        stripped = line.lstrip()
        if stripped[:7].lower() == "include" and stripped[7:8].isspace():
            self.include(stripped[7:].split(), path, lineno, depth)
            return
        pairs = _fast_pairs(line)
        if pairs is None:
            pairs = _scan_pairs(line, path, lineno)
        for index, (key, value) in enumerate(pairs):
            lkey = key.lower()
            kind = _RECORD_KEYS.get(lkey)
            if kind is not None:
                # As in Slurm, a record key owns the rest of the line.
                self.record(kind, pairs[index:], path, lineno)
                return
            self.set_key(lkey, key, value, path, lineno)

    def set_key(self, lkey: str, key: str, value: str, path: str, lineno: int) -> None:
        typed = _UINT_KEYS.get(lkey)
        if typed is not None:
            spelling, kind = typed
            self.conf._uints[lkey] = _checked_uint(spelling, value, kind, path, lineno)
        elif lkey == "authinfo":
            ttl = _auth_option(value, "ttl") if "=" in value else None
            if ttl is not None:
                _checked_uint("AuthInfo ttl", ttl, _COUNT, path, lineno)
        self.conf._values.setdefault(lkey, []).append(value)

    def include(self, args: list[str], path: str, lineno: int, depth: int) -> None:
        if len(args) != 1:
            raise ConfError("Include takes one path" + (f", got {' '.join(args)!r}" if args else ""),
                            path, lineno)
        spec = args[0]
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise ConfError(f"Include {spec}: nested more than {MAX_INCLUDE_DEPTH} deep (an Include loop?)",
                            path, lineno)
        if "%c" in spec:
            cluster = self.conf.get("ClusterName")
            if not cluster:
                raise ConfError(f"Include {spec}: %c needs ClusterName set before this line", path, lineno)
            spec = spec.replace("%c", cluster.lower())
        site = (path, lineno)
        # Relative to the including file, as Slurm's _add_full_path() does (for the top-level Includes,
        # that is slurm.conf's directory; a nested Include in sub/a.conf resolves in sub/).
        base_dir = os.path.dirname(os.path.abspath(path))
        if _WILDCARDS.isdisjoint(spec):
            self.parse_file(spec if spec.startswith("/") else os.path.join(base_dir, spec), depth + 1, site)
            return
        import glob  # only for wildcard Includes

        # Escape the directory: only the Include argument is a pattern.
        pattern = spec if spec.startswith("/") else os.path.join(glob.escape(base_dir), spec)
        for match in sorted(glob.glob(pattern)):  # sorted like glob(3); matching nothing is fine
            self.parse_file(match, depth + 1, site)

    def record(self, kind: str, pairs: list[tuple[str, str]], path: str, lineno: int) -> None:
        options = Options(pairs)
        self.conf.records.setdefault(kind, []).append(options)
        if kind == "NodeName":
            self.nodes(pairs, options, path, lineno)

    def nodes(self, pairs: list[tuple[str, str]], line: Options, path: str, lineno: int) -> None:
        conf = self.conf
        names_expr = pairs[0][1]
        if names_expr.lower() == "default":
            for key in ("NodeHostname", "NodeAddr", "BcastAddr"):
                if key in line:
                    raise ConfError(f"{key} not allowed with NodeName=DEFAULT", path, lineno)
            if (port := line.get("Port")) is not None:
                _ports(port, path, lineno)
            # Later DEFAULT lines add to (and override) the earlier ones.
            self.node_defaults.extend(pairs[1:])
            return
        merged = Options(self.node_defaults + pairs[1:])
        names = _hostlist(names_expr, "NodeName", path, lineno)
        hostname_expr = merged.get("NodeHostname")
        hostnames = names if hostname_expr is None else _hostlist(hostname_expr, "NodeHostname", path, lineno)
        addr_expr = merged.get("NodeAddr")
        addrs = hostnames if addr_expr is None else _hostlist(addr_expr, "NodeAddr", path, lineno)
        if len(hostnames) < len(names):
            raise ConfError(f"at least as many NodeHostname are required as NodeName "
                            f"({len(hostnames)} < {len(names)})", path, lineno)
        if len(addrs) < len(names):
            raise ConfError(f"at least as many NodeAddr are required as NodeName "
                            f"({len(addrs)} < {len(names)})", path, lineno)
        port_expr = merged.get("Port")
        ports = _ports(port_expr, path, lineno) if port_expr is not None else [None]
        if len(ports) not in (1, len(names)):
            raise ConfError(f"Port count must be 1 or that of NodeName ({len(ports)} != {len(names)})",
                            path, lineno)
        options = Options((k, v) for k, v in self.node_defaults + pairs[1:]
                          if k.lower() not in ("nodehostname", "nodeaddr", "port"))
        table = conf.nodes
        for i, name in enumerate(names):
            if name in table:
                raise ConfError(f"duplicated NodeName {name}", path, lineno)
            table[name] = NodeConf(name, addrs[i], hostnames[i], ports[0] if len(ports) == 1 else ports[i],
                                   options)


# --- line syntax --------------------------------------------------------------------------------------


def _strip_comment(line: str) -> str:
    """`line` up to the first # not escaped by an odd number of backslashes."""
    hash_at = line.find("#")
    while hash_at >= 0:
        backslashes = hash_at - len(line[:hash_at].rstrip("\\"))
        if backslashes % 2 == 0:
            return line[:hash_at]
        hash_at = line.find("#", hash_at + 1)
    return line


def _continued(line: str) -> str | None:
    """`line` without its continuation backslash if it ends (before trailing blanks) in an odd run of
    backslashes, else None."""
    end = line.rstrip()
    if not end.endswith("\\"):
        return None
    run = len(end) - len(end.rstrip("\\"))
    return end[:-1] if run % 2 else None


def _strip_escapes(line: str) -> str:
    """Drop each backslash and keep the character after it literally (a last lone backslash goes)."""
    out = []
    i = 0
    n = len(line)
    while i < n:
        slash = line.find("\\", i)
        if slash < 0:
            out.append(line[i:])
            break
        out.append(line[i:slash])
        out.append(line[slash + 1:slash + 2])
        i = slash + 2
    return "".join(out)


def _is_key(key: str) -> bool:
    """Slurm's key charset: ASCII letters, digits, _ and ."""
    return key.isascii() and key.replace("_", "a").replace(".", "a").isalnum()


def _fast_pairs(line: str) -> list[tuple[str, str]] | None:
    """The pairs of a line made only of plain ``Key=Value`` tokens, else None (then _scan_pairs decides)."""
    if '"' in line:
        return None
    pairs = []
    for token in line.split():
        key, sep, value = token.partition("=")
        if not sep or not value or not _is_key(key):
            return None
        pairs.append((key, value))
    return pairs


def _scan_pairs(line: str, path: str, lineno: int) -> list[tuple[str, str]]:
    """The pairs of a line, by the rules of Slurm's key=value regex; ConfError where it would not match.

    Whitespace may surround ``=``, so ``Key= Value`` is a pair (as in Slurm). An operator before ``=``
    (``Key+=Value``, meant for scontrol update) is accepted and ignored.
    """
    pairs: list[tuple[str, str]] = []
    n = len(line)
    i = 0
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return pairs
        j = i
        while j < n and (line[j] in "_." or (line[j].isascii() and line[j].isalnum())):
            j += 1
        key = line[i:j]
        k = j
        while k < n and line[k].isspace():
            k += 1
        if k + 1 < n and line[k] in "-*+/" and line[k + 1] == "=":
            k += 1
        if not key or k >= n or line[k] != "=":
            token = line[i:].split(None, 1)[0]
            raise ConfError(f"expected Key=Value, found {token!r}", path, lineno)
        k += 1
        while k < n and line[k].isspace():
            k += 1
        if k >= n:
            raise ConfError(f"{key}: missing value", path, lineno)
        if line[k] == '"':
            end = line.find('"', k + 1)
            if end < 0:
                raise ConfError(f"{key}: unterminated quoted value {line[k:]!r}", path, lineno)
            if end + 1 == n or line[end + 1].isspace():
                pairs.append((key, line[k + 1:end]))
                i = end + 1
                continue
            # `Key="a"b`: Slurm's regex then matches the unquoted form, quotes and all.
        i = k
        while i < n and not line[i].isspace():
            i += 1
        pairs.append((key, line[k:i]))


def _to_uint(value: str) -> int:
    """strtoul(value, base 0) as Slurm's parser uses it (0x hex, leading-0 octal); ValueError if invalid."""
    lower = value.lower()
    if lower.startswith("0x"):
        digits, base = lower[2:], 16
    elif len(value) > 1 and value.startswith("0"):
        digits, base = value[1:], 8
    else:
        digits, base = value, 10
    # int() alone would also take signs, blanks, underscores and non-ASCII digits.
    if not (digits.isascii() and digits.isalnum()):
        raise ValueError(value)
    return int(digits, base)


def _checked_uint(key: str, value: str, kind: str, path: str, lineno: int) -> int:
    """An unsigned number: a port (1..65535), a uint16 (Slurm's INFINITE/UNLIMITED is 65535) or a count."""
    if kind == _UINT16 and value.upper() in ("INFINITE", "UNLIMITED"):
        return _INFINITE16
    try:
        number = _to_uint(value)
    except ValueError:
        raise ConfError(f"{key}: {value!r} is not a number", path, lineno) from None
    if kind == _PORT and not 0 < number <= 0xFFFF:
        raise ConfError(f"{key}: {value!r} is not a port number (1-65535)", path, lineno)
    if kind == _UINT16 and number > 0xFFFF:
        raise ConfError(f"{key}: {value!r} is greater than 65535", path, lineno)
    if number > 0x7FFFFFFF:
        raise ConfError(f"{key}: {value!r} is out of range", path, lineno)
    return number


def _ports(expr: str, path: str, lineno: int) -> list[int | None]:
    """A node Port value: one port, or a hostlist-style list of them (one per node)."""
    return [_checked_uint("Port", p, _PORT, path, lineno) for p in _hostlist(expr, "Port", path, lineno)]


def _comma_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def _auth_option(info: str, name: str) -> str | None:
    """The value of the first ``name=value`` item of AuthInfo (case-insensitive name); None if unset."""
    for item in info.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip().lower() == name:
            return value or None
    return None


def _munge_socket(info: str | None) -> str | None:
    if not info:
        return None
    if "=" not in info:
        return info  # the legacy form: AuthInfo is just the socket path
    return _auth_option(info, "socket")


# --- hostlists ----------------------------------------------------------------------------------------


def _hostlist(expr: str, key: str, path: str, lineno: int) -> list[str]:
    try:
        names = expand_hostlist(expr)
    except ValueError as e:
        raise ConfError(f"{key}: bad hostlist {expr!r}: {e}", path, lineno) from None
    if not names:
        raise ConfError(f"{key}: empty", path, lineno)
    return names
