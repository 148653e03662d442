"""A reader for slurm.conf: the keys this package needs, the node table, and Slurm's file syntax.

Written from the behaviour of Slurm's read_config.c and parse_config.c (22.05 to 26.05):

* ``Key=Value`` pairs, several to a line, keys case-insensitive, values either ``"quoted"`` (no escapes)
  or a run of non-whitespace; whitespace around ``=`` is allowed, as in Slurm.
* ``#`` starts a comment unless an odd number of backslashes precede it; a backslash then escapes the
  next character (``\\#`` is ``#``, ``\\\\`` is ``\\``); an odd run of backslashes at the end of a line
  continues it onto the next.
* ``Include <path>`` parses another file in place (``%c`` is the lowercased ClusterName, relative paths
  are relative to the directory of the including file, wildcards are globbed in sorted order; Slurm
  23.02+ refuses wildcards and 22.05 takes them literally, so this too is a superset).
* Slurm allows one ``Key=Value`` per line outside records; several are accepted here (a superset: every
  line Slurm accepts means the same here).
* A ``NodeName=`` / ``PartitionName=`` / ... key starts a record that owns the rest of its line.

This module is imported on the per-login path of pam_slurm_adopt, so it imports only os, stat, typing and
collections.abc; pathlib, glob and pwd are imported when first needed.
Unknown keys are kept (not rejected as Slurm would): a newer slurm.conf must not break logins.

Whatever the files hold, parsing raises only ConfError, in time and memory bounded by the limits below.
Slurm's own parser (parse_config.c, 22.05 to 26.05) has none of them: it reads a file of any size (its
line buffer is the file's size, so no line limit either), recurses into an Include loop until the stack
overflows, and takes a FIFO or /dev/zero (st_size 0) for an empty file; only its node table is capped
(MAX_SLURM_NODES, from 24.11).
Here every file must be a regular file, of which at most its limit plus one page is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from slurmproto.errors import SlurmError
from slurmproto.hostlist import expand_hostlist

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = [
    "CONFIGLESS_CONF", "DEFAULT_CONF", "DEFAULT_SEARCH_PATHS", "MAX_CONF_FILES", "MAX_FILE_BYTES",
    "MAX_HOSTLIST_NAMES", "MAX_INCLUDE_DEPTH", "MAX_NODE_DEFAULT_KEYS", "MAX_NODES", "MAX_TOTAL_BYTES",
    "ConfError", "ConfNotFound", "NodeConf", "Options", "SlurmConf", "expand_hostlist", "find_conf", "load",
    "parse_file", "parse_text",
]

DEFAULT_CONF = "/etc/slurm/slurm.conf"
CONFIGLESS_CONF = "/run/slurm/conf/slurm.conf"
"""Where slurmd keeps the configuration it fetched from slurmctld in configless mode."""
DEFAULT_SEARCH_PATHS: tuple[str, ...] = (DEFAULT_CONF, CONFIGLESS_CONF)

MAX_INCLUDE_DEPTH = 16
"""Include nesting deeper than this is refused (Slurm has no limit; an Include loop is caught sooner)."""
MAX_FILE_BYTES = 4 << 20
"""The largest file read: the 65,536 nodes Slurm allows (MAX_SLURM_NODES) written one per 64-byte line fit;
real slurm.conf files are a few KiB to a few hundred KiB."""
MAX_TOTAL_BYTES = 8 << 20
"""The most bytes read for one configuration, slurm.conf and every file it includes together."""
MAX_CONF_FILES = 256
"""The most files read for one configuration (slurm.conf included); a wildcard Include matching more
files than are left is refused before any is read."""
MAX_NODES = 65536
"""Nodes in one configuration: Slurm's own limit (MAX_SLURM_NODES, enforced from 24.11)."""
MAX_HOSTLIST_NAMES = 4 * MAX_NODES
"""Names all hostlists of one configuration may expand to: one NodeName, NodeHostname, NodeAddr and Port
for each node Slurm allows."""
MAX_NODE_DEFAULT_KEYS = 256
"""Distinct keys the NodeName=DEFAULT lines may set together (Slurm knows about 45 node keys)."""

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
_MAX_MESSAGE = 1024
_PAGE = 4096
_MAX_GLOB_DEPTH = 64
_MAX_BRACKETS = 16
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), 127)}
_WILDCARDS = frozenset("*?[")


class ConfError(SlurmError):
    """slurm.conf is missing, unreadable or malformed; the message starts with ``file:line:`` when known."""

    def __init__(self, message: str, path: str | None = None, lineno: int | None = None) -> None:
        if path is not None and lineno is not None:
            message = f"{path}:{lineno}: {message}"
        elif path is not None:
            message = f"{path}: {message}"
        if len(message) > _MAX_MESSAGE:  # it may quote a token of a 4 MiB line; it goes to syslog
            half = _MAX_MESSAGE // 2  # the reason is at the end
            message = f"{message[:half]} [{len(message) - 2 * half} characters] {message[-half:]}"
        # Undecodable bytes of the file are kept as lone surrogates; a message must print on any UTF-8 stream,
        # and be one line (a file name may hold a newline).
        super().__init__(message.translate(_CONTROLS).encode("utf-8", "backslashreplace").decode("utf-8"))
        self.path = path
        self.lineno = lineno


class ConfNotFound(ConfError):
    """No slurm.conf was named and none exists where Slurm looks."""


class Options(Mapping[str, str]):
    """A read-only mapping with case-insensitive keys that remembers how each key was spelled.

    Read-only so that all nodes of one NodeName line can share one instance (a hostlist may expand to
    thousands of nodes, and copying a mapping per node would dominate parsing time). `base` holds keys
    that the items override (NodeName=DEFAULT's, shared by every node line instead of copied into each).
    """

    __slots__ = ("_base", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = (), base: Options | None = None) -> None:
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
        return f"Options({dict(self._merged().values())!r})"


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

    def __init__(self, path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> None:
        self._path = os.fspath(path)
        self.env = env
        """The environment guess_nodename() reads ($SLURMD_NODENAME); None: the process's."""
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


def parse_file(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> SlurmConf:
    """Parse slurm.conf at `path` and the files it includes; `env` is kept as SlurmConf.env."""
    conf = SlurmConf(path, env)
    _Parser(conf).parse_file(conf._path, 0, None)
    return conf


def parse_text(text: str, path: str | os.PathLike[str] = "<string>", *,
               env: Mapping[str, str] | None = None) -> SlurmConf:
    """Parse slurm.conf contents; `path` names it in errors and anchors relative Includes."""
    conf = SlurmConf(path, env)
    _Parser(conf).parse_text(text, conf._path, 0)
    return conf


# --- parsing ------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, conf: SlurmConf) -> None:
        self.conf = conf
        # NodeName=DEFAULT keys so far; without Port for the nodes' options (their Port is a field).
        self.node_defaults = Options()
        self.node_default_options = Options()
        self.names_left = MAX_HOSTLIST_NAMES
        self.files_read = 0
        self.bytes_read = 0
        self.reading: list[tuple[int, int]] = []
        """(st_dev, st_ino) of the files being read, outermost first: an Include of one is a loop."""

    def parse_file(self, path: str, depth: int, include_site: tuple[str, int] | None) -> None:
        def fail(reason: str) -> ConfError:
            if include_site is None:
                return ConfError(reason, path)
            return ConfError(f"Include {path}: {reason}", *include_site)

        if self.files_read >= MAX_CONF_FILES:
            raise fail(f"one file more than the limit of {MAX_CONF_FILES} files for one configuration")
        self.files_read += 1
        try:
            data, identity = self.read(path, fail)
        except OSError as e:
            raise fail(f"cannot read: {e.strerror or e}") from None
        if identity in self.reading:
            raise fail("an Include loop (this file is being read already: it includes itself, directly or "
                       "through other files)")
        self.reading.append(identity)
        # Slurm reads bytes; surrogateescape keeps odd bytes (say, Latin-1 in a comment) from failing.
        self.parse_text(data.decode("utf-8", "surrogateescape"), path, depth)
        self.reading.pop()

    def read(self, path: str, fail: Callable[[str], ConfError]) -> tuple[bytes, tuple[int, int]]:
        """The bytes of a regular file, of which at most the limit left plus one page are read; and its
        identity."""
        if "\0" in path:  # os.stat() would raise ValueError
            raise fail("cannot read: a NUL byte in the path")
        _regular(os.stat(path).st_mode, fail)  # before open(): opening a FIFO blocks, a device may act
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)  # what was opened, should the path have changed since
            _regular(info.st_mode, fail)
            limit = min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - self.bytes_read)
            if info.st_size <= limit:
                data = _read_at_most(fd, limit + 1)  # the file may grow while it is read
        finally:
            os.close(fd)
        if info.st_size > limit or len(data) > limit:
            if limit < MAX_FILE_BYTES:
                raise fail(f"the configuration is larger than {MAX_TOTAL_BYTES} bytes with this file "
                           "(the limit for slurm.conf and its Includes together)")
            raise fail(f"larger than {MAX_FILE_BYTES} bytes (the limit for one file)")
        self.bytes_read += len(data)
        return data, (info.st_dev, info.st_ino)

    def parse_text(self, text: str, path: str, depth: int) -> None:
        nul = text.find("\0")
        if nul >= 0:
            raise ConfError("NUL byte (slurm.conf is text)", path, text.count("\n", 0, nul) + 1)
        lines = _physical_lines(text)  # not splitlines(): fgets() ends lines at \n only
        lineno = 0
        for physical in lines:
            lineno += 1
            first = lineno
            # Comments go first, line by line; then a trailing odd run of backslashes joins the next line.
            line = _strip_comment(physical)
            joined = _continued(line)
            if joined is not None:
                parts = [joined]
                for physical in lines:
                    lineno += 1
                    line = _strip_comment(physical)
                    joined = _continued(line)
                    parts.append(line if joined is None else joined)
                    if joined is None:
                        break
                line = "".join(parts)
            if "\\" in line:
                line = _strip_escapes(line)
            if not line or line.isspace():
                continue
            self.parse_line(line, path, first, depth)

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
            raise ConfError(f"Include {spec}: nested more than {MAX_INCLUDE_DEPTH} deep", path, lineno)
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
        for match in self.glob(spec, base_dir, path, lineno):
            self.parse_file(match, depth + 1, site)

    def glob(self, spec: str, base_dir: str, path: str, lineno: int) -> list[str]:
        """The files a wildcard Include names, sorted like glob(3); matching nothing is fine."""
        import glob  # only for wildcard Includes
        from itertools import islice

        # Escape the directory: only the Include argument is a pattern.
        pattern = spec if spec.startswith("/") else os.path.join(glob.escape(base_dir), spec)
        if pattern.count("/") > _MAX_GLOB_DEPTH:  # glob recurses once per directory of the pattern
            raise ConfError(f"Include {spec}: a wildcard path more than {_MAX_GLOB_DEPTH} directories deep",
                            path, lineno)
        left = MAX_CONF_FILES - self.files_read
        matches = list(islice(glob.iglob(pattern), left + 1))  # stop early on a directory of thousands
        if len(matches) > left:
            raise ConfError(f"Include {spec}: matches more than the {left} files left of the limit of "
                            f"{MAX_CONF_FILES} files for one configuration", path, lineno)
        return sorted(matches)

    def record(self, kind: str, pairs: list[tuple[str, str]], path: str, lineno: int) -> None:
        options = Options(pairs)
        self.conf.records.setdefault(kind, []).append(options)
        if kind == "NodeName":
            self.nodes(pairs, options, path, lineno)

    def node_default(self, pairs: list[tuple[str, str]], line: Options, path: str, lineno: int) -> None:
        for key in ("NodeHostname", "NodeAddr", "BcastAddr"):
            if key in line:
                raise ConfError(f"{key} not allowed with NodeName=DEFAULT", path, lineno)
        if (port := line.get("Port")) is not None:
            self.ports(port, path, lineno)
        # Later DEFAULT lines add to (and override) the earlier ones.
        defaults = Options([*self.node_defaults.items(), *pairs[1:]])
        if len(defaults) > MAX_NODE_DEFAULT_KEYS:
            raise ConfError(f"NodeName=DEFAULT lines set more than {MAX_NODE_DEFAULT_KEYS} keys", path, lineno)
        self.node_defaults = defaults
        self.node_default_options = Options((k, v) for k, v in defaults.items() if k.lower() != "port")

    def nodes(self, pairs: list[tuple[str, str]], line: Options, path: str, lineno: int) -> None:
        names_expr = pairs[0][1]
        if names_expr.lower() == "default":
            self.node_default(pairs, line, path, lineno)
            return
        merged = Options(pairs[1:], self.node_defaults)
        table = self.conf.nodes
        if _hostlist_size(names_expr) > MAX_NODES - len(table):
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
        options = Options(((k, v) for k, v in pairs[1:] if k.lower() not in ("nodehostname", "nodeaddr", "port")),
                          self.node_default_options)
        for i, name in enumerate(names):
            if name in table:
                raise ConfError(f"duplicated NodeName {name}", path, lineno)
            table[name] = NodeConf(name, addrs[i], hostnames[i], ports[0] if len(ports) == 1 else ports[i],
                                   options)

    def ports(self, expr: str, path: str, lineno: int) -> list[int | None]:
        """A node Port value: one port, or a hostlist-style list of them (one per node)."""
        return [_checked_uint("Port", p, _PORT, path, lineno) for p in self.hostlist(expr, "Port", path, lineno)]

    def hostlist(self, expr: str, key: str, path: str, lineno: int) -> list[str]:
        """Expand a hostlist within the budget of names for the whole configuration (checked before
        expanding: extra NodeAddr names are ignored, yet a line could ask for 65,536 of them each time)."""
        if _hostlist_size(expr) > self.names_left:
            raise ConfError(f"{key}: {expr!r}: the hostlists of one configuration expand to more than "
                            f"{MAX_HOSTLIST_NAMES} names", path, lineno)
        names = _hostlist(expr, key, path, lineno)
        self.names_left -= len(names)
        if self.names_left < 0:  # where the estimate missed
            raise ConfError(f"{key}: {expr!r}: the hostlists of one configuration expand to more than "
                            f"{MAX_HOSTLIST_NAMES} names", path, lineno)
        return names


def _regular(mode: int, fail: Callable[[str], ConfError]) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    raise fail(f"cannot read: {kind} (slurm.conf and its Includes must be regular files)")


def _read_at_most(fd: int, count: int) -> bytes:
    """Up to `count` bytes, in reads of whole pages (some /proc files refuse others) of at most 64 KiB
    (os.read() allocates the size asked for first)."""
    count = -(-count // _PAGE) * _PAGE
    chunks = []
    while count > 0:
        chunk = os.read(fd, min(count, 16 * _PAGE))
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _physical_lines(text: str) -> Iterator[str]:
    """The lines of `text` split at \\n only, one at a time (no list of them all)."""
    start = 0
    end = text.find("\n")
    while end >= 0:
        yield text[start:end]
        start = end + 1
        end = text.find("\n", start)
    yield text[start:]


# --- line syntax --------------------------------------------------------------------------------------


def _strip_comment(line: str) -> str:
    """`line` up to the first # not escaped by an odd number of backslashes."""
    start = 0  # a run of backslashes before a # cannot reach back past the previous #: linear time
    hash_at = line.find("#")
    while hash_at >= 0:
        segment = line[start:hash_at]
        if (len(segment) - len(segment.rstrip("\\"))) % 2 == 0:
            return line[:hash_at]
        start = hash_at + 1
        hash_at = line.find("#", start)
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
    # expand_hostlist() recurses once per bracket group of a name (RecursionError near 1,000 of them).
    if expr.count("[") > _MAX_BRACKETS and any(i.count("[") > _MAX_BRACKETS for i in _hostlist_items(expr)):
        raise ConfError(f"{key}: bad hostlist {expr!r}: a name with more than {_MAX_BRACKETS} bracket groups",
                        path, lineno)
    try:
        names = expand_hostlist(expr)
    except ValueError as e:
        raise ConfError(f"{key}: bad hostlist {expr!r}: {e}", path, lineno) from None
    if not names:
        raise ConfError(f"{key}: empty", path, lineno)
    return names


def _hostlist_size(expr: str) -> int:
    """How many names a hostlist expands to, from its bracket ranges alone (0 where it is malformed:
    expand_hostlist() then says why)."""
    total = 0
    for item in expr.replace(",", " ").split() if "[" not in expr else _hostlist_items(expr):
        count = 1
        rest = item
        while (open_at := rest.find("[")) >= 0:
            close_at = rest.find("]", open_at)
            if close_at < 0:
                return 0
            count *= sum(_range_size(part) for part in rest[open_at + 1:close_at].split(","))
            rest = rest[close_at + 1:]
        total += count
    return total


def _hostlist_items(expr: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, ch in enumerate(expr):
        if ch in "[]":
            depth = ch == "["
        elif not depth and (ch == "," or ch.isspace()):
            items.append(expr[start:i])
            start = i + 1
    items.append(expr[start:])
    return [item for item in items if item]


def _range_size(part: str) -> int:
    lo, _, hi = part.partition("-")
    if not (lo.isascii() and lo.isdigit() and (not hi or (hi.isascii() and hi.isdigit()))):
        return 0
    return max(0, int(hi) - int(lo) + 1) if hi else 1
