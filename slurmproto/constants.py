"""Slurm's numbers that are the same in every release 22.05 to 26.05 (slurm.h, msg_type.h, stepd_api.h).

Which release has which of them (step requests, layouts) is in `versions`.
"""

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


class StepRequest(IntEnum):
    """step_msg_t values (the int that starts every slurmstepd request) that slurmproto.stepd sends."""

    REQUEST_CONNECT = 0
    REQUEST_SLUID = 1  # 25.11+ (a defunct value before)
    REQUEST_STATE = 5
    REQUEST_PID_IN_CONTAINER = 8
    REQUEST_DAEMON_PID = 9
    REQUEST_STEP_UID = 20
    REQUEST_ADD_EXTERN_PID = 22
    REQUEST_X11_DISPLAY = 23
    REQUEST_GET_NS_FD = 26
    REQUEST_GET_NS_FDS = 28  # 25.11+


class OtherStepRequest(IntEnum):
    """The other step_msg_t values (and slurm msg types) a slurmstepd dispatches in some release."""

    REQUEST_SIGNAL_CONTAINER = 4
    REQUEST_ATTACH = 7
    REQUEST_STEP_SUSPEND = 10
    REQUEST_STEP_RESUME = 11
    REQUEST_STEP_TERMINATE = 12
    REQUEST_STEP_TASK_INFO = 14
    REQUEST_STEP_LIST_PIDS = 15
    REQUEST_STEP_RECONFIGURE = 16
    REQUEST_STEP_STAT = 17
    REQUEST_STEP_COMPLETION = 18
    REQUEST_STEP_MEM_LIMITS = 19
    REQUEST_STEP_NODEID = 21
    REQUEST_GETPW = 24
    REQUEST_GETGR = 25
    REQUEST_GETHOST = 27
    REQUEST_GET_BPF_TOKEN = 29  # 25.11+
    REQUEST_STEP_UPDATE_MEM_LIMITS = 30  # 26.05+
    REQUEST_JOB_USAGE = 31  # 26.05+
    # From the slurm_msg_type_t enum (msg_type.h), same numbers 22.05 to 26.05.
    REQUEST_JOB_NOTIFY = 4022
    # The stepmgr relays, in the switch of 24.05 to 25.05 (25.11+: only on a stepmgr extern step).
    REQUEST_JOB_STEP_INFO = 2005
    REQUEST_JOB_SBCAST_CRED = 4023
    REQUEST_HET_JOB_ALLOC_INFO = 4027
    REQUEST_JOB_STEP_CREATE = 5001
    REQUEST_CANCEL_JOB_STEP = 5005
    REQUEST_UPDATE_JOB_STEP = 5007
    REQUEST_STEP_LAYOUT = 5021
    SRUN_TIMEOUT = 7002
    SRUN_NODE_FAIL = 7003
    SRUN_JOB_COMPLETE = 7004
