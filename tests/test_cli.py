"""slurm-callerid's argument handling, its errors, and `decode` on captured and fresh frames."""

from __future__ import annotations

import io
import json
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
    (["10.0.0.1", "1", "10.0.0.2", "22", "--conf", "/nonexistent/slurm.conf"], "no such file"),
])
def test_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLURM_CONF", str(_conf(tmp_path)))
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def _conf(tmp_path: Path, port: int = 1) -> Path:
    path = tmp_path / "slurm.conf"
    path.write_text(f"SlurmdPort={port}\nTCPTimeout=1\nMessageTimeout=1\n")
    return path


def test_json_error(capsys: pytest.CaptureFixture[str], munged: Munged, tmp_path: Path) -> None:
    rc = main(["--json", "--conf", str(_conf(tmp_path)), "--munge-socket", str(munged.socket),
               "--protocol-version", "22.05", "127.0.0.1", "1", "127.0.0.1", "2"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1 and result["error_type"] == "ConnectError" and "refused" in result["error"]


def test_no_config_uses_defaults(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                 munged: Munged) -> None:
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setattr("slurmproto.conf.DEFAULT_SEARCH_PATHS", ())
    rc = main(["-v", "--port", "1", "--munge-socket", str(munged.socket), "--protocol-version",
               str(SLURM_22_05), "127.0.0.1", "1", "127.0.0.1", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "no slurm.conf found" in err and "using defaults" in err
