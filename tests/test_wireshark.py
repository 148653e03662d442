"""The Wireshark dissector (slurmproto/wireshark/slurm.lua): its tables checked against the construct schemas
field by field, and tshark running it on captures built from the vectors and taken from live clusters,
agreeing with `decode --pcap` on every frame's message type, version and job id."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from construct import Construct, FocusedSeq, FormatField, IfThenElse, Padded, Renamed, Subconstruct

from slurmproto import header as header_schema
from slurmproto.codec import FrameOptions, encode_frame
from slurmproto.constants import AF_INET, AF_INET6, AuthPlugin, HeaderFlags, MsgType
from slurmproto.header import Forward
from slurmproto.messages import REGISTRY, NetworkCallerIdResponse
from slurmproto.pcap import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, MAX_BUFFERED
from slurmproto.pcapdecode import records
from slurmproto.primitives import PackMem, PackStr, SlurmAddr, SlurmAddrCodec, Typed, WhereLayout
from slurmproto.versions import OLDER_LAYOUT, RELEASES, layout_of, release_named
from tests.support.chroot_cluster import RELEASES as LIVE_RELEASES
from tests.support.chroot_files import AUTHS
from tests.support.fixtures import LiveClusters
from tests.support.live_vectors import callerid_capture, vector_capture, vector_exchanges
from tests.support.packets import conversation, pcap_file

LUA = Path(__file__).resolve().parents[1] / "slurmproto" / "wireshark" / "slurm.lua"
TEXT = LUA.read_text()
OPTIONS = FrameOptions(max_length=MAX_BUFFERED)
EXCHANGES = vector_exchanges()
COMBOS = [(release, auth) for release in LIVE_RELEASES for auth in AUTHS]
ROW = re.compile(r'\{"(\w+)", "(\w+)"(?:, "(\w+)")?\}')


def _table(name: str) -> str:
    """The text of `local NAME = {...}` (tables end with a line holding only "}")."""
    match = re.search(rf"^local {name} = \{{\n(.*?)^\}}", TEXT, re.M | re.S)
    assert match, f"slurm.lua has no table {name}"
    return match.group(1)


def _constant(name: str) -> str:
    match = re.search(rf"^local (?:\w+, )*{name}(?:, \w+)* = (.*)$", TEXT, re.M)
    assert match, f"slurm.lua has no constant {name}"
    names = re.match(r"local ([\w, ]+) =", match.group(0))
    assert names
    index = [n.strip() for n in names.group(1).split(",")].index(name)
    return match.group(1).split("--")[0].split(",")[index].strip()


# -- the tables against the schemas --------------------------------------------------------------------------

CONDITIONS = {"_forwarding": "forwarding", "_has_net_cred": "forward_net_cred", "_has_tree_depth": "forward_tree_depth"}


def _kind(con: Construct) -> tuple[str, str | None]:
    """What slurm.lua calls a schema's field, and the condition it needs."""
    if isinstance(con, Renamed):
        return _kind(con.subcon)
    if isinstance(con, WhereLayout):
        return _kind(con.subcon)[0], con.fact
    if isinstance(con, IfThenElse):
        return _kind(con.thensubcon)[0], CONDITIONS[con.condfunc.__name__]
    if isinstance(con, FormatField):
        return {">H": "u16", ">L": "u32", ">l": "i32", ">Q": "u64"}[con.fmtstr], None
    if isinstance(con, Padded):
        return f"pad{con.length * 8}", None
    if isinstance(con, FocusedSeq):  # PrefixedArray
        return "array", None
    if isinstance(con, Typed) and con.cls is header_schema.Forward:
        return "forward", None
    kinds = {PackStr: "packstr", PackMem: "packmem", SlurmAddrCodec: "slurm_addr"}
    for cls, kind in kinds.items():
        if isinstance(con, cls):
            return kind, None
    if isinstance(con, Subconstruct):  # Default(...) and the like
        return _kind(con.subcon)
    raise AssertionError(f"no slurm.lua kind for {con!r}")


def _fields(struct: Construct) -> list[tuple[str, str, str | None]]:
    out = []
    for sub in struct.subcons:
        kind, fact = _kind(sub)
        out.append((sub.name or fact, kind, fact))
    return out


def _rows(text: str) -> list[tuple[str, str, str | None]]:
    return [(a, b, c or None) for a, b, c in ROW.findall(text)]


def test_releases_and_layouts_follow_the_release_table() -> None:
    rows = re.findall(r"\{(0x[0-9a-f]+), \"([\d.]+)\", (\w+), (\w+), (\w+), (\w+)\}", _table("RELEASES"))
    assert [(int(v, 16), name, *(x == "true" for x in facts)) for v, name, *facts in rows] == \
        [(r.protocol_version, r.name, *r.layout) for r in RELEASES]
    older = re.search(r"^local OLDER_LAYOUT = \{(.*)\}$", TEXT, re.M)
    assert older and [x.strip() == "true" for x in older.group(1).split(",")] == list(OLDER_LAYOUT)
    facts = re.search(r"^local FACTS = \{(.*)\}$", TEXT, re.M)
    assert facts and re.findall(r"(\w+) = (\d)", facts.group(1)) == [
        (name, str(i + 1)) for i, name in enumerate(OLDER_LAYOUT._fields)]


def test_numbers_follow_the_constants() -> None:
    assert dict(re.findall(r"\[(\d+)\] = \"(\w+)\"", _table("MSG_TYPES"))) == {str(m.value): m.name for m in MsgType}
    plugins = re.search(r"^local AUTH_PLUGINS = \{(.*)\}$", TEXT, re.M)
    assert plugins and dict(re.findall(r"\[(\d+)\] = \"([\w/]+)\"", plugins.group(1))) == {
        str(p.value): p.plugin_name for p in AuthPlugin}
    assert int(_constant("SLURM_NO_AUTH_CRED"), 16) == HeaderFlags.SLURM_NO_AUTH_CRED
    assert int(_constant("SLURM_PACK_ADDRS"), 16) == HeaderFlags.SLURM_PACK_ADDRS
    assert (int(_constant("AF_INET")), int(_constant("AF_INET6"))) == (AF_INET, AF_INET6)
    assert eval(_constant("MAX_FRAME").replace(" ", "")) == MAX_BUFFERED


def test_the_header_and_forward_block_follow_the_schema() -> None:
    assert _rows(_table("HEADER")) == [(n, k, f) for n, k, f in _fields(header_schema.HEADER.subcon)]
    assert _rows(_table("FORWARD")) == _fields(header_schema.FORWARD.subcon)


def test_every_body_follows_its_schema() -> None:
    bodies = re.findall(r"^    \[(\d+)\] = \{\n(.*?)^    \},", _table("BODIES"), re.M | re.S)
    assert {int(number): _rows(text) for number, text in bodies} == {
        number: _fields(cls.BODY) for number, cls in REGISTRY.items()}


# -- tshark ------------------------------------------------------------------------------------------------

FIELDS = ["frame.number", "slurm.msg_type", "slurm.version", "slurm.auth.plugin_id", "slurm.job_id",
          "slurm.node_name", "slurm.auth.token.uid"]


def tshark(path: Path, fields: list[str] = FIELDS) -> list[dict[str, list[str]]]:
    """Per packet that carries Slurm frames: each field's values (one per frame in the packet)."""
    binary = shutil.which("tshark")
    if binary is None:
        pytest.skip("tshark is not installed (apt-get install tshark; scripts/setup installs it)")
    argv = [binary, "-n", "-X", f"lua_script:{LUA}", "-r", str(path), "-o", "tcp.reassemble_out_of_order:TRUE",
            "-Y", "slurm", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;",
            *[x for name in fields for x in ("-e", name)]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "Lua" not in proc.stderr, proc.stderr
    malformed = subprocess.run([*argv[:argv.index("-Y")], "-Y", "slurm.malformed || _ws.malformed"],
                               capture_output=True, text=True, timeout=120, check=False)
    assert malformed.stdout == "", malformed.stdout
    rows = []
    for line in proc.stdout.splitlines():
        values = line.split("\t")
        rows.append({name: values[i].split(";") if values[i] else [] for i, name in enumerate(fields)})
    return rows


def _by_packet(found: list[dict[str, Any]]) -> list[tuple[int, list[int], list[int]]]:
    packets: dict[int, tuple[list[int], list[int]]] = {}
    for record in found:
        types, versions = packets.setdefault(record["packet"], ([], []))
        types.append(record["header"]["msg_type"])
        versions.append(record["header"]["version"])
    return [(n, *packets[n]) for n in sorted(packets)]


@pytest.mark.parametrize(("linktype", "ipv6", "form", "shape"), [
    (LINKTYPE_ETHERNET, False, "pcap", {}),
    (LINKTYPE_LINUX_SLL2, True, "pcapng", {"mss": 7, "reorder": True}),
    (LINKTYPE_LINUX_SLL, False, "pcap", {"mss": 50, "retransmit": True}),
], ids=["ethernet-v4-pcap", "sll2-v6-pcapng-split-reordered", "sll-v4-pcap-retransmitted"])
def test_tshark_sees_every_vector_frame(linktype: int, ipv6: bool, form: str, shape: dict[str, Any],
                                        tmp_path: Path) -> None:
    data = vector_capture(linktype, ipv6, form, **shape)
    path = tmp_path / f"vectors.{form}"
    path.write_bytes(data)
    rows = tshark(path)
    ours = [r for r in records(data, {6818}, OPTIONS) if "frame" in r]
    assert len(ours) > 40
    assert [(int(r["frame.number"][0]), [int(t) for t in r["slurm.msg_type"]],
             [int(v, 16) for v in r["slurm.version"]]) for r in rows] == _by_packet(ours)
    jobs = [int(j) for r in rows for j in r["slurm.job_id"]]
    assert jobs == [r["body"]["job_id"] for r in ours if "job_id" in r["body"]]
    assert len(jobs) >= len(EXCHANGES) // 2
    uids = [int(u) for r in rows for u in r["slurm.auth.token.uid"]]
    assert uids == [r["token"]["claims"]["uid"] for r in ours if "token" in r]


@pytest.mark.parametrize(("release", "auth"), COMBOS, ids=[f"{r}-auth-{a}" for r, a in COMBOS])
@pytest.mark.parametrize("writer", ["packet-socket", "dumpcap"])
def test_tshark_on_a_live_capture(release: str, auth: str, writer: str, live_clusters: LiveClusters,
                                  tmp_path: Path) -> None:
    """The same `scontrol callerid`, captured on lo by the tests' packet socket (written as pcap) and by
    Wireshark's own dumpcap (pcapng): tshark and decode --pcap agree on both."""
    for tool, package in (("tshark", "tshark"), ("dumpcap", "wireshark-common")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {package}; scripts/setup installs it)")
    cluster, held = live_clusters.get(release, auth), live_clusters.held(release, auth)
    path = tmp_path / "dumpcap.pcapng"
    data, exchanges = callerid_capture(cluster, held, path if writer == "dumpcap" else None)
    if writer == "dumpcap":
        data = path.read_bytes()
    else:
        path = tmp_path / "live.pcap"
        path.write_bytes(data)
    rows = tshark(path)
    ours = [r for r in records(data, {6818}, OPTIONS) if "frame" in r]
    assert [r for r in records(data, {6818}, OPTIONS) if "note" in r] == []
    assert sorted(r["size"] for r in ours) == sorted(len(f) for e in exchanges for f in [*e.requests, *e.replies])
    assert [int(t) for r in rows for t in r["slurm.msg_type"]] == [r["header"]["msg_type"] for r in ours]
    version = release_named(release).protocol_version
    assert {int(v, 16) for r in rows for v in r["slurm.version"]} == {version}
    replies = [r for r in rows if r["slurm.msg_type"] == [str(MsgType.RESPONSE_NETWORK_CALLERID.value)]]
    assert [r["slurm.job_id"] for r in replies] == [[str(held.job_id)]]
    assert [r["slurm.node_name"] for r in replies] == [[cluster.node_name]]
    plugin = AuthPlugin.AUTH_MUNGE if auth == "munge" else AuthPlugin.AUTH_SLURM
    assert {p for r in rows for p in r["slurm.auth.plugin_id"]} == {str(plugin.value)}


def test_the_dissector_ships_with_the_package() -> None:
    import slurmproto

    installed = Path(slurmproto.__file__).parent / "wireshark" / "slurm.lua"
    assert installed.read_text() == TEXT


def _forwarded_frames() -> list[bytes]:
    """A callerid reply of every release and the oldest layout, forwarded to two nodes (net_cred with
    SLURM_PACK_ADDRS where the layout has it) from an IPv4 or an IPv6 origin, signed or not."""
    frames = []
    for i, version in enumerate([0x2400, *(r.protocol_version for r in RELEASES)]):
        layout = layout_of(version)
        forward = Forward(2, "node[1-2]", 7000 + i, 50, "cred" if layout.forward_net_cred else None,
                          3 if layout.forward_tree_depth else None)
        origin = SlurmAddr(AF_INET, bytes([10, 1, 2, i]), 40000 + i) if i % 2 else \
            SlurmAddr(AF_INET6, ipaddress.IPv6Address(f"fd00::{i + 1}").packed, 40000 + i)
        reply = NetworkCallerIdResponse(100 + i, 0, f"node{i}")
        frames.append(encode_frame(reply, version, forward=forward, orig_addr=origin,
                                   flags=HeaderFlags.SLURM_PACK_ADDRS if layout.forward_net_cred else 0,
                                   credential="MUNGE:abc:" if i % 3 else None))
    return frames


def test_tshark_reads_every_layout_of_the_header(tmp_path: Path) -> None:
    frames = _forwarded_frames()
    packets = [p for i, frame in enumerate(frames)
               for p in conversation(("10.9.9.9", 50000 + i), ("10.9.9.1", 6818), b"", frame, start=10.0 + i)]
    path = tmp_path / "layouts.pcap"
    path.write_bytes(pcap_file(packets))
    ours = [r for r in records(path.read_bytes(), {6818}, OPTIONS) if "frame" in r]
    assert len(ours) == len(frames)
    fields = ["slurm.version", "slurm.forward.nodelist", "slurm.forward.timeout", "slurm.forward.net_cred",
              "slurm.forward.tree_depth", "slurm.orig_addr.ipv4", "slurm.orig_addr.ipv6", "slurm.orig_addr.port",
              "slurm.auth.munge", "slurm.job_id", "slurm.node_name"]
    rows = tshark(path, fields)
    assert len(rows) == len(ours)
    for row, record in zip(rows, ours, strict=True):
        head, body, forward = record["header"], record["body"], record["header"]["forward"]
        origin = head["orig_addr"]
        assert row == {
            "slurm.version": [f"0x{head['version']:04x}"], "slurm.forward.nodelist": [forward["nodelist"]],
            "slurm.forward.timeout": [str(forward["timeout"])],
            "slurm.forward.net_cred": [forward["net_cred"]] if forward["net_cred"] else [],
            "slurm.forward.tree_depth": [str(forward["tree_depth"])] if forward["tree_depth"] else [],
            "slurm.orig_addr.ipv4": [origin["address"]] if origin["family"] == AF_INET else [],
            "slurm.orig_addr.ipv6": [origin["address"]] if origin["family"] == AF_INET6 else [],
            "slurm.orig_addr.port": [str(origin["port"])],
            "slurm.auth.munge": ["MUNGE:abc:"] if record["auth"] else [],
            "slurm.job_id": [str(body["job_id"])], "slurm.node_name": [body["node_name"]]}
