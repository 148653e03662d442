"""The private munged the tests start lives in fake_slurmd (its pytest plugin needs one too)."""

from fake_slurmd.munged import MUNGED, MUNGEKEY, Munged

__all__ = ["MUNGED", "MUNGEKEY", "Munged"]
