"""The slurm.conf model: SlurmConf (top-level keys, the node table, the record lines), its typed keys
declared once in a table, and where slurm.conf is found (load(), find_conf()).

The file syntax (lines, comments, continuations, Include, ``Key=Value`` tokens, and the limits on what
is read) is slurmproto.confsyntax's; this module gives the entries it yields their meaning, as Slurm's
read_config.c does (22.05 to 26.05):

* Keys are case-insensitive and the last value wins; unknown keys are kept (not rejected as Slurm would):
  a newer slurm.conf must not break logins.
* Slurm allows one ``Key=Value`` per line outside records; several are accepted here (a superset: every
  line Slurm accepts means the same here).
* A ``NodeName=`` / ``PartitionName=`` / ... key starts a record that owns the rest of its line.
* Each typed key (SlurmConf's TypedKey attributes: spelling, kind, default) is checked where it is read,
  so a bad value is an error with its file:line; an empty value means the default.

Whatever the files hold, parsing raises only ConfError, in time and memory bounded by confsyntax's limits
and those below (Slurm caps only its node table, MAX_SLURM_NODES, from 24.11).
This module is imported on the per-login path of pam_slurm_adopt, so it imports only os, typing and
collections.abc (and its siblings); pathlib and pwd are imported when first needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, overload

from slurmproto.confsyntax import (
    MAX_CONF_FILES,
    MAX_FILE_BYTES,
    MAX_INCLUDE_DEPTH,
    MAX_TOTAL_BYTES,
    ConfError,
    Entry,
    read_file,
    read_text,
)
from slurmproto.hostlist import expand_hostlist, hostlist_items, hostlist_size

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = [
    "CONFIGLESS_CONF", "DEFAULT_CONF", "DEFAULT_SEARCH_PATHS", "MAX_CONF_FILES", "MAX_FILE_BYTES",
    "MAX_HOSTLIST_NAMES", "MAX_INCLUDE_DEPTH", "MAX_NODE_DEFAULT_KEYS", "MAX_NODES", "MAX_TOTAL_BYTES",
    "TYPED_KEYS", "ConfError", "ConfNotFound", "KeyValues", "NodeConf", "SlurmConf", "TypedKey", "find_conf",
    "load", "parse_file", "parse_text",
]

DEFAULT_CONF = "/etc/slurm/slurm.conf"
CONFIGLESS_CONF = "/run/slurm/conf/slurm.conf"
"""Where slurmd keeps the configuration it fetched from slurmctld in configless mode."""
DEFAULT_SEARCH_PATHS: tuple[str, ...] = (DEFAULT_CONF, CONFIGLESS_CONF)

MAX_NODES = 65536
"""Nodes in one configuration: Slurm's own limit (MAX_SLURM_NODES, enforced from 24.11)."""
MAX_HOSTLIST_NAMES = 4 * MAX_NODES
"""Names all hostlists of one configuration may expand to: one NodeName, NodeHostname, NodeAddr and Port
for each node Slurm allows."""
MAX_NODE_DEFAULT_KEYS = 256
"""Distinct keys the NodeName=DEFAULT lines may set together (Slurm knows about 45 node keys)."""

# Keys that start a record owning the rest of the line, by lowercased name -> canonical spelling.
_RECORD_KEYS = {
    "nodename": "NodeName",
    "partitionname": "PartitionName",
    "nodeset": "NodeSet",
    "downnodes": "DownNodes",
    "frontendname": "FrontendName",
}

_INFINITE16 = 0xFFFF
_MAX_BRACKETS = 16
_T = TypeVar("_T")


class ConfNotFound(ConfError):
    """No slurm.conf was named and none exists where Slurm looks."""


class KeyValues(Mapping[str, str]):
    """A read-only mapping with case-insensitive keys that remembers how each key was spelled.

    Read-only so that all nodes of one NodeName line can share one instance (a hostlist may expand to
    thousands of nodes, and copying a mapping per node would dominate parsing time). `base` holds keys
    that the items override (NodeName=DEFAULT's, shared by every node line instead of copied into each).
    """

    __slots__ = ("_base", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = (), base: KeyValues | None = None) -> None:
        # lowercased key -> (key as written, value); a later key overrides an earlier one.
        self._items: dict[str, tuple[str, str]] = {k.lower(): (k, v) for k, v in items}
        self._base = base

    def _merged(self) -> dict[str, tuple[str, str]]:
        if self._base is None:
            return self._items
        merged = dict(self._base._merged())  # base order first, overridden keys keep their place
        merged.update(self._items)
        return merged

    def __getitem__(self, key: str) -> str:
        found = self._items.get(key.lower())
        if found is not None:
            return found[1]
        if self._base is None:
            raise KeyError(key)
        return self._base[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key.lower() in self._items or (self._base is not None and key in self._base))

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._merged().values())

    def __len__(self) -> int:
        return len(self._merged())

    def __repr__(self) -> str:
        return f"KeyValues({dict(self._merged().values())!r})"


class NodeConf(NamedTuple):
    """One node of slurm.conf after hostlist expansion and NodeName=DEFAULT merging."""

    name: str
    addr: str
    """NodeAddr; defaults to the hostname."""
    hostname: str
    """NodeHostname; defaults to the node name."""
    port: int | None
    """Port of this node's slurmd, None when slurm.conf sets none (then SlurmdPort applies)."""
    options: KeyValues
    """The other keys of the node's line and of NodeName=DEFAULT (shared by nodes of the same line)."""


# --- the kinds of typed keys: (spelling, value) -> value, ValueError with the message if invalid --------


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


def _count(key: str, value: str) -> int:
    """An unsigned number (strtoul base 0) up to 2**31 - 1."""
    try:
        number = _to_uint(value)
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not a number") from None
    if number > 0x7FFFFFFF:
        raise ValueError(f"{key}: {value!r} is out of range")
    return number


def _port(key: str, value: str) -> int:
    """A TCP port, 1 to 65535."""
    number = _count(key, value)
    if not 0 < number <= 0xFFFF:
        raise ValueError(f"{key}: {value!r} is not a port number (1-65535)")
    return number


def _uint16(key: str, value: str) -> int:
    """A 16-bit count; Slurm's INFINITE and UNLIMITED are 65535."""
    if value.upper() in ("INFINITE", "UNLIMITED"):
        return _INFINITE16
    number = _count(key, value)
    if number > 0xFFFF:
        raise ValueError(f"{key}: {value!r} is greater than 65535")
    return number


def _text(key: str, value: str) -> str:
    """Any text."""
    return value


def _auth_info(key: str, value: str) -> str:
    """Comma-separated ``name=value`` options (or, the legacy form, a munged socket path); a ``ttl``
    must be a number."""
    ttl = _auth_option(value, "ttl") if "=" in value else None
    if ttl is not None:
        _count(f"{key} ttl", ttl)
    return value


class TypedKey(Generic[_T]):
    """A top-level key with a kind and a default, and the SlurmConf attribute that reads it.

    `kind` turns the text into the value (ValueError with the message where it is invalid); parsing
    checks every value of the key with it, so reading the attribute does not fail on a parsed file.
    An unset or empty key gives `default`.
    """

    def __init__(self, spelling: str, kind: Callable[[str, str], _T], default: _T, doc: str = "") -> None:
        self.spelling = spelling
        self.kind = kind
        self.default = default
        self.__doc__ = f"{spelling}: {doc or kind.__doc__ or ''} Default: {default!r}."

    def check(self, value: str, path: str, lineno: int) -> None:
        """ConfError (at file:line) unless `value` is of this key's kind."""
        try:
            self.kind(self.spelling, value)
        except ValueError as e:
            raise ConfError(str(e), path, lineno) from None

    @overload
    def __get__(self, conf: None, owner: type[SlurmConf]) -> TypedKey[_T]: ...

    @overload
    def __get__(self, conf: SlurmConf, owner: type[SlurmConf]) -> _T: ...

    def __get__(self, conf: SlurmConf | None, owner: type[SlurmConf]) -> TypedKey[_T] | _T:
        if conf is None:
            return self
        value = conf.get(self.spelling)
        if not value:
            return self.default
        try:
            return self.kind(self.spelling, value)
        except ValueError as e:  # only a SlurmConf built by hand from unchecked values gets here
            raise ConfError(str(e), conf.filename) from None


class SlurmConf:
    """The parsed contents of one slurm.conf and the files it includes (see parse_file() and load())."""

    # The typed keys: each one's spelling, kind and default, in one place (TYPED_KEYS lists them).
    slurmd_port = TypedKey("SlurmdPort", _port, 6818)
    slurmd_spool_dir = TypedKey("SlurmdSpoolDir", _text, "/var/spool/slurmd",
                                "as written (may contain %h and %n; see spool_dir()).")
    auth_type = TypedKey("AuthType", _text, "auth/munge")
    auth_info: TypedKey[str | None] = TypedKey("AuthInfo", _auth_info, None)
    message_timeout = TypedKey("MessageTimeout", _uint16, 10)
    tcp_timeout = TypedKey("TCPTimeout", _uint16, 2)
    slurm_user = TypedKey("SlurmUser", _text, "root")
    cluster_name: TypedKey[str | None] = TypedKey("ClusterName", _text, None)
    slurmd_user = TypedKey("SlurmdUser", _text, "root")

    def __init__(self, path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *,
                 values: Mapping[str, str] | None = None, nodes: dict[str, NodeConf] | None = None,
                 records: dict[str, list[KeyValues]] | None = None, sources: tuple[str, ...] = ()) -> None:
        """`values`: the top-level keys (names case-insensitive), checked already (see TYPED_KEYS);
        `nodes` and `records` are kept as given (not copied)."""
        self._path = os.fspath(path)
        self.sources = sources
        """The files lines came from (slurm.conf and what it includes): what to watch for changes."""
        self.env = env
        """The environment guess_nodename() reads ($SLURMD_NODENAME); None: the process's."""
        self._values = {key.lower(): value for key, value in (values or {}).items()}
        self.nodes: dict[str, NodeConf] = {} if nodes is None else nodes
        """Every node (expanded, in file order), by NodeName."""
        self.records: dict[str, list[KeyValues]] = {} if records is None else records
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

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of a top-level key (case-insensitive; the last one wins); record keys are not here."""
        return self._values.get(key.lower(), default)

    # --- what the typed keys imply ------------------------------------------------------------------

    @property
    def munge_socket(self) -> str | None:
        """The munged socket from AuthInfo (``socket=PATH``, or the whole value in the legacy form)."""
        info = self.auth_info
        if not info:
            return None
        if "=" not in info:
            return info  # the legacy form: AuthInfo is just the socket path
        return _auth_option(info, "socket")

    @property
    def auth_ttl(self) -> int | None:
        """The credential lifetime from AuthInfo ``ttl=SECONDS``; None leaves munged's default."""
        info = self.auth_info
        ttl = _auth_option(info, "ttl") if info else None
        return None if ttl is None else _count("AuthInfo ttl", ttl)

    def has_communication_parameter(self, name: str) -> bool:
        """Whether CommunicationParameters lists `name` (case-insensitive; ``name=value`` items count)."""
        name = name.lower()
        items = (self.get("CommunicationParameters") or "").split(",")
        return any(item.strip().lower().partition("=")[0] == name for item in items)

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

        $SLURMD_NODENAME if set (in `env`, else in the environment load() was given, else in the process's);
        else the first node whose NodeHostname, then NodeName, is the short hostname; else the full
        hostname; else "localhost"; else None. No DNS lookups.
        """
        environ = env if env is not None else self.env if self.env is not None else os.environ
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


TYPED_KEYS: dict[str, TypedKey[Any]] = {
    key.spelling.lower(): key for key in vars(SlurmConf).values() if isinstance(key, TypedKey)}
"""SlurmConf's typed keys by lowercased spelling: what parsing checks."""


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
    """find_conf() and parse_file(). With an `env` (``{}`` for none at all), neither finding the file nor
    the returned conf's guess_nodename() and spool_dir() read the process environment."""
    return parse_file(_find(path, env, search), env=env)


# --- building a SlurmConf from entries ----------------------------------------------------------------


def parse_file(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> SlurmConf:
    """Parse slurm.conf at `path` and the files it includes; `env` is kept as SlurmConf.env."""
    builder = _Builder()
    builder.add(read_file(os.fspath(path), builder.cluster_name))
    return builder.build(path, env)


def parse_text(text: str, path: str | os.PathLike[str] = "<string>", *,
               env: Mapping[str, str] | None = None) -> SlurmConf:
    """Parse slurm.conf contents; `path` names it in errors and anchors relative Includes."""
    builder = _Builder()
    builder.add(read_text(text, os.fspath(path), builder.cluster_name))
    return builder.build(path, env)


class _Builder:
    """The keys, nodes and records of the entries so far, within the node limits."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.nodes: dict[str, NodeConf] = {}
        self.records: dict[str, list[KeyValues]] = {}
        # NodeName=DEFAULT keys so far; without Port for the nodes' options (their Port is a field).
        self.node_defaults = KeyValues()
        self.node_default_options = KeyValues()
        self.names_left = MAX_HOSTLIST_NAMES
        self.sources: dict[str, None] = {}

    def cluster_name(self) -> str | None:
        """ClusterName so far (for Include %c)."""
        return self.values.get("clustername")

    def build(self, path: str | os.PathLike[str], env: Mapping[str, str] | None) -> SlurmConf:
        return SlurmConf(path, env, values=self.values, nodes=self.nodes, records=self.records,
                         sources=(os.fspath(path), *(p for p in self.sources if p != os.fspath(path))))

    def add(self, entries: Iterable[Entry]) -> None:
        for path, lineno, pairs in entries:
            self.sources.setdefault(path)
            for index, (key, value) in enumerate(pairs):
                lkey = key.lower()
                kind = _RECORD_KEYS.get(lkey)
                if kind is not None:
                    # As in Slurm, a record key owns the rest of the line.
                    self.record(kind, pairs[index:], path, lineno)
                    break
                typed = TYPED_KEYS.get(lkey)
                if typed is not None:
                    typed.check(value, path, lineno)
                self.values[lkey] = value

    def record(self, kind: str, pairs: list[tuple[str, str]], path: str, lineno: int) -> None:
        options = KeyValues(pairs)
        self.records.setdefault(kind, []).append(options)
        if kind == "NodeName":
            self.node_line(pairs, options, path, lineno)

    def node_default_line(self, pairs: list[tuple[str, str]], line: KeyValues, path: str, lineno: int) -> None:
        for key in ("NodeHostname", "NodeAddr", "BcastAddr"):
            if key in line:
                raise ConfError(f"{key} not allowed with NodeName=DEFAULT", path, lineno)
        if (port := line.get("Port")) is not None:
            self.ports(port, path, lineno)
        # Later DEFAULT lines add to (and override) the earlier ones.
        defaults = KeyValues([*self.node_defaults.items(), *pairs[1:]])
        if len(defaults) > MAX_NODE_DEFAULT_KEYS:
            raise ConfError(f"NodeName=DEFAULT lines set more than {MAX_NODE_DEFAULT_KEYS} keys", path, lineno)
        self.node_defaults = defaults
        self.node_default_options = KeyValues((k, v) for k, v in defaults.items() if k.lower() != "port")

    def node_line(self, pairs: list[tuple[str, str]], line: KeyValues, path: str, lineno: int) -> None:
        names_expr = pairs[0][1]
        if names_expr.lower() == "default":
            self.node_default_line(pairs, line, path, lineno)
            return
        merged = KeyValues(pairs[1:], self.node_defaults)
        table = self.nodes
        if hostlist_size(names_expr) > MAX_NODES - len(table):
            raise ConfError(f"NodeName: {names_expr!r}: more than {MAX_NODES} nodes in one configuration "
                            "(Slurm's limit)", path, lineno)
        names = self.hostlist(names_expr, "NodeName", path, lineno)
        hostname_expr = merged.get("NodeHostname")
        hostnames = names if hostname_expr is None else self.hostlist(hostname_expr, "NodeHostname", path, lineno)
        addr_expr = merged.get("NodeAddr")
        addrs = hostnames if addr_expr is None else self.hostlist(addr_expr, "NodeAddr", path, lineno)
        if len(hostnames) < len(names):
            raise ConfError(f"at least as many NodeHostname are required as NodeName "
                            f"({len(hostnames)} < {len(names)})", path, lineno)
        if len(addrs) < len(names):
            raise ConfError(f"at least as many NodeAddr are required as NodeName "
                            f"({len(addrs)} < {len(names)})", path, lineno)
        port_expr = merged.get("Port")
        ports = self.ports(port_expr, path, lineno) if port_expr is not None else [None]
        if len(ports) not in (1, len(names)):
            raise ConfError(f"Port count must be 1 or that of NodeName ({len(ports)} != {len(names)})",
                            path, lineno)
        options = KeyValues(((k, v) for k, v in pairs[1:] if k.lower() not in ("nodehostname", "nodeaddr", "port")),
                          self.node_default_options)
        for i, name in enumerate(names):
            if name in table:
                raise ConfError(f"duplicated NodeName {name}", path, lineno)
            table[name] = NodeConf(name, addrs[i], hostnames[i], ports[0] if len(ports) == 1 else ports[i],
                                   options)

    def ports(self, expr: str, path: str, lineno: int) -> list[int | None]:
        """A node Port value: one port, or a hostlist-style list of them (one per node)."""
        return [_node_port(p, path, lineno) for p in self.hostlist(expr, "Port", path, lineno)]

    def hostlist(self, expr: str, key: str, path: str, lineno: int) -> list[str]:
        """Expand a hostlist within the budget of names for the whole configuration (checked before
        expanding: extra NodeAddr names are ignored, yet a line could ask for 65,536 of them each time)."""
        if hostlist_size(expr) > self.names_left:
            raise ConfError(f"{key}: {expr!r}: the hostlists of one configuration expand to more than "
                            f"{MAX_HOSTLIST_NAMES} names", path, lineno)
        names = _hostlist(expr, key, path, lineno)
        self.names_left -= len(names)
        if self.names_left < 0:  # where the estimate missed
            raise ConfError(f"{key}: {expr!r}: the hostlists of one configuration expand to more than "
                            f"{MAX_HOSTLIST_NAMES} names", path, lineno)
        return names


def _node_port(value: str, path: str, lineno: int) -> int:
    try:
        return _port("Port", value)
    except ValueError as e:
        raise ConfError(str(e), path, lineno) from None


def _auth_option(info: str, name: str) -> str | None:
    """The value of the first ``name=value`` item of AuthInfo (case-insensitive name); None if unset."""
    for item in info.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip().lower() == name:
            return value or None
    return None


def _hostlist(expr: str, key: str, path: str, lineno: int) -> list[str]:
    # No real name has more than a few bracket groups; refusing more bounds the work on one name.
    if expr.count("[") > _MAX_BRACKETS and any(i.count("[") > _MAX_BRACKETS for i in hostlist_items(expr)):
        raise ConfError(f"{key}: bad hostlist {expr!r}: a name with more than {_MAX_BRACKETS} bracket groups",
                        path, lineno)
    try:
        names = expand_hostlist(expr)
    except ValueError as e:
        raise ConfError(f"{key}: bad hostlist {expr!r}: {e}", path, lineno) from None
    if not names:
        raise ConfError(f"{key}: empty", path, lineno)
    return names
