"""`slurm-callerid decode --pcap FILE`: every Slurm frame of a capture file, with the connection it came on.

The capture is read (slurmproto.pcap), each TCP connection to a Slurm port reassembled, each direction
split into frames by their length prefix and decoded as `decode` does (slurmproto.capture): header and
auth section for any message type, the body for the types this package knows. Prints one JSON object a
line with --json, else a readable text; what could not be followed is said per connection ("note").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from slurmproto.capture import frame_json, head_json, open_keys, open_munge, read_input
from slurmproto.codec import Decoder, Frame, FrameOptions, decode_frame, read_auth, read_body, read_header
from slurmproto.conf import ConfError
from slurmproto.errors import InputError, KeyFileError, SlurmError, UnknownMessageType
from slurmproto.pcap import LINK_TYPES, MAX_BUFFERED, Connection, Data, PcapError, Reassembler, read_packets

if TYPE_CHECKING:
    from slurmproto.slurmauth import KeyRing

DEFAULT_PORTS = (6817, 6818)
"""SlurmctldPort and SlurmdPort by default."""


def _endpoint(end: tuple[str, int]) -> str:
    return f"[{end[0]}]:{end[1]}" if ":" in end[0] else f"{end[0]}:{end[1]}"


def _where(conn: Connection) -> dict[str, Any]:
    return {"stream": conn.number, "client": _endpoint(conn.client), "server": _endpoint(conn.server)}


def decode_payload(payload: bytes, options: FrameOptions, munge: Any = None,
                   keys: KeyRing | None = None) -> dict[str, Any]:
    """One frame (without its prefix) as `decode` prints it; a message type without a schema here gets
    its header and auth section, a frame that does not decode its error (and its header when that reads)."""
    try:
        try:
            return frame_json(decode_frame(payload, options), munge, keys)
        except UnknownMessageType:
            header, end = read_header(payload, options)
            auth, start = read_auth(payload, end, header, options)
            body = read_body(payload, start, header, options)
            frame = Frame(header, auth, body, None, start - end, 4 + len(payload))  # type: ignore[arg-type]
            return {**head_json(frame, munge, keys), "body": None, "body_hex": body.hex()}
    except SlurmError as exc:
        out = {"error": str(exc), "error_type": type(exc).__name__, "rc": exc.rc, "size": 4 + len(payload),
               "input_hex": payload[:64].hex()}
        try:
            header, _ = read_header(payload, options)
            out["header"] = head_json(Frame(header, None, b"", None), None, None)["header"]  # type: ignore[arg-type]
        except SlurmError:
            pass
        return out


def records(data: bytes, ports: set[int], options: FrameOptions, munge: Any = None,
            keys: KeyRing | None = None) -> Iterator[dict[str, Any]]:
    """Frame records (in the order their last packet came) and notes ({"note": ...}) for a capture file."""
    reassembler = Reassembler(ports, min(MAX_BUFFERED, options.max_length))
    decoders: dict[tuple[int, bool], Decoder | None] = {}
    count = 0
    linktypes: set[int] = set()
    try:
        for packet in read_packets(data):
            if packet.linktype not in LINK_TYPES and packet.linktype not in linktypes:
                linktypes.add(packet.linktype)
                yield {"note": f"packet {packet.index}: link type {packet.linktype} is not read (only "
                               f"{', '.join(sorted(set(LINK_TYPES.values())))}); its packets are skipped"}
            piece = reassembler.add_packet(packet)
            if piece is not None:
                for record in _frames(piece, decoders, options, munge, keys):
                    if "note" not in record:
                        count += 1
                        record = {"frame": count, **record}
                    yield record
            yield from _notes(reassembler)
    except PcapError as exc:
        yield {"note": f"capture file: {exc}", "error_type": type(exc).__name__}
    yield from _notes(reassembler)
    for conn, text in reassembler.finish():
        yield {**(_where(conn) if conn else {}), "note": text}
    for conn in reassembler.all_connections():
        for upward in (True, False):
            decoder = decoders.get((conn.number, upward))
            if decoder is not None and decoder.pending:
                yield {**_where(conn), "direction": "request" if upward else "reply",
                       "note": f"{'client' if upward else 'server'} side: stream ends inside a frame "
                               f"({decoder.pending} bytes of it)"}


def _notes(reassembler: Reassembler) -> Iterator[dict[str, Any]]:
    while reassembler.notes:
        conn, text = reassembler.notes.pop(0)
        yield {**(_where(conn) if conn else {}), "note": text}


def _frames(piece: Data, decoders: dict[tuple[int, bool], Decoder | None], options: FrameOptions, munge: Any,
            keys: KeyRing | None) -> Iterator[dict[str, Any]]:
    conn, upward = piece.connection, piece.upward
    key = (conn.number, upward)
    if key not in decoders:
        decoders[key] = Decoder(options)
    decoder = decoders[key]
    if decoder is None:  # this direction stopped making sense earlier
        return
    decoder.feed(piece.data)
    where = {**_where(conn), "direction": "request" if upward else "reply",
             "src": _endpoint(conn.client if upward else conn.server),
             "dst": _endpoint(conn.server if upward else conn.client)}
    if piece.packet is not None:
        where.update(packet=piece.packet.index, time=round(piece.packet.time, 9))
    while True:
        try:
            payload = decoder.next_payload()
        except SlurmError as exc:  # a length prefix over the limit, an HTTP answer: not Slurm frames
            decoders[key] = None
            yield {**where, "note": f"{'client' if upward else 'server'} side: {exc}; not decoded further",
                   "error_type": type(exc).__name__}
            return
        if payload is None:
            return
        yield {**where, **decode_payload(payload, options, munge, keys)}


# --- the command ---------------------------------------------------------------------------------------


def conf_ports(conf: Any) -> set[int]:
    """SlurmdPort and SlurmctldPort (a port or a range N-M) of a slurm.conf."""
    ports = {conf.slurmd_port}
    text = conf.get("SlurmctldPort") or str(DEFAULT_PORTS[0])
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ConfError(f"SlurmctldPort: {text!r} is not a port or a range of ports", conf.filename) from None
    if not 0 < first <= last < 65536 or last - first > 1024:
        raise ConfError(f"SlurmctldPort: {text!r} is not a port or a range of ports", conf.filename)
    return ports | set(range(first, last + 1))


def _ports(args: argparse.Namespace) -> set[int]:
    if args.port:
        return set(args.port)
    if args.conf:
        from slurmproto.cli import load_conf

        conf = load_conf(args.conf, lambda text: None)
        if conf is not None:
            return conf_ports(conf)
    return set(DEFAULT_PORTS)


def run(args: argparse.Namespace) -> int:
    try:
        data = read_input(args.pcap)
        ports = _ports(args)
        munge = open_munge(args)
        keys = open_keys(args)
    except (InputError, ConfError, KeyFileError) as exc:
        print(f"slurm-callerid decode: {exc}", file=sys.stderr)
        return 1
    options = FrameOptions(nul_check=not args.lenient, exact_body_length=not args.lenient,
                           max_length=MAX_BUFFERED)
    frames = troubles = 0
    try:
        for record in records(data, ports, options, munge, keys):
            frames += "frame" in record
            troubles += "note" in record or "error" in record
            print(json.dumps(record) if args.json else text_of(record), flush=True)
    finally:
        if munge is not None:
            munge.close()
    if not frames:
        print(f"slurm-callerid decode: no Slurm frames on ports {', '.join(map(str, sorted(ports)))} in "
              f"{args.pcap}", file=sys.stderr)
        return 1
    if munge is not None and munge.local_failure is not None:
        print(f"slurm-callerid decode: credentials not checked: munge: {munge.local_failure}", file=sys.stderr)
        return 1
    return 1 if troubles else 0


def _stamp(seconds: float) -> str:
    whole, micros = divmod(round(seconds * 1e6), 1_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def text_of(record: dict[str, Any]) -> str:
    """A record as a few readable lines."""
    if "note" in record:
        where = f"stream {record['stream']} {record['client']} -> {record['server']}: " if "stream" in record else ""
        return f"note: {where}{record['note']}"
    lines = [f"frame {record['frame']}  packet {record.get('packet', '-')}  {_stamp(record.get('time', 0.0))}  "
             f"stream {record['stream']}  {record['src']} -> {record['dst']} ({record['direction']})"]
    head = record.get("header")
    if head is not None:
        lines.append(f"  {head['msg_type_name']}  version {head['version_name']} (0x{head['version']:04x})  "
                     f"flags 0x{head['flags']:04x}  body {head['body_length']} bytes  "
                     f"from {head['orig_addr']['address'] or '-'}")
    if "error" in record:
        lines.append(f"  error: {record['error_type']}: {record['error']}")
        return "\n".join(lines)
    auth = record.get("auth")
    lines.append(f"  auth: {auth['plugin']}, credential {auth['credential_length']} bytes" if auth else "  auth: none")
    for name in ("munge", "token"):
        if name in record:
            lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in record[name].items()
                                                   if k not in ("header", "payload_hex")))
    body = record.get("body")
    if body is None:
        lines.append(f"  body: {len(record['body_hex']) // 2} bytes (no schema for this type here)")
    else:
        lines.append("  body: " + ", ".join(f"{k}={v}" for k, v in body.items() if v is not None))
    return "\n".join(lines)
