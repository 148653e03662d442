"""Slurm's wire protocol for the network callerid RPC and the slurmstepd socket calls.

Submodules are imported on demand (this package is on a per-login fast path): `codec`, `messages`,
`header`, `auth`, `munge`, `client`, `stepd`, `conf`, `versions`, `errors`.
"""

__version__ = "0.1.0"
