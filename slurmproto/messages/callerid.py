"""REQUEST_NETWORK_CALLERID / RESPONSE_NETWORK_CALLERID: which job owns a TCP connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from construct import Construct, Int32sb, Int32ub, Struct

from slurmproto.constants import AF_INET, AF_INET6, NO_VAL, MsgType
from slurmproto.messages.base import Message, register
from slurmproto.primitives import STEP_ID_OR_JOB_ID, PackMem, packstr

if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address

    IPAddress = IPv4Address | IPv6Address


def _address(raw: bytes, af: int) -> IPAddress:
    # The field is 16 bytes whatever the family; for AF_INET only the first 4 count (scontrol
    # leaves garbage in the rest). ipaddress is imported here, off the request path.
    import ipaddress

    if af == AF_INET:
        return ipaddress.IPv4Address(raw[:4].ljust(4, b"\0"))
    return ipaddress.IPv6Address(raw[:16].ljust(16, b"\0"))


def pack_address(address: IPAddress) -> bytes:
    """An address as the 16-byte field: IPv4 in the first 4 bytes, then zeros."""
    return address.packed.ljust(16, b"\0")


@register
@dataclass(frozen=True)
class NetworkCallerIdRequest(Message):
    """Asks the slurmd on the connection's source host which job holds the connection.

    Seen from the asker (the sshd side): `ip_src:port_src` is the remote peer, whose slurmd is asked;
    `ip_dst:port_dst` is the local end. Identical in every release 22.05 to 26.05 (52 bytes).
    """

    ip_src: bytes
    ip_dst: bytes
    port_src: int
    port_dst: int
    af: int

    MSG_TYPE: ClassVar[int] = MsgType.REQUEST_NETWORK_CALLERID
    BODY: ClassVar[Construct] = Struct(
        "ip_src" / PackMem(16),
        "ip_dst" / PackMem(16),
        "port_src" / Int32ub,
        "port_dst" / Int32ub,
        "af" / Int32ub,
    )

    @classmethod
    def for_connection(cls, src: IPAddress, port_src: int, dst: IPAddress, port_dst: int,
                       af: int | None = None) -> NetworkCallerIdRequest:
        """Build from addresses; af defaults to the family of `src`."""
        if af is None:
            af = AF_INET if src.version == 4 else AF_INET6
        return cls(pack_address(src), pack_address(dst), port_src, port_dst, af)

    @property
    def source(self) -> IPAddress:
        return _address(self.ip_src, self.af)

    @property
    def destination(self) -> IPAddress:
        return _address(self.ip_dst, self.af)


@register
@dataclass(frozen=True)
class NetworkCallerIdResponse(Message):
    """slurmd's answer: the job holding the connection, or NO_VAL (not found, or not the asker's job).

    Before 25.11 the body is job_id, return_code, node_name. A request sent as 25.11 (0x2C00) or newer
    gets a whole step id instead of job_id: sluid, job_id, step_id, step_het_comp. 25.11 fills only
    job_id (step NO_VAL); 26.05 sends the step holding the process. return_code is always 0.
    """

    job_id: int
    return_code: int
    node_name: str | None
    sluid: int | None = None
    step_id: int | None = None
    step_het_comp: int | None = None

    MSG_TYPE: ClassVar[int] = MsgType.RESPONSE_NETWORK_CALLERID
    BODY: ClassVar[Construct] = Struct(
        *STEP_ID_OR_JOB_ID,  # 25.11+: sluid, job_id, step_id, step_het_comp; before: job_id
        "return_code" / Int32sb,
        "node_name" / packstr,
    )

    @property
    def found(self) -> bool:
        return self.job_id != NO_VAL
