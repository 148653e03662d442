"""What every message body has: its msg_type, its schema, and a registry to find it by number."""

from __future__ import annotations

import io
from typing import Any, ClassVar, TypeVar

from construct import Construct, ConstructError

from slurmproto.errors import MalformedMessage, ProtocolError, TrailingBytes, UnknownMessageType
from slurmproto.primitives import Typed

M = TypeVar("M", bound="Message")


class Message:
    """A message body. Subclasses are frozen dataclasses with two class attributes:

    - MSG_TYPE: the slurm_msg_type_t number;
    - BODY: a construct Struct whose fields are the dataclass fields, forking on
      `this._params.version` where releases differ (like Slurm's pack/unpack pairs).
    """

    MSG_TYPE: ClassVar[int]
    BODY: ClassVar[Construct]
    _schemas: ClassVar[dict[bool, Construct]]

    @classmethod
    def schema(cls, compiled: bool = False) -> Construct:
        """BODY wrapped so that it parses to, and builds from, this dataclass.

        compiled=True uses construct's compiler (about 4x faster to parse; compiling costs milliseconds
        once, so long-running processes gain, one-shot commands do not).
        """
        schemas = cls.__dict__.get("_schemas")
        if schemas is None:
            schemas = cls._schemas = {}
        if compiled not in schemas:
            schemas[compiled] = Typed(cls, cls.BODY.compile() if compiled else cls.BODY)
        return schemas[compiled]

    def encode(self, version: int) -> bytes:
        """The body bytes as packed for this protocol version."""
        return self.schema().build(self, version=version)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls: type[M], data: bytes, version: int, *, nul_check: bool = True) -> M:
        """Parse exactly `data`; leftover bytes are an error."""
        stream = io.BytesIO(data)
        try:
            message = cls.schema().parse_stream(stream, version=version, nul_check=nul_check)
        except ProtocolError:
            raise
        except ConstructError as exc:
            raise MalformedMessage(f"{cls.__name__}: {_construct_message(exc)}") from None
        left = len(data) - stream.tell()
        if left:
            raise TrailingBytes(f"{cls.__name__}: {left} bytes left after the body")
        return message  # type: ignore[no-any-return]


def _construct_message(exc: ConstructError) -> str:
    text = str(exc)
    # construct words a short read as "stream read less than specified amount, expected 4, found 2".
    return "truncated: " + text if "stream read less" in text else text


REGISTRY: dict[int, type[Message]] = {}


def register(cls: type[M]) -> type[M]:
    REGISTRY[cls.MSG_TYPE] = cls
    return cls


def message_class(msg_type: int) -> type[Message]:
    try:
        return REGISTRY[msg_type]
    except KeyError:
        raise UnknownMessageType(msg_type) from None


class MessageBody(Construct):  # type: ignore[misc]
    """A body whose type is named elsewhere (ret_list entries): looks the schema up by msg_type."""

    def __init__(self, msg_type_field: str) -> None:
        super().__init__()
        self.field = msg_type_field

    def _parse(self, stream: Any, context: Any, path: str) -> Message:
        return message_class(context[self.field]).schema()._parsereport(stream, context, path)  # type: ignore

    def _build(self, obj: Message, stream: Any, context: Any, path: str) -> Message:
        return message_class(context[self.field]).schema()._build(obj, stream, context, path)  # type: ignore
