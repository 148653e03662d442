"""Slurm's numbers that are the same in every release 22.05 to 26.05 (slurm.h, msg_type.h)."""

from __future__ import annotations

from enum import IntEnum, IntFlag

NO_VAL = 0xFFFFFFFE
NO_VAL16 = 0xFFFE
NO_VAL64 = 0xFFFFFFFFFFFFFFFE
INFINITE = 0xFFFFFFFF

SLURM_MAX_NORMAL_STEP_ID = 0xFFFFFFF0
SLURM_PENDING_STEP = 0xFFFFFFFD
SLURM_EXTERN_CONT = 0xFFFFFFFC
SLURM_BATCH_SCRIPT = 0xFFFFFFFB
SLURM_INTERACTIVE_STEP = 0xFFFFFFFA

SLURM_AUTH_NOBODY = 99
SLURM_AUTH_UID_ANY = 0xFFFFFFFF

MAX_MSG_SIZE = 0x40000000
"""Slurm refuses a length prefix above 1 GiB (SLURM_PROTOCOL_INSANE_MSG_LENGTH)."""

DEFAULT_SLURMD_PORT = 6818

AF_INET = 2
AF_INET6 = 10

STEP_NAMES = {
    SLURM_EXTERN_CONT: "extern",
    SLURM_BATCH_SCRIPT: "batch",
    SLURM_INTERACTIVE_STEP: "interactive",
    SLURM_PENDING_STEP: "pending",
    NO_VAL: "NO_VAL",
}


def step_name(step_id: int) -> str:
    """'extern', 'batch', '0', ... as Slurm prints step ids."""
    return STEP_NAMES.get(step_id, str(step_id))


class MsgType(IntEnum):
    """slurm_msg_type_t values of the messages this package knows."""

    REQUEST_JOB_ID = 2013
    RESPONSE_JOB_ID = 2014
    REQUEST_NETWORK_CALLERID = 5035
    RESPONSE_NETWORK_CALLERID = 5036
    RESPONSE_SLURM_RC = 8001
    RESPONSE_SLURM_RC_MSG = 8002
    RESPONSE_FORWARD_FAILED = 9001


class HeaderFlags(IntFlag):
    """Header flag bits; receivers test only the ones that change the layout."""

    SLURM_GLOBAL_AUTH_KEY = 0x0001
    SLURMDBD_CONNECTION = 0x0002
    SLURM_MSG_KEEP_BUFFER = 0x0004
    SLURM_DROP_PRIV = 0x0008
    USE_BCAST_NETWORK = 0x0010
    CTLD_QUEUE_PROCESSING = 0x0020
    SLURM_NO_AUTH_CRED = 0x0040
    SLURM_PACK_ADDRS = 0x0080


class AuthPlugin(IntEnum):
    """Auth plugin ids that precede the credential."""

    AUTH_NONE = 100
    AUTH_MUNGE = 101
    AUTH_JWT = 102
    AUTH_SLURM = 103

    @property
    def plugin_name(self) -> str:
        return "auth/" + self.name[5:].lower()


class HashType(IntEnum):
    """First byte of the credential payload: which hash binds it to the body."""

    NONE = 1
    K12 = 2
    SHA256 = 3
    SHA3 = 4
