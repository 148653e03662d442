"""slurm.conf syntax: reading the files (within limits), lines, comments, continuations, Include, and
``Key=Value`` tokens, turned into a neutral stream of entries (a line's pairs with its file:line).

What the keys mean is slurmproto.conf's business; this module knows no key but ``Include``.
Written from the behaviour of Slurm's parse_config.c (22.05 to 26.05):

* ``Key=Value`` pairs, several to a line, values either ``"quoted"`` (no escapes) or a run of
  non-whitespace; whitespace around ``=`` is allowed, as in Slurm.
* ``#`` starts a comment unless an odd number of backslashes precede it; a backslash then escapes the
  next character (``\\#`` is ``#``, ``\\\\`` is ``\\``); an odd run of backslashes at the end of a line
  continues it onto the next.
* ``Include <path>`` reads another file in place (``%c`` is the lowercased ClusterName, which the caller
  supplies; relative paths are relative to the directory of the including file; wildcards are globbed in
  sorted order: Slurm 23.02+ refuses wildcards and 22.05 takes them literally, so this is a superset).

Whatever the files hold, reading raises only ConfError, in time and memory bounded by the limits below.
Slurm's own parser has none of them: it reads a file of any size (its line buffer is the file's size, so
no line limit either), recurses into an Include loop until the stack overflows, and takes a FIFO or
/dev/zero (st_size 0) for an empty file. Here every file must be a regular file, of which at most its
limit plus one page is read.

Imported on the per-login path: only os and stat at import time; glob when a wildcard Include needs it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple

from slurmproto.errors import SlurmError

__all__ = ["MAX_CONF_FILES", "MAX_FILE_BYTES", "MAX_INCLUDE_DEPTH", "MAX_TOTAL_BYTES", "ConfError", "Entry",
           "read_at_most", "read_file", "read_text"]

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

_MAX_MESSAGE = 1024
_PAGE = 4096
_MAX_GLOB_DEPTH = 64
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


class Entry(NamedTuple):
    """One logical line of slurm.conf (continuations joined, comments and escapes gone), Include excepted."""

    path: str
    lineno: int
    """The first physical line of the logical line."""
    pairs: list[tuple[str, str]]
    """Its ``Key=Value`` tokens in order, keys as written."""


ClusterNameSource = Callable[[], str | None]
"""Asked at an ``Include`` with ``%c``: the ClusterName set so far (None if unset)."""


def read_file(path: str, cluster_name: ClusterNameSource) -> Iterator[Entry]:
    """The entries of slurm.conf at `path` and of the files it includes, in order, read as they are asked
    for (so an error on a line comes before any later Include is read)."""
    return _Reader(cluster_name).file(path, 0, None)


def read_text(text: str, path: str, cluster_name: ClusterNameSource) -> Iterator[Entry]:
    """The entries of slurm.conf contents; `path` names it in errors and anchors relative Includes."""
    return _Reader(cluster_name).text(text, path, 0)


class _Reader:
    """The files of one configuration, within its limits of files and bytes."""

    def __init__(self, cluster_name: ClusterNameSource) -> None:
        self.cluster_name = cluster_name
        self.files_read = 0
        self.bytes_read = 0
        self.reading: list[tuple[int, int]] = []
        """(st_dev, st_ino) of the files being read, outermost first: an Include of one is a loop."""

    def file(self, path: str, depth: int, include_site: tuple[str, int] | None) -> Iterator[Entry]:
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
        yield from self.text(data.decode("utf-8", "surrogateescape"), path, depth)
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
                data = read_at_most(fd, limit + 1)  # the file may grow while it is read
        finally:
            os.close(fd)
        if info.st_size > limit or len(data) > limit:
            if limit < MAX_FILE_BYTES:
                raise fail(f"the configuration is larger than {MAX_TOTAL_BYTES} bytes with this file "
                           "(the limit for slurm.conf and its Includes together)")
            raise fail(f"larger than {MAX_FILE_BYTES} bytes (the limit for one file)")
        self.bytes_read += len(data)
        return data, (info.st_dev, info.st_ino)

    def text(self, text: str, path: str, depth: int) -> Iterator[Entry]:
        nul = text.find("\0")
        if nul >= 0:
            raise ConfError("NUL byte (slurm.conf is text)", path, text.count("\n", 0, nul) + 1)
        for lineno, line in _logical_lines(text):
            stripped = line.lstrip()
            if stripped[:7].lower() == "include" and stripped[7:8].isspace():
                yield from self.include(stripped[7:].split(), path, lineno, depth)
                continue
            pairs = _fast_pairs(line)
            if pairs is None:
                pairs = _scan_pairs(line, path, lineno)
            yield Entry(path, lineno, pairs)

    def include(self, args: list[str], path: str, lineno: int, depth: int) -> Iterator[Entry]:
        if len(args) != 1:
            raise ConfError("Include takes one path" + (f", got {' '.join(args)!r}" if args else ""),
                            path, lineno)
        spec = args[0]
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise ConfError(f"Include {spec}: nested more than {MAX_INCLUDE_DEPTH} deep", path, lineno)
        if "%c" in spec:
            cluster = self.cluster_name()
            if not cluster:
                raise ConfError(f"Include {spec}: %c needs ClusterName set before this line", path, lineno)
            spec = spec.replace("%c", cluster.lower())
        site = (path, lineno)
        # Relative to the including file, as Slurm's _add_full_path() does (for the top-level Includes,
        # that is slurm.conf's directory; a nested Include in sub/a.conf resolves in sub/).
        base_dir = os.path.dirname(os.path.abspath(path))
        if _WILDCARDS.isdisjoint(spec):
            yield from self.file(spec if spec.startswith("/") else os.path.join(base_dir, spec), depth + 1, site)
            return
        for match in self.glob(spec, base_dir, path, lineno):
            yield from self.file(match, depth + 1, site)

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


# --- files --------------------------------------------------------------------------------------------


def _regular(mode: int, fail: Callable[[str], ConfError]) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    raise fail(f"cannot read: {kind} (slurm.conf and its Includes must be regular files)")


def read_at_most(fd: int, count: int) -> bytes:
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


# --- lines --------------------------------------------------------------------------------------------


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first physical line number, text) of each non-blank logical line: comments stripped line by line,
    then a trailing odd run of backslashes joins the next line, then escapes go."""
    lines = _physical_lines(text)  # not splitlines(): fgets() ends lines at \n only
    lineno = 0
    for physical in lines:
        lineno += 1
        first = lineno
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
        if line and not line.isspace():
            yield first, line


def _physical_lines(text: str) -> Iterator[str]:
    """The lines of `text` split at \\n only, one at a time (no list of them all)."""
    start = 0
    end = text.find("\n")
    while end >= 0:
        yield text[start:end]
        start = end + 1
        end = text.find("\n", start)
    yield text[start:]


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


# --- Key=Value tokens ---------------------------------------------------------------------------------


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
