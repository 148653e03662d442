"""The message header (pack_header / unpack_header), every protocol version.

Callerid traffic always has forward.cnt 0 and ret_cnt 0, which makes the header 16 bytes from 22.05 on;
the forward block and the return list are parsed anyway, so that any slurmd frame can be read.
The header is parsed with its own version as the `version` parameter (the codec peeks it first); its
forks (the spare field, net_cred, tree_depth) follow that version's row of the release table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from construct import If, Int16ub, Int32sb, Int32ub, Padding, PrefixedArray, Struct

from slurmproto.constants import HeaderFlags
from slurmproto.messages.base import Message, MessageBody
from slurmproto.primitives import SlurmAddr, Typed, WhereLayout, packstr, slurm_addr
from slurmproto.versions import layout_of


@dataclass(frozen=True)
class Forward:
    """Where the receiver must forward the message (cnt nodes of nodelist). cnt 0: nothing else."""

    cnt: int = 0
    nodelist: str | None = None
    timeout: int | None = None
    tree_width: int | None = None
    net_cred: str | None = None
    """23.11+, when the header flags have SLURM_PACK_ADDRS."""
    tree_depth: int | None = None
    """24.11+."""


@dataclass(frozen=True)
class RetEntry:
    """One answer gathered from a forwarded node."""

    err: int
    msg_type: int
    node_name: str | None
    message: Message


@dataclass(frozen=True)
class Header:
    version: int
    flags: int
    msg_type: int
    body_length: int
    forward: Forward = field(default_factory=Forward)
    ret_list: list[RetEntry] = field(default_factory=list)
    orig_addr: SlurmAddr = field(default_factory=SlurmAddr)

    @property
    def has_auth(self) -> bool:
        """SLURM_NO_AUTH_CRED (23.02+) means there is no auth section between header and body."""
        return not self.flags & HeaderFlags.SLURM_NO_AUTH_CRED


def _forwarding(ctx: Any) -> bool:
    return bool(ctx.cnt > 0)


def _has_net_cred(ctx: Any) -> bool:
    return bool(ctx.cnt > 0 and layout_of(ctx._params.version).forward_net_cred
                and ctx._.flags & HeaderFlags.SLURM_PACK_ADDRS)


def _has_tree_depth(ctx: Any) -> bool:
    return bool(ctx.cnt > 0 and layout_of(ctx._params.version).forward_tree_depth)


FORWARD = Typed(Forward, Struct(
    "cnt" / Int16ub,
    "nodelist" / If(_forwarding, packstr),
    "timeout" / If(_forwarding, Int32ub),
    "tree_width" / If(_forwarding, Int16ub),
    "net_cred" / If(_has_net_cred, packstr),
    "tree_depth" / If(_has_tree_depth, Int16ub),
))

RET_ENTRY = Typed(RetEntry, Struct(
    "err" / Int32sb,
    "msg_type" / Int16ub,
    "node_name" / packstr,
    "message" / MessageBody("msg_type"),
))

HEADER = Typed(Header, Struct(
    "version" / Int16ub,
    "flags" / Int16ub,
    # 20.11 and 21.08 headers carry a spare u16 (always 0) here.
    WhereLayout("extra_header_field", Padding(2)),
    "msg_type" / Int16ub,
    "body_length" / Int32ub,
    "forward" / FORWARD,
    "ret_list" / PrefixedArray(Int16ub, RET_ENTRY),
    "orig_addr" / slurm_addr,
))
