"""REQUEST_JOB_ID / RESPONSE_JOB_ID: slurmd asks itself which job holds a pid (inside a callerid)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from construct import Construct, Int32sb, Int32ub, Struct

from slurmproto.constants import MsgType
from slurmproto.messages.base import Message, register
from slurmproto.primitives import STEP_ID_OR_JOB_ID


@register
@dataclass(frozen=True)
class JobIdRequest(Message):
    """The pid to look up. Every release."""

    job_pid: int

    MSG_TYPE: ClassVar[int] = MsgType.REQUEST_JOB_ID
    BODY: ClassVar[Construct] = Struct("job_pid" / Int32ub)


@register
@dataclass(frozen=True)
class JobIdResponse(Message):
    """The job (from 25.11: the step id) whose step contains the pid. Not found is RESPONSE_SLURM_RC 2017."""

    job_id: int
    return_code: int
    sluid: int | None = None
    step_id: int | None = None
    step_het_comp: int | None = None

    MSG_TYPE: ClassVar[int] = MsgType.RESPONSE_JOB_ID
    BODY: ClassVar[Construct] = Struct(
        *STEP_ID_OR_JOB_ID,  # 25.11+: sluid, job_id, step_id, step_het_comp; before: job_id
        "return_code" / Int32sb,
    )
