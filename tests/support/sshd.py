"""The tests' sshd is the installed package's (fake_slurmd/sshd.py), shared with the pytest plugin."""

from fake_slurmd.sshd import PAM_DIR, PRIVSEP_DIR, PROGRAMS, SERVICE_PREFIX, SSH, SSH_KEYGEN, SSHD, Sshd

__all__ = ["PAM_DIR", "PRIVSEP_DIR", "PROGRAMS", "SERVICE_PREFIX", "SSH", "SSHD", "SSH_KEYGEN", "Sshd"]
