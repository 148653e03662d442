"""Against Debian's real Slurm 24.11 and 26.05 daemons (tests/support/chroot_cluster.py): what the release
table says of them, asked of the daemons themselves.

Our slurm-callerid runs from the host's tox env inside the cluster's network namespace; the real
`scontrol callerid` runs inside the chroot. The stepd client talks to the real slurmstepd of the job's
extern step through its socket in the chroot's spool dir.
"""

from __future__ import annotations

import json
import pwd

import pytest

from slurmproto.stepd import StepdClient, StepdRefused
from slurmproto.versions import Refusal, Release, release_named
from tests.support.chroot_cluster import ChrootCluster, HeldConnection
from tests.support.fixtures import LiveClusters
from tests.support.munged import Munged
from tests.support.procs import installed_or_skip

INDETERMINATE = "remote job id indeterminate"
OWNER = "alice"
# How our client words each refusal of the release table (slurmproto.errors).
REFUSAL_TEXT = {
    Refusal.CLOSE: "closed the connection without answering",
    Refusal.HTTP_405: "'HTTP/1.1 405 NOT ALLOWED'",
    Refusal.RC_1007: "error 1007",
}


@pytest.fixture(scope="module", params=["24.11", "26.05"])
def peer(request: pytest.FixtureRequest) -> ChrootCluster:
    cluster: ChrootCluster = request.getfixturevalue(f"slurm_{request.param.replace('.', '')}")
    return cluster


@pytest.fixture(scope="module")
def row(peer: ChrootCluster) -> Release:
    return release_named(peer.release)


@pytest.fixture(scope="module")
def held(peer: ChrootCluster, live_clusters: LiveClusters) -> HeldConnection:
    return live_clusters.held(peer.release, peer.auth)


@pytest.fixture(scope="module")
def cli() -> str:
    return installed_or_skip("slurm-callerid", for_other_users=True)


def _tuple(conn: HeldConnection, src_port: int | None = None) -> list[str]:
    return [conn.client[0], str(src_port or conn.client[1]), conn.server[0], str(conn.server[1])]


def _ours(peer: ChrootCluster, cli: str, args: list[str], user: str | None = None) -> tuple[int, str, str]:
    proc = peer.run_host([cli, "--munge-socket", str(peer.munge_socket), *args], user=user)
    return proc.returncode, proc.stdout, proc.stderr


def _theirs(peer: ChrootCluster, args: list[str], user: str | None = None) -> tuple[int, str, str]:
    proc = peer.run(["scontrol", "callerid", *args], user=user, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _ask_pinned(peer: ChrootCluster, cli: str, conn: HeldConnection, version: int) -> dict[str, object]:
    code, out, err = _ours(peer, cli, ["--json", "--protocol-version", f"0x{version:04x}", *_tuple(conn)])
    result: dict[str, object] = json.loads(out)
    assert (code == 0) == ("job_id" in result), (code, out, err)
    return result


@pytest.mark.parametrize("user", [None, OWNER], ids=["root", "owner"])
def test_names_the_job_like_scontrol(peer: ChrootCluster, held: HeldConnection, cli: str, user: str | None) -> None:
    ours, theirs = _ours(peer, cli, _tuple(held), user), _theirs(peer, _tuple(held), user)
    assert ours[:2] == theirs[:2] == (0, f"{held.job_id} {peer.node_name}\n"), (ours, theirs)


@pytest.mark.parametrize(("user", "unknown"), [(None, True), (OWNER, True), ("bob", False)],
                         ids=["unknown-root", "unknown-owner", "other-user"])
def test_indeterminate_like_scontrol(peer: ChrootCluster, held: HeldConnection, cli: str, user: str | None,
                                     unknown: bool) -> None:
    # Port 1 on the job's side: no socket of the namespace has it.
    args = _tuple(held, 1 if unknown else None)
    ours, theirs = _ours(peer, cli, args, user), _theirs(peer, args, user)
    assert ours[:2] == theirs[:2] == (1, ""), (ours, theirs)
    assert INDETERMINATE in ours[2] and INDETERMINATE in theirs[2]


@pytest.mark.parametrize("end", ["oldest", "own"])
def test_accepted_versions_answer(peer: ChrootCluster, row: Release, held: HeldConnection, cli: str,
                                  end: str) -> None:
    version = row.min_version if end == "oldest" else row.protocol_version
    result = _ask_pinned(peer, cli, held, version)
    assert result["job_id"] == held.job_id and result["node_name"] == peer.node_name
    assert result["protocol_version"] == f"0x{version:04x}"  # the reply echoes the request's version
    assert result["signer_uid"] == 0
    # The reply layout follows the request's version: a step id only from 25.11's on.
    assert (result["step_id"] is not None) == release_named(str(result["release"])).layout.step_id_replies


@pytest.mark.parametrize("side", ["below", "above"])
def test_refused_versions_as_the_table_says(peer: ChrootCluster, row: Release, held: HeldConnection, cli: str,
                                            side: str) -> None:
    version = row.min_version - 0x100 if side == "below" else row.protocol_version + 0x100
    assert not row.accepts(version)
    result = _ask_pinned(peer, cli, held, version)
    assert result["error_type"] == "Refused"
    assert REFUSAL_TEXT[row.slurmd.bad_version] in str(result["error"]), result


@pytest.mark.parametrize("offset", [-0x100, 0, 0x300], ids=["below-min", "min", "own"])
def test_stepd_handshake_and_step_uid(peer: ChrootCluster, row: Release, held: HeldConnection,
                                      offset: int) -> None:
    version = row.min_version + offset
    path = str(peer.extern_socket(held.job_id))
    if not row.stepd_accepts(version):
        with pytest.raises(StepdRefused):
            StepdClient(path, version=version)
        return
    with StepdClient(path, version=version) as stepd:
        assert stepd.protocol_version == row.protocol_version
        assert stepd.release is row
        assert stepd.step_uid() == pwd.getpwnam(OWNER).pw_uid


def test_foreign_credential_refused_as_the_table_says(peer: ChrootCluster, row: Release, held: HeldConnection,
                                                      cli: str, munged: Munged) -> None:
    # A credential of another munge key (the session's munged): what the row calls bad_cred_verify.
    proc = peer.run_host([cli, "--munge-socket", str(munged.socket), "--json", "--protocol-version",
                          f"0x{row.protocol_version:04x}", *_tuple(held)])
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and "job_id" not in result, result
    assert REFUSAL_TEXT[row.slurmd.bad_cred_verify] in str(result["error"]), result
