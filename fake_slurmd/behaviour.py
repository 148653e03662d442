"""How each slurmd release reacts to what it receives: version windows, refusals, auth and body checks.

Pure data: the slurmd part of each row of the release table (`slurmproto.versions.SlurmdRules`); the
server looks up the release's row and acts on it.
"""

from __future__ import annotations

from slurmproto.versions import RELEASES, Refusal, Release, SlurmdRules, release_answering

__all__ = ["Refusal", "SlurmdRules", "BEHAVIOURS", "behaviour_of", "release_for"]


def behaviour_of(release: Release) -> SlurmdRules:
    """How a slurmd of `release` reads requests and refuses them: its row says, field by field."""
    return release.slurmd


BEHAVIOURS = {r.name: behaviour_of(r) for r in RELEASES}


def release_for(version: int) -> Release | None:
    """In "answer any client" mode: the release whose own version the request uses, or the newest one
    below it; None below 22.05's window or above 26.05's (no slurmd speaks those)."""
    return release_answering(version)
