"""slurm-callerid's argument handling, its errors, and `decode` on captured and fresh frames."""

from __future__ import annotations

import io
import json
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurmproto.auth import payload_hash
from slurmproto.cli import main
from slurmproto.codec import encode_frame, sign_and_encode
from slurmproto.messages import NetworkCallerIdResponse
from slurmproto.munge import MungeContext
from slurmproto.versions import SLURM_22_05, SLURM_26_05
from tests.support.munged import Munged
from tests.test_golden import FRAMES, VECTORS

REPO = Path(__file__).resolve().parents[1]


def _decode(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, object]:
    rc = main(["decode", *args])
    return rc, json.loads(capsys.readouterr().out)


def test_decode_every_vector(capsys: pytest.CaptureFixture[str]) -> None:
    [capture] = sorted(VECTORS.glob("*.json"))
    rc, frames = _decode(capsys, "--no-munge", str(capture))
    assert rc == 0 and isinstance(frames, list) and len(frames) == len(FRAMES)
    for frame, (_, recorded, raw) in zip(frames, FRAMES, strict=True):
        assert frame["size"] == len(raw)
        assert frame["header"]["msg_type"] == recorded["header"]["msg_type"]
        assert frame["header"]["msg_type_name"] == recorded["header"]["msg_type_name"]
        assert frame["auth"]["plugin"] == "auth/munge"
        assert frame["auth"]["credential_length"] == len(recorded["auth"]["cred"]) + 1
        assert frame["body_hex"] == recorded["body_hex"]
        for name, value in recorded["body"].items():
            if name in frame["body"] and name not in ("ip_src", "ip_dst"):
                assert frame["body"][name] == value


def test_decode_hex_from_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    raw = FRAMES[0][2]
    spaced = " ".join(raw.hex()[i:i + 2] for i in range(0, len(raw.hex()), 2))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(spaced.encode() + b"\n")))
    rc, frame = _decode(capsys, "--no-munge")
    assert rc == 0 and frame["body"]["source"] == "127.0.0.1"  # type: ignore[index]


def test_decode_raw_file_with_bad_frame(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(FRAMES[0][2][:-3])
    rc, result = _decode(capsys, "--no-munge", "--raw", str(path))
    assert rc == 1 and result["error_type"] == "TruncatedFrame"  # type: ignore[index]


def test_decode_http(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "http.bin"
    path.write_bytes(b"HTTP/1.1 405 NOT ALLOWED\r\n\r\n")
    rc, result = _decode(capsys, "--no-munge", "--raw", str(path))
    assert rc == 1 and result["error_type"] == "HttpReply" and "405" in result["error"]  # type: ignore[index]


def test_decode_checks_credentials(capsys: pytest.CaptureFixture[str], tmp_path: Path, munged: Munged) -> None:
    reply = NetworkCallerIdResponse(5, 0, "node1", 0, 0, 0xFFFFFFFE)
    with MungeContext(munged.socket) as munge:
        good = sign_and_encode(reply, SLURM_26_05, munge.encode)
        credential = munge.encode(payload_hash(reply.encode(SLURM_26_05), reply.MSG_TYPE)).decode()
        none_credential = munge.encode(b"\x01\x13\xac").decode()
    other_body = NetworkCallerIdResponse(6, 0, "node1").encode(SLURM_26_05)
    tampered = encode_frame(reply, SLURM_26_05, credential=credential, body=other_body)
    unbound = encode_frame(reply, SLURM_26_05, credential=none_credential, body=other_body)
    path = tmp_path / "frames.hex"
    path.write_text(good.hex() + "\n")
    rc, frame = _decode(capsys, "--munge-socket", str(munged.socket), str(path))
    assert rc == 0
    assert frame["munge"]["uid"] == 0 and frame["munge"]["hash_ok"] is True  # type: ignore[index]
    assert frame["body"]["step_id"] == 0  # type: ignore[index]
    path.write_bytes(tampered)
    rc, frame = _decode(capsys, "--raw", "--munge-socket", str(munged.socket), str(path))
    assert frame["munge"]["hash_ok"] is False and "K12" in frame["munge"]["hash"]  # type: ignore[index]
    path.write_bytes(unbound)  # the 3-byte "no hash" payload binds only the message type
    rc, frame = _decode(capsys, "--raw", "--munge-socket", str(munged.socket), str(path))
    assert frame["munge"]["hash_ok"] is True and "NONE" in frame["munge"]["hash"]  # type: ignore[index]


def test_decode_foreign_credential(capsys: pytest.CaptureFixture[str], munged: Munged) -> None:
    """The captured credentials come from another munge key: the reason is shown, not a crash."""
    [capture] = sorted(VECTORS.glob("*.json"))
    rc, frames = _decode(capsys, "--munge-socket", str(munged.socket), str(capture))
    assert rc == 0
    assert {f["munge"]["error_type"] for f in frames} == {"CredInvalid"}  # type: ignore[union-attr,index]


@pytest.mark.parametrize("argv", [[], ["10.0.0.1"], ["10.0.0.1", "x", "10.0.0.2", "22"],
                                  ["10.0.0.1", "1", "10.0.0.2", "22", "5"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["nonsense", "1", "10.0.0.2", "22"], "not an IPv4 or IPv6 address"),
    (["10.0.0.1", "1", "10.0.0.2", "22", "6"], "10.0.0.1 is not an IPv6 address"),
    (["10.0.0.1", "1", "10.0.0.2", "22", "--protocol-version", "21.99"], "unknown Slurm release"),
    (["10.0.0.1", "70000", "10.0.0.2", "22"], "port '70000' is not a number between 1 and 65535"),
    (["10.0.0.1", "1", "::1", "22"], "addresses of different families: 10.0.0.1 and ::1"),
    (["--timeout", "nan", "10.0.0.1", "1", "10.0.0.2", "22"], "'nan' is not a positive number of seconds"),
])
def test_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Usage errors: exit 2, argparse's usage, then one line with the reason."""
    monkeypatch.setenv("SLURM_CONF", str(_conf(tmp_path)))
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err
    assert err.splitlines()[-1].startswith("slurm-callerid: error: ") and message in err.splitlines()[-1]


def test_missing_conf_is_a_local_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["10.0.0.1", "1", "10.0.0.2", "22", "--conf", "/nonexistent/slurm.conf"]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and "remote slurmd" not in err and len(err.splitlines()) == 1


RUN = "import sys; sys.argv[0] = 'slurm-callerid'; from slurmproto.cli import run; run()"
"""What the console script does: main(), then os._exit() with main's status once stdout is flushed."""


@pytest.mark.parametrize("stdout", ["pipe", "closed"])
def test_the_console_script_flushes_before_it_exits(stdout: str) -> None:
    argv = [sys.executable, "-c", RUN, "--json", *QUERY, "--conf", "/nonexistent/slurm.conf"]
    if stdout == "closed":  # a reader gone before the first byte (`| true`): status 1, no traceback
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            assert proc.wait(timeout=30) == 1 and proc.stderr.read() == b""
        return
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["error_type"] == "ConfError" and proc.stderr == ""


def _conf(tmp_path: Path, port: int = 1) -> Path:
    path = tmp_path / "slurm.conf"
    path.write_text(f"SlurmdPort={port}\nTCPTimeout=1\nMessageTimeout=1\n")
    return path


def test_json_error(capsys: pytest.CaptureFixture[str], munged: Munged, tmp_path: Path) -> None:
    rc = main(["--json", "--conf", str(_conf(tmp_path)), "--munge-socket", str(munged.socket),
               "--protocol-version", "22.05", "127.0.0.1", "1", "127.0.0.1", "2"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1 and result["error_type"] == "ConnectError" and "refused" in result["error"]


def test_communication_parameters_reach_the_payload_check(capsys: pytest.CaptureFixture[str], munged: Munged,
                                                          tmp_path: Path) -> None:
    """CommunicationParameters=block_null_hash: a reply whose credential has no payload hash is refused."""
    import socket

    from tests.support.peers import ScriptedPeer

    def answer(conn: socket.socket, request: bytes) -> None:
        with MungeContext(munged.socket) as munge:
            credential = munge.encode(b"").decode()
        conn.sendall(encode_frame(NetworkCallerIdResponse(77, 0, "node7"), SLURM_22_05, credential=credential))
        conn.close()

    with ScriptedPeer(answer) as peer:
        conf = tmp_path / "slurm.conf"
        conf.write_text(f"SlurmdPort={peer.port}\nCommunicationParameters=block_null_hash\n")
        rc = main(["--json", "--conf", str(conf), "--munge-socket", str(munged.socket), "--protocol-version",
                   "22.05", "127.0.0.1", "40000", "127.0.0.1", "22"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1 and result["error_type"] == "HashMismatch" and "block_null_hash" in result["error"]


def test_no_config_uses_defaults(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                 munged: Munged) -> None:
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setattr("slurmproto.conf.DEFAULT_SEARCH_PATHS", ())
    rc = main(["-v", "--port", "1", "--munge-socket", str(munged.socket), "--protocol-version",
               str(SLURM_22_05), "127.0.0.1", "1", "127.0.0.1", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "no slurm.conf found" in err and "using defaults" in err


# --- no input ends in a traceback -------------------------------------------------------------------

QUERY = ["127.0.0.1", "40000", "127.0.0.1", "22"]
BATTERY: dict[str, tuple[list[str], int]] = {
    "no-arguments": ([], 2),
    "unknown-option": (["--bogus", *QUERY], 2),
    "port-zero": (["127.0.0.1", "0", "127.0.0.1", "22"], 2),
    "port-65536": (["127.0.0.1", "40000", "127.0.0.1", "65536"], 2),
    "port-negative": (["127.0.0.1", "-1", "127.0.0.1", "22"], 2),
    "port-huge": (["127.0.0.1", "9" * 5000, "127.0.0.1", "22"], 2),
    "port-arabic-digits": (["127.0.0.1", "\u0662\u0662", "127.0.0.1", "22"], 2),
    "address-empty": (["", "40000", "127.0.0.1", "22"], 2),
    "address-five-octets": (["1.2.3.4.5", "40000", "127.0.0.1", "22"], 2),
    "address-not-utf8": (["127.0.0.\udcff", "40000", "127.0.0.1", "22"], 2),
    "address-huge": (["1" * 100000, "40000", "127.0.0.1", "22"], 2),
    "family-mismatch": ([*QUERY, "6"], 2),
    "family-bad": ([*QUERY, "5"], 2),
    "timeout-zero": (["--timeout", "0", *QUERY], 2),
    "timeout-negative": (["--timeout", "-1", *QUERY], 2),
    "timeout-inf": (["--timeout", "inf", *QUERY], 2),
    "timeout-text": (["--timeout", "soon", *QUERY], 2),
    "version-unknown": (["--protocol-version", "21.99", *QUERY], 2),
    "version-too-big": (["--protocol-version", "0x10000", *QUERY], 2),
    "version-arabic": (["--protocol-version", "\u0662\u0664.\u0661\u0661", *QUERY], 2),
    "slurmd-port-zero": (["--port", "0", *QUERY], 2),
    "conf-missing": (["--conf", "{missing}", *QUERY], 1),
    "conf-directory": (["--conf", "{dir}", *QUERY], 1),
    "munged-missing": (["--munge-socket", "{missing}", "--port", "1", *QUERY], 1),
    "munged-not-a-socket": (["--munge-socket", "{empty}", "--port", "1", *QUERY], 1),
    "batch-unknown-option": (["batch", "--bogus"], 2),
    "batch-missing": (["batch", "{missing}"], 1),
    "batch-directory": (["batch", "{dir}"], 1),
    "batch-dev-zero": (["batch", "/dev/zero"], 1),
    "batch-long-line": (["batch", "{long_line}"], 1),
    "batch-bad-lines": (["batch", "{bad_lines}"], 1),
    "decode-unknown-option": (["decode", "--bogus"], 2),
    "decode-timeout-zero": (["decode", "--timeout", "0", "{frame}"], 2),
    "decode-missing": (["decode", "--no-munge", "{missing}"], 1),
    "decode-directory": (["decode", "--no-munge", "{dir}"], 1),
    "decode-dev-zero": (["decode", "--no-munge", "/dev/zero"], 1),
    "decode-empty": (["decode", "--no-munge", "{empty}"], 1),
    "decode-nested-json": (["decode", "--no-munge", "{nested}"], 1),
    "decode-deep-json": (["decode", "--no-munge", "{deep}"], 0),
    "decode-huge-number": (["decode", "--no-munge", "{huge_number}"], 1),
    "decode-bad-hex": (["decode", "--no-munge", "--hex", "{bad_hex}"], 1),
    "decode-odd-hex": (["decode", "--no-munge", "{odd_hex}"], 1),
    "decode-bad-hex-in-json": (["decode", "--no-munge", "{bad_json_hex}"], 1),
    "decode-truncated": (["decode", "--no-munge", "--raw", "{truncated}"], 1),
    "decode-binary": (["decode", "--no-munge", "{binary}"], 1),
    "decode-munged-missing": (["decode", "--munge-socket", "{missing}", "{frame}"], 1),
    "decode-conf-missing": (["decode", "--conf", "{missing}", "{frame}"], 1),
    **{f"decode-pcap-{name}": (["decode", "--no-munge", "--pcap", path], 1)
       for name, path in (("missing", "{missing}"), ("directory", "{dir}"), ("dev-zero", "/dev/zero"),
                          ("empty", "{empty}"), ("binary", "{binary}"), ("nested", "{nested}"),
                          ("frame", "{frame}"))},
    "decode-pcap-and-file": (["decode", "--pcap", "{frame}", "{frame}"], 2),
    "decode-pcap-port-text": (["decode", "--pcap", "{frame}", "--port", "x"], 2),
}


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    frame = FRAMES[0][2]
    deep = '{"a": ' * 500 + f'{{"frames_hex": ["{frame.hex()}"]}}' + "}" * 500
    contents: dict[str, bytes] = {
        "empty": b"", "nested": b"[" * 100000, "deep": deep.encode(), "huge_number": b"[" + b"1" * 5000 + b"]",
        "bad_hex": b"zz", "odd_hex": b"abc", "bad_json_hex": b'{"x_hex": ["zz"]}', "truncated": frame[:-3],
        "binary": b"\x00\xff" * 100, "frame": frame, "long_line": b"1" * 100000 + b"\n",
        "bad_lines": b"\xff\xfe garbage\n127.0.0.1 99999 127.0.0.1 22\n127.0.0.1 1 ::1 2\n",
    }
    paths = {"missing": str(tmp_path / "missing"), "dir": str(tmp_path)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    return paths


def run_main(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(("argv", "code"), BATTERY.values(), ids=BATTERY.keys())
def test_no_traceback_for_any_input(argv: list[str], code: int, bad_files: dict[str, str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "test.conf"
    conf.write_text(f"AuthInfo=socket={tmp_path / 'no-munged'}\nSlurmdPort=1\nTCPTimeout=1\nMessageTimeout=1\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    started = time.monotonic()
    assert run_main([arg.format(**bad_files) for arg in argv]) == code
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    if code == 1:  # a local failure: one line, and no slurmd was asked
        assert len(err.splitlines()) <= 1 and "remote slurmd" not in err
    if code == 2:
        assert err.splitlines()[-1].startswith("slurm-callerid") and ": error: " in err.splitlines()[-1]


@pytest.mark.parametrize("command", [[], ["batch"], ["decode"]], ids=["query", "batch", "decode"])
def test_help_and_version(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from slurmproto import __version__

    assert run_main([*command, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: {' '.join(['slurm-callerid', *command])} ")
    assert run_main([*command, "--version"]) == 0
    assert capsys.readouterr().out == f"slurm-callerid {__version__}\n"


def test_unexpected_exception_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def broken(argv: list[str]) -> int:
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr("slurmproto.cli._dispatch", broken)
    assert main(QUERY) == 1
    assert capsys.readouterr().err == "slurm-callerid: internal error: RuntimeError: first line second line\n"


def test_permission_denied_is_not_no_such_file(shared_dir: Path) -> None:
    """As a user who cannot read the file: the reason is 'Permission denied', never 'No such file'."""
    from tests.support.procs import runnable_by_others

    if not runnable_by_others(sys.executable):
        pytest.skip(f"{sys.executable} cannot be run by other users (run the tests through tox)")
    secret = shared_dir / "root-only"
    secret.write_bytes(FRAMES[0][2])
    secret.chmod(0o600)
    conf = shared_dir / "slurm.conf"
    conf.write_text("SlurmdPort=1\n")
    conf.chmod(0o644)
    nobody = pwd.getpwnam("nobody")
    for argv, expected in ((["decode", "--no-munge", str(secret)], f"cannot read {secret}: Permission denied"),
                           (["batch", str(secret)], f"{secret}: Permission denied")):
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from slurmproto.cli import main; "
                f"sys.exit(main({argv!r}))")
        proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=30,
                              user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/",
                              env={"SLURM_CONF": str(conf)}, check=False)
        assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
        assert "No such file" not in proc.stderr and "Traceback" not in proc.stderr


NO_LIBMUNGE = """
import sys
import slurmproto.munge as munge
munge._LIBRARY_NAMES = ("libmunge-not-installed.so.2",)
from slurmproto.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("argv", "stdout"), [
    ([*QUERY, "--port", "1"], ""),
    (["decode", "{frame}"], '"error_type": "MungeUnavailable"'),
], ids=["query", "decode"])
def test_no_libmunge(argv: list[str], stdout: str, bad_files: dict[str, str], tmp_path: Path) -> None:
    conf = tmp_path / "test.conf"
    conf.write_text("SlurmdPort=1\n")
    proc = subprocess.run([sys.executable, "-c", NO_LIBMUNGE, *(a.format(**bad_files) for a in argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=30, env={"SLURM_CONF": str(conf)}, check=False)
    assert proc.returncode == 1 and stdout in proc.stdout
    assert "libmunge-not-installed.so.2" in proc.stderr and "apt-get install libmunge2" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "remote slurmd" not in proc.stderr and "munge: " in proc.stderr


def test_decode_applies_communication_parameters(munged: Munged, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`decode` checks a credential's payload as slurm.conf's CommunicationParameters say, like a query."""
    from slurmproto.codec import sign_and_encode
    from slurmproto.messages import NetworkCallerIdResponse
    from slurmproto.munge import MungeContext
    from slurmproto.versions import SLURM_24_11

    results = {}
    for name, extra in (("default", ""), ("blocked", "CommunicationParameters=block_null_hash\n")):
        with MungeContext(munged.socket) as munge:  # a credential each: munged refuses a replayed one
            frame = sign_and_encode(NetworkCallerIdResponse(7, 0, "n1"), SLURM_24_11,
                                    lambda payload: munge.encode(b""))
        capture = tmp_path / f"{name}.hex"
        capture.write_text(frame.hex())
        conf = tmp_path / f"{name}.conf"
        conf.write_text(f"AuthInfo=socket={munged.socket}\n{extra}")
        _, frame_json = _decode(capsys, "--conf", str(conf), "--hex", str(capture))
        results[name] = frame_json["munge"]  # type: ignore[index]
    assert results["default"]["hash_ok"] is True
    assert results["blocked"]["hash_ok"] is False and "block_null_hash" in results["blocked"]["hash"]
