"""Our KangarooTwelve (single sponge and tree mode) against pycryptodome's and the published test vector."""

from __future__ import annotations

import subprocess
import sys

from Crypto.Hash import KangarooTwelve
from hypothesis import given, settings
from hypothesis import strategies as st

from slurmproto.k12 import CHUNK, kangarootwelve, length_encode


def test_published_vector() -> None:
    # RFC 9861, KangarooTwelve(M=``, C=``, 32).
    assert kangarootwelve(b"", b"", 32).hex() == (
        "1ac2d450fc3b4205d19da7bfca1b37513c0803577ac7167f06fe2ce1f0ef39e5")


def test_length_encode() -> None:
    assert length_encode(0) == b"\x00"
    assert length_encode(2) == b"\x02\x01"
    assert length_encode(12345) == b"\x30\x39\x02"


@settings(max_examples=300)
@given(st.binary(max_size=600), st.binary(max_size=40), st.integers(1, 400))
def test_matches_pycryptodome(message: bytes, custom: bytes, length: int) -> None:
    assert kangarootwelve(message, custom, length) == KangarooTwelve.new(data=message, custom=custom).read(length)


def test_chunk_boundary_and_tree_mode() -> None:
    for size in (CHUNK - 4, CHUNK - 3, CHUNK - 2, CHUNK, CHUNK + 1, 2 * CHUNK - 3, 2 * CHUNK, 3 * CHUNK + 5):
        message = bytes(range(251)) * (size // 251 + 1)
        message = message[:size]
        assert kangarootwelve(message, b"\x13\xab") == KangarooTwelve.new(data=message, custom=b"\x13\xab").read(32)


@settings(max_examples=10, deadline=None)
@given(st.integers(CHUNK - 3, 4 * CHUNK), st.binary(max_size=300), st.integers(1, 200))
def test_tree_mode_matches_pycryptodome(size: int, custom: bytes, length: int) -> None:
    message = bytes(range(251)) * (size // 251 + 1)
    assert kangarootwelve(message[:size], custom, length) == (
        KangarooTwelve.new(data=message[:size], custom=custom).read(length))


def test_no_crypto_library_for_any_size() -> None:
    """Debian 12's pycryptodome (3.11, as Cryptodome) has no K12: long inputs must not need one either."""
    code = ("import sys; from slurmproto.k12 import kangarootwelve; kangarootwelve(bytes(5 * 8192), b'c'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('Crypto', 'Cryptodome')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
