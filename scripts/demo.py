"""Demo of the whole adoption flow on a simulated compute node (run as root, on loopback only).

It starts a private munged, a simulated node (fake_slurmd) where the user alice has two jobs, and a real
sshd on a loopback port whose PAM account stack runs slurm-adopt through pam_exec. Then:
  1. alice logs in over ssh from a process of her job 2: the hook asks the callerid RPC which job the
     connection comes from, and puts sshd's process into job 2's extern step;
  2. bob, who has no job on the node, is refused with pam_slurm_adopt's message;
  3. `slurm-adopt --explain` shows, step by step, the decision for a connection from alice's job 1;
  4. on a simulated cluster of two nodes (each in a network namespace of its own; on 127.0.0.N when
     namespaces cannot be made), alice's job 3 spans node1 and node2 and her job 4 runs on node2 only:
     from job 3's process on node1 she logs into node2's sshd, whose hook asks node1's slurmd and adopts
     the login into job 3 on node2.
Everything it started is stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fake_slurmd import FakeSlurmd, NodeSpec, Scenario  # noqa: E402
from fake_slurmd.munged import Munged  # noqa: E402
from fake_slurmd.scenario import Job  # noqa: E402
from fake_slurmd.sshd import login_from_job  # noqa: E402
from tests.support.deploy import hook_command  # noqa: E402
from tests.support.procs import ensure_user  # noqa: E402
from tests.support.sshd import Sshd  # noqa: E402
from tests.support.syslog import DevLogCatcher, DevLogUnavailable  # noqa: E402


def say(text: str = "") -> None:
    print(text, flush=True)


COMMAND = "echo logged in as $(id -un) on $(hostname)"


def show_syslog(devlog: DevLogCatcher | None, mark: int) -> None:
    if devlog:
        for record in devlog.messages(ident="slurm-adopt", since=mark):
            if not record.message.startswith("debug"):
                say(f"   syslog: {record.message}")


def hook_sshd(stack: contextlib.ExitStack, hook: str, conf: Path, nodename: str, users: list[str],
              **options: Any) -> tuple[Sshd, str]:
    """A started sshd whose account stack runs the hook for `nodename`, and the hook's line."""
    line = (f"required pam_exec.so stdout quiet {hook} conf={conf} nodename={nodename} service={{service}} "
            "log_level=debug")
    return stack.enter_context(Sshd(["required pam_unix.so", line], users=users, **options)), line


def single_node(stack: contextlib.ExitStack, munged: Munged, hook: str, shared: Path,
                devlog: DevLogCatcher | None) -> None:
    """Steps 1 to 3: node1 with alice's jobs 1 and 2, and an sshd running the hook."""
    fake = stack.enter_context(FakeSlurmd(Scenario([NodeSpec("node1", port=0)]), munge_socket=str(munged.socket)))
    fake.add_job({"job_id": 1, "user": "alice", "start_time": 1_700_000_000})
    fake.add_job({"job_id": 2, "user": "alice", "start_time": 1_700_000_100})
    conf = fake.slurm_conf(shared / "slurm.conf")
    say(f"simulated node1: slurmd port {fake.port}, jobs 1 and 2 of alice, step sockets in {fake.spool_dir}")
    sshd, line = hook_sshd(stack, hook, conf, "node1", ["alice", "bob"])
    say(f"sshd on 127.0.0.1:{sshd.port}, PAM service {sshd.service}:")
    say(f"    account required pam_unix.so\n    account {line.replace('{service}', sshd.service)}")
    say()

    say("1. alice logs in from a process of her job 2")
    mark = devlog.mark() if devlog else 0
    result = login_from_job(fake, sshd, 2, "alice", COMMAND)
    say(f"   ssh exit {result.returncode}: {result.stdout.strip()}")
    say(f"   job 2's extern step received REQUEST_ADD_EXTERN_PID of {fake.adopted(2)} (sshd's process); "
        f"job 1's: {fake.adopted(1)}")
    show_syslog(devlog, mark)
    say()

    say("2. bob, who has no job on node1, tries to log in")
    result = sshd.ssh("bob", "true")
    shown = [line for line in result.stderr.splitlines() if "Access denied" in line]
    say(f"   ssh exit {result.returncode}; bob reads: {shown[0] if shown else result.stderr.strip()}")
    say()

    say("3. an admin asks why a connection from alice's job 1 would be let in (nothing is adopted)")
    listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    conn = stack.enter_context(fake.connect_from_job(1, *listener.getsockname(), user="alice"))
    stack.enter_context(listener.accept()[0])
    connection = f"{conn.local[0]} {conn.local[1]} {conn.remote[0]} {conn.remote[1]}"
    admin = str(Path(sys.executable).parent / "slurm-adopt")  # at a shell, the console script
    argv = [admin, "--explain", "--user", "alice", "--connection", connection, f"conf={conf}", "nodename=node1",
            f"munge_socket={munged.socket}"]
    say(f"   $ slurm-adopt --explain --user alice --connection '{connection}' conf=... nodename=node1")
    explain = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    say("\n".join("   " + line for line in explain.stdout.splitlines()))
    say()


def two_nodes(stack: contextlib.ExitStack, munged: Munged, hook: str, shared: Path, devlog: DevLogCatcher | None,
              alice: int) -> None:
    """Step 4: a cluster of node1 and node2, and a login from node1 to node2's sshd."""
    say("4. a cluster: alice's job 3 spans node1 and node2, her job 4 runs on node2 only")
    jobs = {3: Job(3, alice, start_time=1_700_000_200),
            4: Job(4, alice, start_time=1_700_000_300, nodes=("node2",))}
    scenario = Scenario([NodeSpec("node1"), NodeSpec("node2")], jobs, network="auto")
    cluster = stack.enter_context(FakeSlurmd(scenario, munge_socket=str(munged.socket)))
    node1, node2 = cluster.node("node1"), cluster.node("node2")
    where = "each in a network namespace of its own" if cluster.network == "namespaces" else "on loopback"
    say(f"   node1 on {node1.address}, node2 on {node2.address} ({where}), slurmd port {cluster.port}")
    conf = cluster.slurm_conf(shared / "cluster.conf")
    sshd, _ = hook_sshd(stack, hook, conf, "node2", ["alice"], listen=[node2.address], netns=node2.netns)
    say(f"   node2's sshd on {node2.address}:{sshd.port}; from job 3's process on node1, "
        f"ssh alice@{node2.address}")
    mark = devlog.mark() if devlog else 0
    result = login_from_job(cluster, sshd, 3, "alice", COMMAND, node="node1", host=node2.address)
    say(f"   ssh exit {result.returncode}: {result.stdout.strip() or result.stderr.strip()}")
    say(f"   adopted into job 3 on node2: {cluster.adopted(3, 'node2')}; on node1: {cluster.adopted(3, 'node1')}; "
        f"job 4: {cluster.adopted(4)}")
    show_syslog(devlog, mark)


def main() -> int:
    if os.geteuid() != 0:
        say("the demo starts munged and sshd and writes a PAM service file: run it as root")
        return 1
    hook = hook_command(str(Path(sys.executable).parent.parent))  # the README's pam.d form
    alice = ensure_user("alice").pw_uid
    ensure_user("bob")
    shared = Path(tempfile.mkdtemp(prefix="slurm-adopt-demo-"))
    shared.chmod(0o755)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, shared, ignore_errors=True)
        munged = stack.enter_context(Munged())
        say(f"munged: private key and socket in {munged.base}")
        try:
            devlog: DevLogCatcher | None = stack.enter_context(DevLogCatcher())
        except DevLogUnavailable:
            devlog = None
        single_node(stack, munged, hook, shared, devlog)
        two_nodes(stack, munged, hook, shared, devlog, alice)
    say("\nStopped everything the demo started.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
