"""A test-only PAM module that puts variables into the PAM environment, for attacking pam_exec hooks.

    account required /tmp/.../pam_sat_putenv.so /tmp/.../inject.env

Each line of the file (NAME=VALUE, raw bytes up to the newline) is handed to pam_putenv() in the account
stage (and in the auth stage, which sshd runs for keyboard-interactive logins); a line NAME alone removes
the variable (a second instance after the module under test keeps the variables out of the session). A
missing file sets nothing; an unreadable one fails the stack, so a broken injection cannot pass for a
clean login.

Why a module of our own: pam_env, the obvious tool, sets variables in pam_sm_setcred only (its
pam_sm_authenticate does nothing), and sshd calls pam_setcred after the account stack; with public-key
logins sshd does not run the auth stack at all. Nothing stock puts a variable in front of the account
stack, so the module is compiled with gcc against libpam0g-dev on first use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

MODULE_NAME = "pam_sat_putenv.so"
HEADER = Path("/usr/include/security/pam_modules.h")

SOURCE = r"""
/* Test-only PAM module (tests/support/pam_inject.py): pam_putenv() every line of FILE. */
#define PAM_SM_ACCOUNT
#define PAM_SM_AUTH
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <security/pam_ext.h>
#include <security/pam_modules.h>

static int put_file(pam_handle_t *pamh, int argc, const char **argv)
{
    if (argc != 1) {
        pam_syslog(pamh, LOG_ERR, "usage: pam_sat_putenv.so FILE");
        return PAM_SERVICE_ERR;
    }
    FILE *f = fopen(argv[0], "re");
    if (f == NULL)
        return errno == ENOENT ? PAM_SUCCESS : PAM_SYSTEM_ERR;
    char *line = NULL;
    size_t size = 0;
    ssize_t len;
    int status = PAM_SUCCESS;
    while (status == PAM_SUCCESS && (len = getline(&line, &size, f)) != -1) {
        if (len > 0 && line[len - 1] == '\n')
            line[len - 1] = '\0';
        if (line[0] == '\0')
            continue;
        status = pam_putenv(pamh, line);
        if (status == PAM_BAD_ITEM && strchr(line, '=') == NULL)
            status = PAM_SUCCESS; /* removing what is not there */
    }
    if (ferror(f))
        status = PAM_SYSTEM_ERR;
    free(line);
    fclose(f);
    return status;
}

PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    return put_file(pamh, argc, argv);
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    return put_file(pamh, argc, argv);
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh; (void)flags; (void)argc; (void)argv;
    return PAM_SUCCESS;
}
"""


def need_compiler() -> str | None:
    """A skip reason when the module cannot be built here, else None."""
    if shutil.which("gcc") is None:
        return "building the test PAM module needs gcc (apt-get install gcc)"
    if not HEADER.exists():
        return f"building the test PAM module needs {HEADER} (apt-get install libpam0g-dev)"
    return None


def build(directory: Path) -> Path:
    """Compile the module into `directory` (which PAM, running as root, must be able to read)."""
    source = directory / "pam_sat_putenv.c"
    module = directory / MODULE_NAME
    source.write_text(SOURCE)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(module),
                    str(source), "-lpam"], check=True, capture_output=True, timeout=60)
    os.chmod(module, 0o755)
    return module


def write_env(path: Path, variables: Mapping[str, str | bytes | None]) -> None:
    """The file the module reads: NAME=VALUE lines (bytes values go in as they are); None removes NAME."""
    lines = []
    for name, value in variables.items():
        raw = value if isinstance(value, bytes) else b"" if value is None else value.encode()
        if b"\n" in raw or b"\0" in raw or not name or "=" in name or "\n" in name:
            raise ValueError(f"{name}={value!r} cannot be one line of NAME=VALUE")
        lines.append(name.encode() + (b"" if value is None else b"=" + raw) + b"\n")
    path.write_bytes(b"".join(lines))
    os.chmod(path, 0o644)
