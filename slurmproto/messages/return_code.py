"""RESPONSE_SLURM_RC: a bare return code, how Slurm answers errors. Every release."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from construct import Construct, Int32sb, Struct

from slurmproto.constants import MsgType
from slurmproto.errors import slurm_strerror
from slurmproto.messages.base import Message, register


@register
@dataclass(frozen=True)
class ReturnCode(Message):
    """return_code as a signed u32 (SLURM_ERROR -1 is ff ff ff ff)."""

    return_code: int

    MSG_TYPE: ClassVar[int] = MsgType.RESPONSE_SLURM_RC
    BODY: ClassVar[Construct] = Struct("return_code" / Int32sb)

    @property
    def message(self) -> str:
        return slurm_strerror(self.return_code)
