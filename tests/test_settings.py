"""One settings object from slurm.conf: defaults, keys, overrides, trusted uids, and what it costs to import."""

from __future__ import annotations

import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurmproto.conf import ConfError, parse_text
from slurmproto.errors import LocalTimeout
from slurmproto.settings import DEFAULTS, PayloadChecks, Settings

REPO = Path(__file__).resolve().parent.parent


def settings_of(text: str, **overrides: object) -> Settings:
    return Settings.from_conf(parse_text(text, env={}), **overrides)  # type: ignore[arg-type]


def test_no_slurm_conf_is_slurms_defaults() -> None:
    """Slurm's documented defaults (slurm.conf(5)): SlurmdPort 6818, TCPTimeout 2, MessageTimeout 10, ..."""
    for settings in (Settings.from_conf(None), settings_of(""), DEFAULTS):
        assert (settings.port, settings.connect_timeout, settings.message_timeout, settings.timeout) == \
            (6818, 2.0, 10.0, 12.0)
        assert (settings.auth_type, settings.munge_socket, settings.munge_ttl) == ("auth/munge", None, None)
        assert settings.checks == PayloadChecks(False, False)
        assert (settings.slurm_user, settings.slurmd_user) == ("root", "root")


def test_every_key_is_read() -> None:
    settings = settings_of("SlurmdPort=7000\nTCPTimeout=3\nMessageTimeout=20\nAuthType=auth/slurm\n"
                           "AuthInfo=socket=/run/m.sock,ttl=60\nSlurmUser=slurm\nSlurmdUser=daemon\n"
                           "CommunicationParameters=block_null_hash,block_zero_hash\n")
    assert (settings.port, settings.connect_timeout, settings.message_timeout, settings.timeout) == \
        (7000, 3.0, 20.0, 23.0)
    assert (settings.auth_type, settings.munge_socket, settings.munge_ttl) == ("auth/slurm", "/run/m.sock", 60)
    assert settings.checks == PayloadChecks(block_null_hash=True, block_zero_hash=True)
    assert (settings.slurm_user, settings.slurmd_user) == ("slurm", "daemon")


@pytest.mark.parametrize(("parameters", "checks"), [
    ("block_null_hash", (True, False)),
    ("Block_Zero_Hash", (False, True)),
    ("disable_http,block_zero_hash", (False, True)),
    ("disable_http", (False, False)),
    ("block_null_hashes", (False, False)),
])
def test_communication_parameters_become_payload_checks(parameters: str, checks: tuple[bool, bool]) -> None:
    assert settings_of(f"CommunicationParameters={parameters}\n").checks == PayloadChecks(*checks)


def test_callerid_options_carry_the_checks() -> None:
    options = settings_of("CommunicationParameters=block_null_hash\nSlurmdPort=7000\n").callerid_options()
    assert options["checks"] == PayloadChecks(True, False) and options["port"] == 7000


@pytest.mark.parametrize(("overrides", "port", "socket"), [
    ({}, 7000, "/conf.sock"),
    ({"port": 7001}, 7001, "/conf.sock"),
    ({"munge_socket": "/opt.sock"}, 7000, "/opt.sock"),
    ({"port": None, "munge_socket": ""}, 7000, "/conf.sock"),  # not given: slurm.conf's
])
def test_overrides_win(overrides: dict[str, object], port: int, socket: str) -> None:
    settings = settings_of("SlurmdPort=7000\nAuthInfo=socket=/conf.sock\n", **overrides)
    assert (settings.port, settings.munge_socket) == (port, socket)


def test_timeout_overrides() -> None:
    settings = settings_of("TCPTimeout=5\n", connect_timeout=0.5, message_timeout=1.5)
    assert (settings.connect_timeout, settings.message_timeout, settings.timeout) == (0.5, 1.5, 2.0)


# --- trusted uids: root and SlurmdUser ----------------------------------------------------------------


def test_root_is_trusted_without_asking_nss(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_nss(name: str) -> pwd.struct_passwd:
        raise AssertionError("NSS asked")

    monkeypatch.setattr(pwd, "getpwnam", no_nss)
    assert settings_of("").trusted_uids(time.monotonic() + 1) == frozenset({0})
    assert settings_of("SlurmdUser=root\n").trusted_uids(time.monotonic() + 1) == frozenset({0})


@pytest.mark.parametrize(("user", "uid"), [("nobody", pwd.getpwnam("nobody").pw_uid), ("4242", 4242)])
def test_slurmd_user_is_trusted(user: str, uid: int) -> None:
    assert settings_of(f"SlurmdUser={user}\n").trusted_uids(time.monotonic() + 2) == frozenset({0, uid})


def test_unknown_slurmd_user_is_an_error() -> None:
    with pytest.raises(ConfError, match="SlurmdUser 'no-such-user': no such user"):
        settings_of("SlurmdUser=no-such-user\n").trusted_uids(time.monotonic() + 2)


def test_a_hung_user_database_costs_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    def hung(name: str) -> pwd.struct_passwd:
        time.sleep(5)
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", hung)
    settings = settings_of("SlurmdUser=slurm\n")
    started = time.monotonic()
    with pytest.raises(LocalTimeout, match="SlurmdUser 'slurm'"):
        settings.trusted_uids(started + 0.3)
    assert time.monotonic() - started < 1.0


# --- cheap to import ---------------------------------------------------------------------------------


def test_importing_settings_loads_no_codec() -> None:
    """The hook may build its settings before deciding on the RPC: no construct, MUNGE, client or argparse."""
    code = ("import sys, slurmproto.settings; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('construct', 'Crypto') "
            "or m in ('slurmproto.munge', 'slurmproto.client', 'slurmproto.codec', 'argparse')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert proc.stdout.strip() == ""


# --- every entry point takes them from here ----------------------------------------------------------


def test_the_hook_asks_with_slurm_confs_settings(tmp_path: Path) -> None:
    from adopt.gather import Gatherer
    from adopt.options import parse_options

    conf = tmp_path / "slurm.conf"
    conf.write_text("SlurmdPort=7000\nTCPTimeout=3\nMessageTimeout=4\nAuthInfo=socket=/conf.sock,ttl=60\n"
                    "CommunicationParameters=block_zero_hash\n")
    opts, problems = parse_options([f"conf={conf}", "munge_socket=/opt.sock", "protocol_version=24.11"])
    gatherer = Gatherer(opts, {}, lambda level, text: None, adopt_pid=1, deadline=time.monotonic() + 2)
    options = gatherer.rpc_options()
    assert not problems and options == {
        "port": 7000, "connect_timeout": 3.0, "message_timeout": 4.0, "munge_socket": "/opt.sock", "munge_ttl": 60,
        "checks": PayloadChecks(block_zero_hash=True), "version": 0x2A00, "start_version": None,
        "trusted_uids": frozenset({0})}


def test_the_cli_asks_with_slurm_confs_settings(tmp_path: Path) -> None:
    from slurmproto.cli import _settings, batch_parser

    conf = tmp_path / "slurm.conf"
    conf.write_text("SlurmdPort=7000\nTCPTimeout=3\nMessageTimeout=4\nCommunicationParameters=block_null_hash\n")
    args = batch_parser().parse_args(["--conf", str(conf), "--protocol-version", "24.11", "--port", "7001"])
    started = time.monotonic()
    options, deadline = _settings(args, lambda text: None, started)
    assert deadline == started + 7.0 and options == {
        "port": 7001, "connect_timeout": 3.0, "message_timeout": 4.0, "munge_socket": None, "munge_ttl": None,
        "checks": PayloadChecks(block_null_hash=True), "version": 0x2A00, "start_version": None, "timeout": 7.0,
        "trusted_uids": frozenset({0})}
