"""IP addresses between text and the packed form Slurm puts on the wire (4 bytes for AF_INET, 16 for
AF_INET6, network order): the one converter every module uses."""

from __future__ import annotations

import socket

from slurmproto.constants import AF_INET, AF_INET6

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def pack(text: str) -> tuple[int, bytes]:
    """(Slurm's address family, packed address) of an IPv4 or IPv6 literal (a %scope is dropped);
    ValueError naming the text otherwise."""
    for family, wire, literal in ((socket.AF_INET, AF_INET, text), (socket.AF_INET6, AF_INET6, text.split("%")[0])):
        try:
            return wire, socket.inet_pton(family, literal)
        except (OSError, ValueError):  # ValueError: a NUL, or a character that is not UTF-8
            continue
    raise ValueError(f"{text!r} is not an IPv4 or IPv6 address")


def unpack(af: int, packed: bytes) -> str:
    """The text of a packed address of family `af` (AF_INET: its first 4 bytes; else all 16)."""
    if af == AF_INET:
        return socket.inet_ntop(socket.AF_INET, packed[:4].ljust(4, b"\0"))
    return socket.inet_ntop(socket.AF_INET6, packed[:16].ljust(16, b"\0"))


def unmapped(af: int, packed: bytes) -> tuple[int, bytes]:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it is; anything else as it is."""
    if af == AF_INET6 and packed[:12] == _V4_MAPPED:
        return AF_INET, packed[12:]
    return af, packed


def is_ip(text: str) -> bool:
    try:
        pack(text)
    except ValueError:
        return False
    return True
