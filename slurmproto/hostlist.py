"""Slurm hostlist expressions (``node[01-04,7]`` and friends, as in NodeName, NodeAddr and Port): their
expansion, and how many names one expands to, counted without expanding it."""

from __future__ import annotations

MAX_HOSTLIST = 1 << 20
"""Our own guard: a hostlist expanding to more names than this is refused (a typo, not a cluster)."""


def expand_hostlist(expr: str) -> list[str]:
    """Expand a Slurm hostlist: ``node[01-04,7],gpu[1-2]-ib`` -> node01 .. node04, node7, gpu1-ib, gpu2-ib.

    Commas (or whitespace) outside brackets separate names; a bracket holds comma-separated numbers or
    ``lo-hi`` ranges, zero-padded to the width of ``lo``; several bracket groups multiply out, the first
    one varying slowest. ValueError if malformed.
    """
    if "[" not in expr and "]" not in expr:
        return expr.replace(",", " ").split()
    _check_brackets(expr)
    out: list[str] = []
    for item in hostlist_items(expr):
        out.extend(_expand_item(item))
        if len(out) > MAX_HOSTLIST:
            raise ValueError(f"more than {MAX_HOSTLIST} names")
    return out


def _check_brackets(expr: str) -> None:
    """ValueError unless the brackets of `expr` are balanced and flat."""
    depth = 0
    for ch in expr:
        if ch == "[":
            if depth:
                raise ValueError("nested '['")
            depth = 1
        elif ch == "]":
            if not depth:
                raise ValueError("']' without '['")
            depth = 0
    if depth:
        raise ValueError("'[' without ']'")


def _expand_item(item: str) -> list[str]:
    """Expand one name with bracket groups (brackets already checked to be balanced and flat), group by
    group from the left: a loop, not recursion, so a name of a thousand groups is no RecursionError."""
    groups: list[tuple[str, list[str]]] = []
    rest = item
    while (open_at := rest.find("[")) >= 0:
        close_at = rest.index("]", open_at)
        groups.append((rest[:open_at], _expand_ranges(rest[open_at + 1:close_at])))
        rest = rest[close_at + 1:]
    if not groups:
        return [item]
    names = [""]
    for index, (prefix, numbers) in enumerate(groups):
        if len(names) * len(numbers) > MAX_HOSTLIST:
            raise ValueError(f"more than {MAX_HOSTLIST} names")
        tail = rest if index == len(groups) - 1 else ""  # the text after the last group, added in the same pass
        names = [name + prefix + number + tail for name in names for number in numbers]
    return names


def _expand_ranges(body: str) -> list[str]:
    numbers: list[str] = []
    for part in body.split(","):
        lo, _, hi = part.partition("-")
        if not (lo.isascii() and lo.isdigit()) or (hi and not (hi.isascii() and hi.isdigit())):
            raise ValueError(f"bad range {part!r}")
        first = int(lo)
        last = int(hi) if hi else first  # "5-" is 5, as in Slurm
        if last < first:
            raise ValueError(f"range {part!r} runs backwards")
        if last - first >= MAX_HOSTLIST:
            raise ValueError(f"range {part!r} has more than {MAX_HOSTLIST} names")
        width = len(lo)
        numbers.extend(str(k).zfill(width) for k in range(first, last + 1))
    return numbers


def hostlist_size(expr: str) -> int:
    """How many names a hostlist expands to, from its bracket ranges alone (0 where it is malformed:
    expand_hostlist() then says why)."""
    total = 0
    for item in expr.replace(",", " ").split() if "[" not in expr else hostlist_items(expr):
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


def hostlist_items(expr: str) -> list[str]:
    """The names of a hostlist before expansion: split at commas and blanks outside brackets."""
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
