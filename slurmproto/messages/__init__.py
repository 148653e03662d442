"""Message bodies, one module per RPC; REGISTRY maps msg_type numbers to their classes."""

from slurmproto.messages.base import REGISTRY, Message, MessageBody, message_class, register
from slurmproto.messages.callerid import NetworkCallerIdRequest, NetworkCallerIdResponse, pack_address
from slurmproto.messages.job_id import JobIdRequest, JobIdResponse
from slurmproto.messages.return_code import ReturnCode

__all__ = [
    "REGISTRY", "Message", "MessageBody", "message_class", "register", "NetworkCallerIdRequest",
    "NetworkCallerIdResponse", "pack_address", "JobIdRequest", "JobIdResponse", "ReturnCode",
]
