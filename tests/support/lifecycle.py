"""The tests' daemon harnesses share the installed package's start/stop shape (fake_slurmd/lifecycle.py)."""

from fake_slurmd.lifecycle import Daemons

__all__ = ["Daemons"]
