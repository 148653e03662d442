"""The JSON the commands print, real outputs against docs/json-output.schema.json: slurm-callerid --json
(a job, indeterminate, a failure), batch --json lines, decode (frames and a bad one), fake-slurmd
--log-format json (a run and a scenario error). Successes and errors share the one error shape."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fake_slurmd.controller import FakeSlurmd
from tests.support.procs import installed_or_skip

jsonschema = pytest.importorskip("jsonschema", reason="the JSON output test needs jsonschema (pip install '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "json-output.schema.json").read_text())
VECTOR = ROOT / "tests" / "vectors" / "slurm-22.05.8-callerid.json"


def check(kind: str, value: Any) -> None:
    """`value` is a valid output of `kind` (a $defs name of the schema)."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{kind}"}).validate(value)


def is_error(value: Any) -> bool:
    return isinstance(value, dict) and "error" in value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_error_shape_is_not_a_success() -> None:
    """The shared error object validates as an output of every command, and is never taken for a success."""
    error = {"error": "slurmd at 127.0.0.1:1: Connection refused", "error_type": "ConnectError", "rc": None}
    for kind in ("callerid", "decode"):
        check(kind, error)
    with pytest.raises(jsonschema.ValidationError):
        check("callerid_result", error)
    with pytest.raises(jsonschema.ValidationError):
        check("error", {"job_id": 5})


def test_callerid_and_batch_json(fake_slurmd: FakeSlurmd, fake_slurmd_munge_socket: str, tmp_path: Path) -> None:
    script = installed_or_skip("slurm-callerid")
    fake_slurmd.add_job({"job_id": 31, "user": "root"})
    conf = fake_slurmd.slurm_conf(tmp_path / "slurm.conf")
    base = [script, "--json", "--conf", str(conf), "--munge-socket", fake_slurmd_munge_socket, "--timeout", "10"]
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            fake_slurmd.connect_from_job(31, *listener.getsockname()) as conn:
        held = [conn.local[0], str(conn.local[1]), conn.remote[0], str(conn.remote[1])]
        nobody = [conn.remote[0], str(closed_port()), conn.remote[0], str(conn.remote[1])]
        found = subprocess.run([*base, *held], capture_output=True, text=True, timeout=30)
        unknown = subprocess.run([*base, *nobody], capture_output=True, text=True, timeout=30)
        failed = subprocess.run([*base, "--port", str(closed_port()), *held], capture_output=True, text=True,
                                timeout=30)
        queries = "\n".join([" ".join(held), " ".join(nobody), "not a query"]) + "\n"
        batch = subprocess.run([script, "batch", *base[1:]], input=queries, capture_output=True, text=True,
                               timeout=60)
    outputs = []
    for proc, status in ((found, 0), (unknown, 1), (failed, 1)):
        assert proc.returncode == status, proc
        value = json.loads(proc.stdout)
        check("callerid", value)
        outputs.append(value)
    assert outputs[0]["job_id"] == 31 and outputs[0]["node_name"] == "node1"
    assert outputs[1]["job_id"] is None and not is_error(outputs[1])
    assert is_error(outputs[2]) and outputs[2]["local"] is False
    lines = [json.loads(line) for line in batch.stdout.splitlines()]
    assert batch.returncode == 1 and len(lines) == 3, batch
    for line in lines:
        check("callerid", line)
    assert [line.get("job_id") for line in lines[:2]] == [31, None] and is_error(lines[2])
    assert lines[2]["error_type"] == "ValueError"


def test_decode_json(tmp_path: Path) -> None:
    script = installed_or_skip("slurm-callerid")
    frames = subprocess.run([script, "decode", "--no-munge", str(VECTOR)], capture_output=True, text=True, timeout=30)
    assert frames.returncode == 0, frames.stderr
    value = json.loads(frames.stdout)
    check("decode", value)
    assert isinstance(value, list) and not any(is_error(frame) for frame in value)
    truncated = tmp_path / "truncated.hex"
    truncated.write_text("0000000512\n")
    bad = subprocess.run([script, "decode", "--no-munge", "--hex", str(truncated)], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 1
    error = json.loads(bad.stdout)
    check("decode", error)
    assert error["error_type"] == "TruncatedFrame" and error["input_hex"] == "0000000512"


def test_fake_slurmd_json_log(fake_slurmd_munge_socket: str, tmp_path: Path) -> None:
    script = installed_or_skip("fake-slurmd")
    scenario = tmp_path / "node.toml"
    scenario.write_text("[[nodes]]\nname = 'node1'\nport = 0\n[[jobs]]\njob_id = 5\nuser = 'root'\n")
    with subprocess.Popen([script, "--scenario", str(scenario), "--munge-socket", fake_slurmd_munge_socket,
                           "--log-format", "json", "--log-level", "debug"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening node1 127.0.0.1 ")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines() if not line.startswith("fake-slurmd: serving ")]
    assert events, err
    for event in events:
        check("fake_slurmd_log", event)
    scenario.write_text("[[jobs]]\njob_id = 'x'\nuser = 'root'\n")
    bad = subprocess.run([script, "--scenario", str(scenario), "--log-format", "json"], capture_output=True,
                         text=True, timeout=30)
    assert (bad.returncode, bad.stdout) == (2, "")
    [line] = bad.stderr.splitlines()
    event = json.loads(line)
    check("fake_slurmd_log", event)
    assert (event["event"], event["exit_status"], event["error_type"]) == ("not started", 2, "ScenarioError")
    assert event["error"].endswith("jobs[0].job_id: expected a job id (an integer from 1 to 4294967279), got 'x'")
    with pytest.raises(jsonschema.ValidationError):  # a "not started" line without the error's keys
        check("fake_slurmd_log", {"time": 1.0, "level": "error", "event": "not started"})
