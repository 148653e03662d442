"""Slurm's pack.c primitives as construct building blocks.

Every schema is parsed and built with the header's protocol version in the context
(`schema.parse(data, version=0x2600)`); where releases differ, a field is there or not as the release
table says for that version (`WhereLayout`, `versions.layout_of`). A second parameter,
`nul_check` (default True), says whether a packstr must end in NUL as 23.02+ receivers demand;
pass False to read like a 22.05 receiver.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from construct import Adapter, Construct, Default, Int16ub, Int32ub, Int64ub, stream_read, stream_write

from slurmproto.constants import AF_INET, AF_INET6, NO_VAL
from slurmproto.errors import MalformedMessage, MissingNul
from slurmproto.versions import Layout, layout_of

MAX_PACK_MEM_LEN = 0x40000000
"""Unpackers refuse a string or memory length above 1 GiB."""


def _read_len(stream: Any, path: str, limit: int) -> int:
    length = int.from_bytes(bytes(stream_read(stream, 4, path)), "big")
    if length > limit:
        raise MalformedMessage(f"{path}: length {length} exceeds the limit of {limit} bytes")
    return length


def _remaining(stream: Any) -> int:
    pos: int = stream.tell()
    end: int = stream.seek(0, 2)
    stream.seek(pos)
    return end - pos


def _read_exact(stream: Any, length: int, path: str) -> bytes:
    # Check before reading so a lying length never becomes an allocation.
    if length > _remaining(stream):
        raise MalformedMessage(f"{path}: length {length} is longer than the {_remaining(stream)} bytes left")
    return bytes(stream_read(stream, length, path))


class PackStr(Construct):  # type: ignore[misc]
    """packstr: u32 BE length counting the NUL, then the bytes and the NUL; length 0 is NULL (None).

    Parses to `str | None` (UTF-8, undecodable bytes kept as surrogates so they build back identically).
    """

    def _parse(self, stream: Any, context: Any, path: str) -> str | None:
        length = _read_len(stream, path, MAX_PACK_MEM_LEN)
        if length == 0:
            return None
        data = _read_exact(stream, length, path)
        if data[-1] == 0:
            data = data[:-1]
        elif context._params.get("nul_check", True):
            raise MissingNul(f"{path}: string of {length} bytes does not end in NUL")
        return data.decode("utf-8", "surrogateescape")

    def _build(self, obj: str | None, stream: Any, context: Any, path: str) -> str | None:
        if obj is None:
            stream_write(stream, b"\0\0\0\0", 4, path)
            return obj
        data = obj.encode("utf-8", "surrogateescape") + b"\0"
        stream_write(stream, len(data).to_bytes(4, "big") + data, 4 + len(data), path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        from construct import SizeofError

        raise SizeofError("packstr has no fixed size", path=path)


class PackMem(Construct):  # type: ignore[misc]
    """packmem: u32 BE length, then that many raw bytes (length 0 parses as b"")."""

    def __init__(self, max_length: int = MAX_PACK_MEM_LEN) -> None:
        super().__init__()
        self.max_length = max_length

    def _parse(self, stream: Any, context: Any, path: str) -> bytes:
        length = _read_len(stream, path, self.max_length)
        return _read_exact(stream, length, path)

    def _build(self, obj: bytes, stream: Any, context: Any, path: str) -> bytes:
        if len(obj) > self.max_length:
            raise MalformedMessage(f"{path}: {len(obj)} bytes exceed the limit of {self.max_length}")
        stream_write(stream, len(obj).to_bytes(4, "big") + obj, 4 + len(obj), path)
        return obj


class Typed(Adapter):  # type: ignore[misc]
    """Turns a Struct's Container into a dataclass instance and back."""

    def __init__(self, cls: type, subcon: Construct) -> None:
        super().__init__(subcon)
        self.cls = cls

    @functools.cached_property
    def names(self) -> list[str]:
        # Computed on first use: a class may build its schema before @dataclass has run.
        return [f.name for f in dataclasses.fields(self.cls)]

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        return self.cls(**{name: obj[name] for name in self.names if name in obj})

    def _encode(self, obj: Any, context: Any, path: str) -> dict[str, Any]:
        if not isinstance(obj, self.cls):
            raise TypeError(f"{path}: expected {self.cls.__name__}, got {type(obj).__name__}")
        return {name: getattr(obj, name) for name in self.names}


# --- slurm_addr_t --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlurmAddr:
    """A packed slurm_addr_t. Only AF_INET and AF_INET6 carry an address and a port."""

    family: int = 0
    address: bytes = b""
    """4 or 16 bytes in network order."""
    port: int = 0

    def __str__(self) -> str:
        import ipaddress

        if self.family in (AF_INET, AF_INET6):
            return f"{ipaddress.ip_address(self.address)}:{self.port}"
        return f"family {self.family}"


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


class SlurmAddrCodec(Construct):  # type: ignore[misc]
    """slurm_pack_addr: u16 BE family, then for AF_INET u32 address and u16 port, for AF_INET6
    packmem(16) and u16 port.

    Quirk (every release): the IPv4 address and the ports are already in network order in memory and
    go through htonl/htons again, so a little-endian daemon sends them byte-reversed (10.0.0.1 as
    01 00 00 0a, port 6818 as a2 1a). We encode and decode like a little-endian daemon.
    """

    def _parse(self, stream: Any, context: Any, path: str) -> SlurmAddr:
        family = Int16ub._parse(stream, context, path)
        if family == AF_INET:
            address = stream_read(stream, 4, path)[::-1]
            return SlurmAddr(family, address, _swap16(Int16ub._parse(stream, context, path)))
        if family == AF_INET6:
            address = PackMem(16)._parse(stream, context, path)
            if len(address) != 16:
                raise MalformedMessage(f"{path}: IPv6 address of {len(address)} bytes")
            return SlurmAddr(family, address, _swap16(Int16ub._parse(stream, context, path)))
        return SlurmAddr(family)

    def _build(self, obj: SlurmAddr, stream: Any, context: Any, path: str) -> SlurmAddr:
        Int16ub._build(obj.family, stream, context, path)
        if obj.family == AF_INET:
            stream_write(stream, bytes(obj.address)[::-1], 4, path)
            Int16ub._build(_swap16(obj.port), stream, context, path)
        elif obj.family == AF_INET6:
            PackMem(16)._build(bytes(obj.address), stream, context, path)
            Int16ub._build(_swap16(obj.port), stream, context, path)
        return obj


class WhereLayout(Construct):  # type: ignore[misc]
    """`subcon` where the layout of the context's protocol version has `fact` (a Layout field), else
    nothing (None).

    The release table decides (versions.layout_of), so a schema forks on a row's fact, never on a
    version number. Compiles: the compiled code asks layout_of too.
    """

    def __init__(self, fact: str, subcon: Construct) -> None:
        super().__init__()
        if fact not in Layout._fields:
            raise ValueError(f"{fact!r} is not a Layout field ({', '.join(Layout._fields)})")
        self.fact = fact
        self.index = Layout._fields.index(fact)
        self.subcon = subcon
        self.flagbuildnone = subcon.flagbuildnone

    def present(self, context: Any) -> bool:
        return bool(layout_of(context["_params"]["version"])[self.index])

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self.subcon._parsereport(stream, context, path) if self.present(context) else None

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        return self.subcon._build(obj, stream, context, path) if self.present(context) else None

    def _sizeof(self, context: Any, path: str) -> int:
        return int(self.subcon._sizeof(context, path)) if self.present(context) else 0

    def _condition(self, code: Any) -> str:
        code.append("from slurmproto.versions import layout_of as _layout_of")
        return f"_layout_of(this['_params']['version'])[{self.index}]"

    def _emitparse(self, code: Any) -> str:
        return f"(({self.subcon._compileparse(code)}) if {self._condition(code)} else None)"

    def _emitbuild(self, code: Any) -> str:
        return f"(({self.subcon._compilebuild(code)}) if {self._condition(code)} else None)"


# pack_step_id (sluid, job_id, step_id, step_het_comp) where replies carry a step id (25.11+), else the
# job id alone. Missing step fields build as Slurm's SLURM_STEP_ID_INITIALIZER (0, NO_VAL, NO_VAL).
STEP_ID_OR_JOB_ID = (
    "sluid" / WhereLayout("step_id_replies", Default(Int64ub, 0)),
    "job_id" / Int32ub,
    "step_id" / WhereLayout("step_id_replies", Default(Int32ub, NO_VAL)),
    "step_het_comp" / WhereLayout("step_id_replies", Default(Int32ub, NO_VAL)),
)

# Exported instances, used like construct's own fields.
packstr = PackStr()
slurm_addr = SlurmAddrCodec()
u16 = Int16ub
u32 = Int32ub
