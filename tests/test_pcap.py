"""Capture files (slurmproto.pcap) and `slurm-callerid decode --pcap` (slurmproto.pcapdecode): the real
frames of the golden and live vectors carried in captures built here (every link type, IPv4 and IPv6,
split, reordered and retransmitted segments, pcap and pcapng), captures of a live cluster, and bad input."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurmproto.capture import frame_json
from slurmproto.cli import main
from slurmproto.codec import FrameOptions, decode_stream, encode_frame
from slurmproto.conf import parse_text
from slurmproto.constants import MsgType
from slurmproto.messages import ReturnCode
from slurmproto.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    TCP_ACK,
    TCP_FIN,
    TCP_SYN,
    Direction,
    PcapError,
    Reassembler,
    Segment,
    parse_segment,
    read_packets,
    split_frames,
)
from slurmproto.pcapdecode import conf_ports, records, text_of
from slurmproto.versions import release_named
from tests.support.chroot_cluster import RELEASES
from tests.support.chroot_files import AUTHS
from tests.support.fixtures import LiveClusters
from tests.support.live_vectors import VECTORS, as_ipv6, callerid_capture, vector_capture, vector_exchanges
from tests.support.packets import conversation, pcap_file, pcapng_file, tcp_packet

OPTIONS = FrameOptions(max_length=1 << 24)
WHERE = {"frame", "stream", "client", "server", "direction", "src", "dst", "packet", "time"}


EXCHANGES = vector_exchanges()


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in WHERE}


SHAPES = [
    (LINKTYPE_ETHERNET, False, "pcap", {}),
    (LINKTYPE_LINUX_SLL, True, "pcapng", {"mss": 7, "reorder": True}),
    (LINKTYPE_LINUX_SLL2, False, "pcap-ns", {"mss": 13, "retransmit": True}),
    (LINKTYPE_RAW, True, "pcap", {"mss": 100, "reorder": True, "retransmit": True}),
    (LINKTYPE_NULL, False, "pcapng", {"mss": 64}),
    (LINKTYPE_IPV6, True, "pcap", {"mss": 1}),
]


@pytest.mark.parametrize(("linktype", "ipv6", "form", "shape"), SHAPES,
                         ids=[f"link{s[0]}-{'v6' if s[1] else 'v4'}-{s[2]}-{len(s[3])}" for s in SHAPES])
def test_every_vector_frame_comes_out_of_avector_capture(linktype: int, ipv6: bool, form: str,
                                                   shape: dict[str, Any]) -> None:
    found = list(records(vector_capture(linktype, ipv6, form, **shape), {6818}, OPTIONS))
    assert [r for r in found if "note" in r] == []
    expected = []
    for i, (_, client, server, sent, received) in enumerate(EXCHANGES):
        if ipv6:
            client, server = as_ipv6(client), as_ipv6(server)
        c, s = (f"[{client[0]}]:{client[1]}", f"[{server[0]}]:{server[1]}") if ipv6 else \
            (f"{client[0]}:{client[1]}", f"{server[0]}:{server[1]}")
        for data, direction, src, dst in ((sent, "request", c, s), (received, "reply", s, c)):
            expected += [(i + 1, direction, src, dst, frame_json(frame)) for frame in decode_stream(data, OPTIONS)]
    assert len(found) == len(expected) > 40
    for n, (record, (stream, direction, src, dst, decoded)) in enumerate(zip(found, expected, strict=True)):
        assert record["frame"] == n + 1
        assert (record["stream"], record["direction"], record["src"], record["dst"]) == (stream, direction, src, dst)
        assert _strip(record) == decoded
        assert int(record["time"]) == 1_700_000_000 + stream - 1 and record["packet"] >= 3


def test_the_records_say_where_and_when() -> None:
    _, client, server, sent, received = EXCHANGES[0]
    packets = conversation(client, server, sent, received, start=1_800_000_000.25)
    request, reply = records(pcap_file(packets, nanos=True), {6818}, OPTIONS)
    assert request["packet"] == 3 and request["time"] == pytest.approx(1_800_000_000.252)
    assert reply["packet"] == 4 and reply["direction"] == "reply" and reply["src"] == f"{server[0]}:{server[1]}"
    assert request["header"]["msg_type_name"] == "REQUEST_NETWORK_CALLERID"
    assert reply["header"]["msg_type_name"] == "RESPONSE_NETWORK_CALLERID"
    assert reply["body"]["job_id"] == json.loads(Path(VECTORS / (EXCHANGES[0][0].split("/")[0] + ".json"))
                                                .read_text())["job_id"]
    text = text_of(reply)
    assert "RESPONSE_NETWORK_CALLERID" in text and "2027-01-15 08:00:00.253000Z" in text


# -- reassembly -------------------------------------------------------------------------------------------


def _seg(seq: int, flags: int, data: bytes = b"") -> Segment:
    seg = parse_segment(tcp_packet(("127.0.0.1", 40000), ("127.0.0.1", 6818), seq, flags, data))
    assert isinstance(seg, Segment) and seg.dst == ("127.0.0.1", 6818)
    return seg


def test_segments_reassemble_in_order_once() -> None:
    direction = Direction()
    out = b"".join(direction.add(_seg(seq, flags, data)) for seq, flags, data in (
        (99, TCP_SYN, b""), (106, 0, b"world"), (100, 0, b"hello "), (100, 0, b"hello "), (103, 0, b"lo wor"),
        (111, TCP_FIN, b"")))
    assert out == b"hello world" and direction.fin and direction.hole() is None


def test_sequence_numbers_wrap_around() -> None:
    direction = Direction()
    assert direction.add(_seg(0xFFFFFFFE, TCP_SYN)) == b""
    assert direction.add(_seg(2, 0, b"cd")) == b""
    assert direction.add(_seg(0xFFFFFFFF, 0, b"ab\x00")) == b"ab\x00cd"


def test_a_hole_holds_what_comes_after_it_up_to_the_limit() -> None:
    reassembler = Reassembler({6818}, limit=100)
    reassembler.add(_seg(0, TCP_SYN))
    reassembler.add(_seg(11, 0, bytes(60)))
    assert reassembler.add(_seg(71, 0, bytes(60))) is None
    conn = reassembler.all_connections()[0]
    assert conn.failed and conn.up.held == 0  # what waited is let go
    [(_, note)] = reassembler.notes
    assert "more than 100 bytes wait behind a hole at stream offset 0" in note


def test_split_frames_keeps_prefixes_and_drops_a_partial_tail() -> None:
    one, two = b"\x00\x00\x00\x02ab", b"\x00\x00\x00\x01c"
    assert split_frames(one + two + b"\x00\x00\x00\x09xy") == [one, two]
    assert split_frames(b"HTTP/1.1 405") == []


def test_other_packets_are_not_segments() -> None:
    assert parse_segment(bytes(12) + b"\x08\x06" + bytes(40)) is None  # ARP
    assert parse_segment(b"short") is None
    udp = bytearray(tcp_packet(("127.0.0.1", 1), ("127.0.0.1", 6818), 0, 0))
    udp[14 + 9] = 17
    assert parse_segment(bytes(udp)) is None
    fragment = bytearray(tcp_packet(("127.0.0.1", 1), ("127.0.0.1", 6818), 0, 0))
    fragment[14 + 6] = 0x20  # more fragments
    assert parse_segment(bytes(fragment)) is None
    assert parse_segment(tcp_packet(("::1", 1), ("::1", 6818), 0, 0), 999) is None  # unknown link type


def test_many_small_segments_in_reverse_order() -> None:
    direction = Direction()
    direction.add(_seg(0, TCP_SYN))
    data = bytes(range(256)) * 80
    out = b"".join(direction.add(_seg(1 + at, 0, data[at:at + 1])) for at in reversed(range(len(data))))
    assert out == data and direction.held == 0


@pytest.mark.parametrize(("big_endian", "block_type"), [(True, 6), (False, 2), (True, 3)])
def test_pcapng_byte_orders_and_block_types(big_endian: bool, block_type: int) -> None:
    _, client, server, sent, received = EXCHANGES[0]
    packets = conversation(client, server, sent, received, start=1_800_000_000.5)
    data = pcapng_file(packets, big_endian=big_endian, block_type=block_type)
    assert [p.data for p in read_packets(data)] == [frame for _, frame in packets]
    times = {p.time for p in read_packets(data)}
    assert times == {0.0} if block_type == 3 else min(times) == pytest.approx(1_800_000_000.5)
    twice = [r["stream"] for r in records(data + data, {6818}, OPTIONS)]  # a second section, the 4-tuple reused
    assert twice == [1, 1, 2, 2]


def test_vlan_tags_and_ipv6_extension_headers() -> None:
    plain = tcp_packet(("::1", 40000), ("::1", 6818), 7, TCP_ACK, b"data")
    ip = plain[14:]
    hop_by_hop = bytes([6, 0]) + bytes(6)  # next header TCP, 8 bytes
    extended = ip[:6] + bytes([0]) + ip[7:40] + hop_by_hop + ip[40:]
    extended = extended[:4] + (len(extended) - 40).to_bytes(2, "big") + extended[6:]
    tagged = bytes(12) + b"\x81\x00\x00\x05" + b"\x86\xdd" + extended
    seg = parse_segment(tagged)
    assert seg is not None and seg.payload == b"data" and seg.dst == ("::1", 6818)


# -- what cannot be followed --------------------------------------------------------------------------------


def _one(sent: bytes, received: bytes = b"", **shape: Any) -> list[tuple[float, bytes]]:
    return conversation(("10.0.0.1", 40000), ("10.0.0.2", 6818), sent, received, **shape)


def _notes(found: list[dict[str, Any]]) -> list[str]:
    return [r["note"] for r in found if "note" in r]


def test_a_missing_segment_is_a_note_and_the_frames_before_it_still_come() -> None:
    _, _, _, sent, received = EXCHANGES[0]
    packets = _one(sent + sent, received, mss=len(sent))
    del packets[3]  # the second request
    found = list(records(pcap_file(packets), {6818}, OPTIONS))
    assert [r["direction"] for r in found if "frame" in r] == ["request", "reply"]
    assert _notes(found) == [f"client side: {len(sent)} bytes missing at stream offset {len(sent)} (not captured); "
                             "0 bytes after them not decoded"]


def test_a_gap_in_the_middle_of_a_frame() -> None:
    _, _, _, sent, _ = EXCHANGES[0]
    packets = _one(sent, mss=50)
    del packets[3]
    found = list(records(pcap_file(packets), {6818}, OPTIONS))
    assert not [r for r in found if "frame" in r]
    assert _notes(found) == [f"client side: 50 bytes missing at stream offset 50 (not captured); {len(sent) - 100} "
                             "bytes after them not decoded", "client side: stream ends inside a frame (50 bytes of it)"]


def test_a_capture_cut_by_the_snapshot_length() -> None:
    _, _, _, sent, _ = EXCHANGES[0]
    found = list(records(pcap_file(_one(sent, mss=200), snaplen=100), {6818}, OPTIONS))
    assert any("bytes missing at stream offset 46" in n for n in _notes(found))


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not a capture file: 0 bytes"),
    (b"GET / HTTP/1.1\r\n", "not a pcap or pcapng file (starts with 47455420)"),
    (pcap_file([])[:20], "pcap file header truncated: 20 of 24 bytes"),
    (pcap_file([(0, bytes(100))])[:-1], "packet 1: truncated (99 of 100 bytes)"),
    (pcap_file([(0, bytes(100))]) + bytes(5), "packet 2: record header truncated (5 of 16 bytes)"),
    (pcap_file([]) + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 0xFFFFFFF0), "captured length 4294967280 exceeds"),
    (pcapng_file([])[:30], "pcapng block at byte 28 truncated (2 bytes)"),
    (pcapng_file([])[:10], "pcapng section header at byte 0 truncated (10 bytes)"),
    (pcapng_file([]) + struct.pack("<II", 6, 0x7FFFFFF0), "pcapng block at byte 60: bad length 2147483632"),
    (pcapng_file([]) + struct.pack("<II", 6, 13), "pcapng block at byte 60: bad length 13"),
    (pcapng_file([]) + struct.pack("<II", 6, 64), "pcapng block at byte 60 truncated (8 of 64 bytes)"),
    (pcapng_file([])[:28] + struct.pack("<8I", 6, 32, 3, 0, 0, 0, 0, 32), "interface 3 was never described"),
    (pcapng_file([])[:28] + struct.pack("<6I", 1, 24, 1, 0, 0, 24) * 5000, "interface block 4096 is malformed"),
])
def test_bad_capture_files_get_a_specific_note(data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(read_packets(data))
    found = list(records(data, {6818}, OPTIONS))
    assert message in found[-1]["note"] and found[-1]["error_type"] == "PcapError"


def test_an_unknown_link_type_is_said_once() -> None:
    _, client, server, sent, received = EXCHANGES[0]
    found = list(records(pcap_file(conversation(client, server, sent, received), linktype=147), {6818}, OPTIONS))
    assert _notes(found) == ["packet 1: link type 147 is not read (only BSD loopback, Ethernet, Linux cooked "
                             "(SLL), Linux cooked v2 (SLL2), OpenBSD loopback, raw IP, raw IPv4, raw IPv6); "
                             "its packets are skipped"]


def test_a_truncated_capture_still_gives_its_whole_frames() -> None:
    _, _, _, sent, received = EXCHANGES[0]
    data = pcap_file(_one(sent, received))
    found = list(records(data[:-30], {6818}, OPTIONS))
    assert [r["direction"] for r in found if "frame" in r] == ["request", "reply"]
    assert _notes(found) == ["capture file: packet 6: truncated (24 of 54 bytes)"]


@pytest.mark.parametrize(("stream", "message"), [
    (b"\x7f\xff\xff\xff" + bytes(100), "client side: length prefix 2147483647 exceeds the limit of 16777216 bytes"),
    (b"HTTP/1.1 405 Method Not Allowed\r\n\r\n", "client side: peer answered with HTTP, not a Slurm message"),
])
def test_a_stream_that_is_not_slurm_frames(stream: bytes, message: str) -> None:
    found = list(records(pcap_file(_one(stream + bytes(4000))), {6818}, OPTIONS))
    assert [n for n in _notes(found) if message in n], _notes(found)
    assert not [r for r in found if "frame" in r]


def test_a_message_type_without_a_schema_shows_its_header_and_auth() -> None:
    frame = bytearray(encode_frame(ReturnCode(0), release_named("24.11").protocol_version, credential="MUNGE:x:"))
    frame[8:10] = (1001).to_bytes(2, "big")  # REQUEST_NODE_REGISTRATION_STATUS
    [record] = records(pcap_file(_one(bytes(frame))), {6818}, OPTIONS)
    assert record["header"]["msg_type"] == 1001 and record["header"]["version_name"] == "24.11"
    assert record["auth"]["plugin"] == "auth/munge" and record["body"] is None and record["body_hex"] == "00000000"
    assert "no schema for this type" in text_of(record)


def test_a_frame_that_does_not_decode_is_an_error_record_and_the_next_still_comes() -> None:
    good = encode_frame(ReturnCode(0), release_named("26.05").protocol_version)
    bad = bytearray(good)
    bad[-1:] = b""
    bad[:4] = (len(bad) - 4).to_bytes(4, "big")
    first, second = records(pcap_file(_one(bytes(bad) + good)), {6818}, OPTIONS)
    assert first["error_type"] == "MalformedMessage" and first["header"]["msg_type"] == MsgType.RESPONSE_SLURM_RC
    assert second["body"] == {"return_code": 0}


def test_a_reused_four_tuple_is_a_new_stream_and_a_midstream_capture_is_followed() -> None:
    _, _, _, sent, received = EXCHANGES[0]
    packets = _one(sent, received) + _one(sent, received, start=5.0)
    found = list(records(pcap_file(packets[2:]), {6818}, OPTIONS))  # the first handshake not captured
    assert [(r["stream"], r["direction"]) for r in found] == [(1, "request"), (1, "reply"), (2, "request"),
                                                               (2, "reply")]


def test_only_the_ports_asked_for() -> None:
    _, _, _, sent, _ = EXCHANGES[0]
    data = pcap_file(conversation(("10.0.0.1", 40000), ("10.0.0.2", 7000), sent, b""))
    assert list(records(data, {6817, 6818}, OPTIONS)) == []
    assert [r["server"] for r in records(data, {7000}, OPTIONS)] == ["10.0.0.2:7000"]


def test_ports_from_slurm_conf() -> None:
    conf = parse_text("ClusterName=c\nSlurmdPort=7000\nSlurmctldPort=7001-7003\n")
    assert conf_ports(conf) == {7000, 7001, 7002, 7003}
    assert conf_ports(parse_text("ClusterName=c\n")) == {6817, 6818}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_captures_never_escape(data: st.DataObject) -> None:
    _, _, _, sent, received = EXCHANGES[0]
    base = bytearray(data.draw(st.sampled_from([pcap_file(_one(sent, received, mss=90)),
                                                pcapng_file(_one(sent, received, mss=90))])))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(base) - 1))
        base[at:at + 1] = data.draw(st.binary(min_size=0, max_size=4))
        if not base:
            break
    if data.draw(st.booleans()):
        base = base[:data.draw(st.integers(0, len(base)))]
    for record in records(bytes(base), {6818}, OPTIONS):
        text_of(record)
        json.dumps(record)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape(blob: bytes) -> None:
    for head in (b"", pcap_file([])[:24], pcapng_file([])[:48]):
        for record in records(head + blob, {6818}, OPTIONS):
            json.dumps(record)


# -- the command ------------------------------------------------------------------------------------------


def _write(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "capture.pcap"
    path.write_bytes(data)
    return str(path)


def test_decode_pcap_prints_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, vector_capture(LINKTYPE_ETHERNET, False, "pcap"))
    assert main(["decode", "--pcap", path, "--json", "--no-munge", "--port", "6818"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["frame"] for r in lines] == list(range(1, len(lines) + 1))
    assert {r["header"]["msg_type_name"] for r in lines} >= {"REQUEST_NETWORK_CALLERID",
                                                             "RESPONSE_NETWORK_CALLERID"}


def test_decode_pcap_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, vector_capture(LINKTYPE_LINUX_SLL2, True, "pcapng"))
    assert main(["decode", "--pcap", path, "--no-munge"]) == 0
    out = capsys.readouterr().out
    assert out.count("\nframe ") + out.startswith("frame ") == sum(
        len(split_frames(s)) + len(split_frames(r)) for _, _, _, s, r in EXCHANGES)
    assert "(request)" in out and "(reply)" in out and "[::1]:6818" in out


@pytest.mark.parametrize(("args", "rc", "message"), [
    (["--pcap", "/nonexistent"], 1, "cannot read /nonexistent"),
    (["--pcap", "P", "F"], 2, "a FILE and --pcap FILE: give one input"),
    (["--port", "6818", "F"], 2, "--port goes with --pcap"),
    (["--pcap", "P", "--port", "0"], 2, "port '0' is not a number between 1 and 65535"),
])
def test_decode_pcap_usage(args: list[str], rc: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) if rc == 2 else contextlib.nullcontext():
        assert main(["decode", "--no-munge", *args]) == rc
    assert message in capsys.readouterr().err


def test_decode_pcap_without_frames_or_with_notes_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--no-munge", "--pcap", _write(tmp_path, pcap_file([]))]) == 1
    assert "no Slurm frames on ports 6817, 6818 in" in capsys.readouterr().err
    _, _, _, sent, received = EXCHANGES[0]
    truncated = _write(tmp_path, pcap_file(_one(sent, received))[:-30])
    assert main(["decode", "--no-munge", "--json", "--pcap", truncated]) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["note"].startswith("capture file: packet 6")


# -- captures of a live cluster -------------------------------------------------------------------------------

COMBOS = [(release, auth) for release in RELEASES for auth in AUTHS]


@pytest.mark.parametrize(("release", "auth"), COMBOS, ids=[f"{r}-auth-{a}" for r, a in COMBOS])
def test_a_live_capture_decodes(release: str, auth: str, live_clusters: LiveClusters, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cluster, held = live_clusters.get(release, auth), live_clusters.held(release, auth)
    data, exchanges = callerid_capture(cluster, held)
    path = _write(tmp_path, data)
    check = ["--munge-socket", str(cluster.munge_socket)] if auth == "munge" else ["--key", str(cluster.key_path)]
    assert main(["decode", "--pcap", path, "--json", "--conf", str(cluster.conf), *check]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    frames = [(e.client, d, f) for e in exchanges for d, fs in (("request", e.requests), ("reply", e.replies))
              for f in fs]
    assert sorted((r["direction"], r["size"]) for r in found) == sorted((d, len(f)) for _, d, f in frames)
    version = release_named(release).protocol_version
    callerid = [r for r in found if r["header"]["msg_type_name"] == "RESPONSE_NETWORK_CALLERID"]
    assert [r["body"]["job_id"] for r in callerid] == [held.job_id]
    assert all(r["header"]["version"] == version for r in found)
    for r in found:
        if auth == "munge":  # slurmd decoded each credential already: munged calls a second decode a replay
            assert r["munge"].get("hash_ok") or r["munge"]["error_type"] == "CredReplayed", r["munge"]
        else:
            assert r["token"]["signature_ok"] and r["token"]["hash_ok"], r["token"]
