"""Scenario values of the wrong type or out of range: one ScenarioError naming the file and the field's path."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fake_slurmd.scenario import MAX_SCENARIO_BYTES, NAMESPACE_TYPES, X11, Scenario, ScenarioError, job_from_dict
from tests.support.procs import installed_or_skip

JOB = "[[jobs]]\njob_id = 5\nuser = 'root'\n"
NODE = "[[nodes]]\nname = 'a'\n"
JOB_ID = "expected a job id (an integer from 1 to 4294967279)"
PORT = "expected a port (an integer from 0 to 65535)"
PID = "expected a pid (an integer from 1 to 4194304)"
UID = "expected a uid (an integer from 0 to 4294967294)"
SECONDS = "expected seconds (a number above 0, at most 86400)"
CLUSTER = "expected a cluster name (letters, digits, '.', '_', '-'; at most 63)"
TIME = "expected a time (epoch seconds from 0, or a date-time)"
DISPLAY = "expected a display number (an integer from 0 to 2147483647)"

TOML_CASES = [
    ("job id a string", JOB + "[[jobs]]\njob_id = 'x'\nuser = 'root'\n", f"jobs[1].job_id: {JOB_ID}, got 'x'"),
    ("job id negative", "[[jobs]]\njob_id = -1\nuser = 'root'\n", f"jobs[0].job_id: {JOB_ID}, got -1"),
    ("job id huge", "[[jobs]]\njob_id = 99999999999999999\nuser = 'root'\n",
     f"jobs[0].job_id: {JOB_ID}, got 99999999999999999"),
    ("job id NO_VAL", "[[jobs]]\njob_id = 4294967294\nuser = 'root'\n", f"jobs[0].job_id: {JOB_ID}, got 4294967294"),
    ("job id a bool", "[[jobs]]\njob_id = true\nuser = 'root'\n", f"jobs[0].job_id: {JOB_ID}, got true"),
    ("job id a float", "[[jobs]]\njob_id = 5.0\nuser = 'root'\n", f"jobs[0].job_id: {JOB_ID}, got 5.0"),
    ("job id a date", "[[jobs]]\njob_id = 2026-01-01\nuser = 'root'\n",
     f"jobs[0].job_id: {JOB_ID}, got a date (2026-01-01)"),
    ("job id missing", "[[jobs]]\nuser = 'root'\n", "jobs[0].job_id: missing"),
    ("port a bool", NODE + "port = false\n", f"nodes[0].port: {PORT}, got false"),
    ("port a string", NODE + "port = '6818'\n", f"nodes[0].port: {PORT}, got '6818'"),
    ("port negative", NODE + "port = -1\n", f"nodes[0].port: {PORT}, got -1"),
    ("port a list", NODE + "port = [1]\n", f"nodes[0].port: {PORT}, got a list"),
    ("nodes a table", "[nodes]\nname = 'a'\n", "nodes: expected a list, got a table"),
    ("nodes a string", "nodes = 'a'\n", "nodes: expected a list, got 'a'"),
    ("node a list", "nodes = [[1, 2]]\n", "nodes[0]: expected a table, got a list"),
    ("jobs a table", "[jobs]\njob_id = 5\n", "jobs: expected a list, got a table"),
    ("job a number", "jobs = [5]\n", "jobs[0]: expected a table, got 5"),
    ("unknown job key", JOB + "jobid = 6\n", "jobs[0].jobid: unknown key 'jobid' (known: adopt_cgroup, cgroups, "
                                             "environ, job_id, namespaces, nodes, pids, start_time, steps, trees, "
                                             "user, x11)"),
    ("x11 a number", JOB + "x11 = 10\n", "jobs[0].x11: expected a table, got 10"),
    ("x11 display missing", JOB + "x11 = {xauthority = '/x'}\n", "jobs[0].x11.display: missing"),
    ("x11 display a string", JOB + "x11 = {display = '10'}\n", f"jobs[0].x11.display: {DISPLAY}, got '10'"),
    ("x11 display negative", JOB + "x11 = {display = -1}\n", f"jobs[0].x11.display: {DISPLAY}, got -1"),
    ("x11 display huge", JOB + "x11 = {display = 2147483648}\n", f"jobs[0].x11.display: {DISPLAY}, got 2147483648"),
    ("x11 unknown key", JOB + "x11 = {display = 1, screen = 0}\n",
     "jobs[0].x11.screen: unknown key 'screen' (known: display, xauthority)"),
    ("xauthority relative", JOB + "x11 = {display = 1, xauthority = '.Xauthority'}\n",
     "jobs[0].x11.xauthority: expected an absolute path, got '.Xauthority'"),
    ("xauthority too long", JOB + "x11 = {display = 1, xauthority = '/" + "x" * 4095 + "'}\n",
     "jobs[0].x11.xauthority: expected a path of at most 4095 bytes, got '/" + "x" * 55 + "..."),
    ("namespaces a list", JOB + "namespaces = ['/proc/1/ns/mnt']\n",
     "jobs[0].namespaces: expected a table, got a list"),
    ("namespace kind unknown", JOB + "namespaces = {mount = '/proc/1/ns/mnt'}\n",
     "jobs[0].namespaces.mount: unknown key 'mount' (known: cgroup, ipc, mnt, net, pid, time, user, uts)"),
    ("namespace path relative", JOB + "namespaces = {mnt = 'ns/mnt'}\n",
     "jobs[0].namespaces.mnt: expected an absolute path, got 'ns/mnt'"),
    ("unknown node key", NODE + "host = 'x'\n",
     "nodes[0].host: unknown key 'host' (known: address, name, netns, port)"),
    ("node name missing", "[[nodes]]\nport = 1\n", "nodes[0].name: missing"),
    ("node name a number", "[[nodes]]\nname = 1\n",
     "nodes[0].name: expected a node name (letters, digits, '.', '_', '-'; at most 63), got 1"),
    ("node name a path", "[[nodes]]\nname = '../x'\n",
     "nodes[0].name: expected a node name (letters, digits, '.', '_', '-'; at most 63), got '../x'"),
    ("node name empty", "[[nodes]]\nname = ''\n",
     "nodes[0].name: expected a node name (letters, digits, '.', '_', '-'; at most 63), got ''"),
    ("address a host name", NODE + "address = 'localhost'\n",
     "nodes[0].address: expected an IP address, got 'localhost'"),
    ("address a number", NODE + "address = 127\n", "nodes[0].address: expected an IP address, got 127"),
    ("netns a number", NODE + "netns = 1\n", "nodes[0].netns: expected a path, got 1"),
    ("steps a string", JOB + "steps = 'extern'\n", "jobs[0].steps: expected a list, got 'extern'"),
    ("steps empty", JOB + "steps = []\n", "jobs[0].steps: expected at least one step, got a list"),
    ("step repeats", JOB + "steps = ['extern', 'batch', 'extern']\n", "jobs[0].steps[2]: step 'extern' appears twice"),
    ("step negative", JOB + "steps = [-1]\n", "jobs[0].steps[0]: expected a step (extern, batch, interactive or an "
                                              "integer from 0 to 4294967295), got -1"),
    ("pids an int", JOB + "pids = 5\n", "jobs[0].pids: expected a list, got 5"),
    ("pid a bool", JOB + "pids = [true]\n", f"jobs[0].pids[0]: {PID}, got true"),
    ("pid zero", JOB + "pids = [1, 0]\n", f"jobs[0].pids[1]: {PID}, got 0"),
    ("tree pid huge", JOB + "trees = [4194305]\n", f"jobs[0].trees[0]: {PID}, got 4194305"),
    ("cgroup relative", JOB + "cgroups = ['slurm/job_5']\n", "jobs[0].cgroups[0]: expected an absolute path, "
                                                              "got 'slurm/job_5'"),
    ("cgroup a number", JOB + "cgroups = [5]\n", "jobs[0].cgroups[0]: expected an absolute path, got 5"),
    ("environ a string", JOB + "environ = 'yes'\n", "jobs[0].environ: expected true or false, got 'yes'"),
    ("adopt_cgroup a bool", JOB + "adopt_cgroup = true\n", "jobs[0].adopt_cgroup: expected an absolute path, got true"),
    ("job nodes a string", JOB + "nodes = 'node1'\n", "jobs[0].nodes: expected a list, got 'node1'"),
    ("job node a number", JOB + "nodes = [1]\n",
     "jobs[0].nodes[0]: expected a node name (letters, digits, '.', '_', '-'; at most 63), got 1"),
    ("user a bool", "[[jobs]]\njob_id = 5\nuser = true\n", "jobs[0].user: expected a user name or uid, got true"),
    ("user a list", "[[jobs]]\njob_id = 5\nuser = ['root']\n", "jobs[0].user: expected a user name or uid, got a list"),
    ("uid negative", "[[jobs]]\njob_id = 5\nuser = -1\n", f"jobs[0].user: {UID}, got -1"),
    ("uid huge", "[[jobs]]\njob_id = 5\nuser = 4294967295\n", f"jobs[0].user: {UID}, got 4294967295"),
    ("user with NUL", "[[jobs]]\njob_id = 5\nuser = \"ro\\u0000ot\"\n",
     "jobs[0].user: expected a user name or uid without NUL bytes, got 'ro\\x00ot'"),
    ("start_time garbage", JOB + "start_time = 'soon'\n", f"jobs[0].start_time: {TIME}, got 'soon'"),
    ("start_time a bool", JOB + "start_time = true\n", f"jobs[0].start_time: {TIME}, got true"),
    ("start_time nan", JOB + "start_time = nan\n", f"jobs[0].start_time: {TIME}, got nan"),
    ("start_time negative", JOB + "start_time = -5\n", f"jobs[0].start_time: {TIME}, got -5"),
    ("start_time a bare time", JOB + "start_time = 10:00:00\n", f"jobs[0].start_time: {TIME}, got a time (10:00:00)"),
    ("slurm_user a table", "[slurm_user]\nname = 'slurm'\n", "slurm_user: expected a user name or uid, got a table"),
    ("client_timeout a string", "client_timeout = '10'\n", f"client_timeout: {SECONDS}, got '10'"),
    ("client_timeout zero", "client_timeout = 0\n", f"client_timeout: {SECONDS}, got 0"),
    ("client_timeout negative", "client_timeout = -1.5\n", f"client_timeout: {SECONDS}, got -1.5"),
    ("client_timeout inf", "client_timeout = inf\n", f"client_timeout: {SECONDS}, got inf"),
    ("client_timeout a bool", "client_timeout = true\n", f"client_timeout: {SECONDS}, got true"),
    ("release a number", "release = 24.11\n", "release: expected a release (22.05, 23.02, 23.11, 24.05, 24.11, "
                                              "25.05, 25.11, 26.05), got 24.11"),
    ("spool_dir a number", "spool_dir = 5\n", "spool_dir: expected a path, got 5"),
    ("spool_dir empty", "spool_dir = ''\n", "spool_dir: expected a path (not empty), got ''"),
    ("munge_socket a list", "munge_socket = ['/run/munge']\n", "munge_socket: expected a path, got a list"),
    ("cluster a number", "cluster = 1\n", f"cluster: {CLUSTER}, got 1"),
    ("cluster a path", "cluster = 'a/b'\n", f"cluster: {CLUSTER}, got 'a/b'"),
    ("cluster empty", "cluster = ''\n", f"cluster: {CLUSTER}, got ''"),
]

NODE_B = "[[nodes]]\nname = 'b'\n"
AUTO = "network = 'auto'\n"
CLUSTER_CASES = [  # how nodes, jobs and a cluster's network fit together
    ("job on an unknown node", NODE + NODE_B + "port = 0\n" + JOB + "nodes = ['b', 'c']\n",
     "jobs[0].nodes[1]: no node 'c' in the scenario (nodes: a, b)"),
    ("job on a node without nodes", JOB + "nodes = ['node2']\n",
     "jobs[0].nodes[0]: no node 'node2' in the scenario (nodes: node1)"),
    ("same address and port", NODE + NODE_B, "nodes[1].address: 127.0.0.1 port 6818 is a's already"),
    ("same address, both a free port", NODE + "port = 0\n" + NODE_B + "port = 0\n",
     "nodes[1].address: 127.0.0.1 port 0 (shared) is a's already"),
    ("a wildcard address and another", NODE + "address = '0.0.0.0'\n" + NODE_B + "address = '127.0.0.2'\n",
     "nodes[1].address: 127.0.0.2 port 6818 is a's already"),
    ("same IPv6 address, spelt differently", NODE + "address = '::1'\n" + NODE_B + "address = '0::1'\n",
     "nodes[1].address: 0::1 port 6818 is a's already"),
    ("network unknown", "network = 'bridge'\n",
     "network: expected a network (host, namespaces, loopback, auto), got 'bridge'"),
    ("network a bool", "network = true\n", "network: expected a network (host, namespaces, loopback, auto), got true"),
    ("subnet without a cluster network", "subnet = '10.1.0.0/24'\n",
     "subnet: a subnet needs network = \"namespaces\" or \"auto\", not 'host'"),
    ("subnet on loopback", "network = 'loopback'\nsubnet = '10.1.0.0/24'\n",
     "subnet: a subnet needs network = \"namespaces\" or \"auto\", not 'loopback'"),
    ("subnet with host bits", AUTO + "subnet = '10.1.0.1/24'\n",
     "subnet: expected an IPv4 subnet like 10.78.0.0/24, got '10.1.0.1/24'"),
    ("subnet IPv6", AUTO + "subnet = 'fd78::/64'\n", "subnet: expected an IPv4 subnet like 10.78.0.0/24, "
                                                         "got 'fd78::/64'"),
    ("subnet a number", AUTO + "subnet = 24\n", "subnet: expected an IPv4 subnet like 10.78.0.0/24, got 24"),
    ("subnet too small", AUTO + "subnet = '10.1.0.0/31'\n",
     "subnet: expected a subnet of at least 4 addresses, not loopback, multicast or 0.0.0.0, got '10.1.0.0/31'"),
    ("subnet loopback", AUTO + "subnet = '127.0.0.0/24'\n",
     "subnet: expected a subnet of at least 4 addresses, not loopback, multicast or 0.0.0.0, got '127.0.0.0/24'"),
    ("more nodes than the subnet has", AUTO + "subnet = '10.1.0.0/30'\n" + NODE + NODE_B + "[[nodes]]\nname = 'c'\n",
     "nodes: 3 nodes: at most 2 in subnet 10.1.0.0/30"),
    ("more nodes than a cluster may have", AUTO + "subnet = '10.0.0.0/16'\n"
     + "".join(f"[[nodes]]\nname = 'n{i}'\n" for i in range(257)),
     "nodes: 257 nodes: at most 256 in subnet 10.0.0.0/16"),
    ("cluster node with an address", AUTO + NODE + "address = '10.78.0.9'\n",
     "nodes[0].address: with network = 'auto' the nodes' addresses are assigned"),
    ("cluster node with a port", "network = 'loopback'\n" + NODE + "port = 6818\n",
     "nodes[0].port: with network = 'loopback' the nodes' ports are assigned"),
    ("cluster node with a netns", "network = 'namespaces'\n" + NODE + "netns = 'x'\n",
     "nodes[0].netns: with network = 'namespaces' the nodes' namespaces are assigned"),
]


def test_nodes_that_may_share_an_address(tmp_path: Path) -> None:
    """Another port, or another namespace: each listens where the other does not."""
    path = tmp_path / "scenario.toml"
    path.write_text(NODE + NODE_B + "port = 6819\n[[nodes]]\nname = 'c'\nnetns = 'ns1'\n"
                    "[[nodes]]\nname = 'd'\naddress = '::1'\n[[nodes]]\nname = 'e'\naddress = '127.0.0.2'\n")
    assert [n.name for n in Scenario.load(path).nodes] == ["a", "b", "c", "d", "e"]


def test_cluster_network_keys(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(AUTO + "subnet = '10.9.8.0/29'\n" + NODE + NODE_B + JOB + "nodes = ['a', 'b']\n")
    scenario = Scenario.load(path)
    assert (scenario.network, scenario.subnet, [n.name for n in scenario.nodes]) == ("auto", "10.9.8.0/29", ["a", "b"])
    assert scenario.jobs[5].nodes == ("a", "b")


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in TOML_CASES + CLUSTER_CASES],
                         ids=[c[0] for c in TOML_CASES + CLUSTER_CASES])
def test_wrong_type_in_toml(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path)
    assert str(info.value) == f"{path}: {message}"


JSON_CASES = [
    ("top level a list", "[1, 2]", "expected a table, got a list"),
    ("top level a string", '"nodes"', "expected a table, got 'nodes'"),
    ("job id a float", '{"jobs": [{"job_id": 1e3, "user": "root"}]}', f"jobs[0].job_id: {JOB_ID}, got 1000.0"),
    ("port a bool", '{"nodes": [{"name": "a", "port": true}]}', f"nodes[0].port: {PORT}, got true"),
    ("client_timeout NaN", '{"client_timeout": NaN}', f"client_timeout: {SECONDS}, got nan"),
    ("jobs a table", '{"jobs": {"job_id": 5}}', "jobs: expected a list, got a table"),
    ("xauthority a lone surrogate", '{"jobs": [{"job_id": 5, "user": "root", "x11": {"display": 1, '
     '"xauthority": "/\\ud800"}}]}', "jobs[0].x11.xauthority: expected a path in UTF-8, got '/\\ud800'"),
    ("huge integer", '{"jobs": [{"job_id": 1' + "0" * 40 + ', "user": "root"}]}',
     f"jobs[0].job_id: {JOB_ID}, got an integer of 133 bits"),
    ("too deep", '{"nodes": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_wrong_type_in_json(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_null_means_the_default(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text('{"release": null, "nodes": [{"name": "a", "port": null}], '
                    '"jobs": [{"job_id": 5, "user": "root", "steps": null}]}')
    scenario = Scenario.load(path)
    assert scenario.release is None and scenario.nodes[0].port == 6818 and len(scenario.jobs[5].steps) == 2


def test_x11_and_namespaces(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(JOB + "x11 = {display = 10, xauthority = '/home/a/.Xauthority'}\n"
                    "namespaces = {net = '/run/netns/a', mnt = '/proc/1/ns/mnt'}\n")
    job = Scenario.load(path).jobs[5]
    assert job.x11 == X11(10, "/home/a/.Xauthority")
    assert job.namespaces == ((NAMESPACE_TYPES["net"], "/run/netns/a"), (0x00020000, "/proc/1/ns/mnt"))
    plain = job_from_dict({"job_id": 6, "user": "root", "x11": {"display": 11}})
    assert plain.x11 == X11(11, None) and plain.namespaces == ()
    assert job_from_dict({"job_id": 7, "user": "root"}).x11 is None


def test_cluster_name(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text("cluster = 'peer1'\n")
    assert Scenario.load(path).cluster == "peer1"
    path.write_text(JOB)
    assert Scenario.load(path).cluster is None


def test_without_nodes_a_free_port(tmp_path: Path) -> None:
    """No [[nodes]]: one node1 on a free port, never slurmd's 6818."""
    path = tmp_path / "scenario.toml"
    path.write_text(JOB)
    assert [(n.name, n.address, n.port) for n in Scenario.load(path).nodes] == [("node1", "127.0.0.1", 0)]


def test_wrong_type_through_add_job() -> None:
    with pytest.raises(ScenarioError) as info:
        job_from_dict({"job_id": "x", "user": "root"})
    assert str(info.value) == f"job: job_id: {JOB_ID}, got 'x'"


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "scenario.toml"
    os.mkfifo(path)
    return path


def _big(tmp_path: Path) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_bytes(b"#" * (MAX_SCENARIO_BYTES + 1))
    return path


def _latin1(tmp_path: Path) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_bytes(b"# caf\xe9\n")
    return path


@pytest.mark.parametrize(("make", "message"), [
    (_fifo, "not a regular file"),
    (lambda tmp: tmp, "not a regular file"),
    (lambda tmp: Path("/dev/zero"), "not a regular file"),
    (_big, "larger than 16 MiB"),
    (_latin1, "not UTF-8 text (byte 5)"),
], ids=["fifo", "directory", "dev-zero", "too big", "not utf-8"])
def test_unreadable_scenario_files(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path)
    assert str(info.value) == f"{path}: {message}"
    assert time.monotonic() - started < 5  # a FIFO without a writer is not waited on


@pytest.mark.parametrize(("text", "message"), [
    ("[[jobs]]\njob_id = 'x'\nuser = 'root'\n", f"jobs[0].job_id: {JOB_ID}, got 'x'"),
    (NODE + "port = true\n", f"nodes[0].port: {PORT}, got true"),
    ("jobs = [[1]]\n", "jobs[0]: expected a table, got a list"),
    ("x = " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
], ids=["job id a string", "port a bool", "job a list", "too deep"])
def test_cli_scenario_error_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    script = installed_or_skip("fake-slurmd")
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    proc = subprocess.run([script, "--scenario", str(path)], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"fake-slurmd: {path}: {message}\n")


@pytest.mark.parametrize(("listen", "message"), [
    ("node1", "--listen: 'node1': expected NAME=ADDRESS:PORT"),
    ("node1=127.0.0.1:²", "--listen: 'node1=127.0.0.1:²': expected NAME=ADDRESS:PORT"),
    ("node1=127.0.0.1:70000", "--listen: 'node1=127.0.0.1:70000': expected a port from 0 to 65535, got 70000"),
    ("a/b=127.0.0.1:0", "--listen: 'a/b=127.0.0.1:0': expected a node name (letters, digits, '.', '_', '-'; "
                        "at most 63), got 'a/b'"),
    ("node1=example.org:0", "--listen: 'node1=example.org:0': expected an IP address, got 'example.org'"),
])
def test_cli_bad_listen(listen: str, message: str) -> None:
    script = installed_or_skip("fake-slurmd")
    proc = subprocess.run([script, "--listen", listen], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"fake-slurmd: {message}\n")


def test_cli_bad_cluster() -> None:
    script = installed_or_skip("fake-slurmd")
    proc = subprocess.run([script, "--cluster", "../x"], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"fake-slurmd: --cluster: {CLUSTER}, got '../x'\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "a=127.0.0.1:0", "--listen", "a=127.0.0.2:0"], "--listen: 'a=127.0.0.2:0': node 'a' appears twice"),
    (["--listen", "a=127.0.0.1:0", "--listen", "b=127.0.0.1:0"],
     "--listen: 'b=127.0.0.1:0': 127.0.0.1 port 0 (shared) is a's already"),
    (["--listen", "a=127.0.0.1:0", "--network", "auto"],
     "--network auto: the nodes' addresses are assigned, not --listen's"),
], ids=["name twice", "same address", "listen and network"])
def test_cli_nodes_that_clash(args: list[str], message: str) -> None:
    script = installed_or_skip("fake-slurmd")
    proc = subprocess.run([script, *args], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"fake-slurmd: {message}\n")
