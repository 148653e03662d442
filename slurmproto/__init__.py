"""Slurm's wire protocol for the network callerid RPC and the slurmstepd socket calls.

Submodules are imported on demand (this package is on a per-login fast path): `codec`, `messages`,
`header`, `auth`, `munge`, `client`, `stepd`, `conf`, `versions`, `errors`.
"""

__version__ = "0.1.0"


def package_version() -> str:
    """The installed distribution's version (what --version prints), else this source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slurm-adopt-toolkit")
    except PackageNotFoundError:
        return __version__
