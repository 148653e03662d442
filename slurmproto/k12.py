"""KangarooTwelve in plain Python, for every input size.

Why not a library: importing pycryptodome's KangarooTwelve costs about 25 ms per process (it probes the
CPU and loads native libraries through ctypes), more than a whole callerid round trip, and every process
of this project that hashes (one CLI call, one SSH login) hashes a body of a few dozen bytes; Python 3.11's
hashlib has no K12, and the pycryptodome of Debian 12 (3.11, as `Cryptodome`) has none either. For inputs
up to one K12 chunk (8192 bytes with the customization) K12 is a single TurboSHAKE128 sponge (well under
a millisecond here); longer inputs take the tree mode below, a few milliseconds per chunk. Tests check
this against pycryptodome's and against hashes taken from real Slurm traffic.
(RFC 9861: KangarooTwelve and TurboSHAKE.)
"""

from __future__ import annotations

CHUNK = 8192
RATE = 168  # TurboSHAKE128: 1344-bit rate
MASK = (1 << 64) - 1
# KangarooTwelve's domain bytes (RFC 9861): a message of one chunk, a further chunk's chaining
# value, and the final node of the tree.
SINGLE_NODE, CHAINING_VALUE, FINAL_NODE = 0x07, 0x0B, 0x06
CHAIN_LENGTH = 32
FINAL_NODE_MARK = b"\x03" + bytes(7)
"""What follows the first chunk in the final node: it says chaining values come next."""
FINAL_NODE_END = b"\xff\xff"

# Keccak-f[1600] round constants of rounds 12..23: Keccak-p[1600, 12] is the last 12 rounds.
ROUND_CONSTANTS = (
    0x000000008000808B, 0x800000000000008B, 0x8000000000008089, 0x8000000000008003,
    0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
    0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
)
# rho offsets by lane index x + 5 * y.
ROTATIONS = (0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14)
# pi: lane x + 5y moves to y + 5 * ((2x + 3y) mod 5).
PI = tuple(y + 5 * ((2 * x + 3 * y) % 5) for y in range(5) for x in range(5))


def _permute(a: list[int]) -> None:
    """Keccak-p[1600, 12] on 25 64-bit lanes, in place."""
    b = [0] * 25
    for rc in ROUND_CONSTANTS:
        c = [a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] for x in range(5)]
        for x in range(5):
            right = c[(x + 1) % 5]
            d = c[(x - 1) % 5] ^ (((right << 1) | (right >> 63)) & MASK)
            for y in range(0, 25, 5):
                a[x + y] ^= d
        for i in range(25):
            r = ROTATIONS[i]
            lane = a[i]
            b[PI[i]] = ((lane << r) | (lane >> (64 - r))) & MASK if r else lane
        for y in range(0, 25, 5):
            b0, b1, b2, b3, b4 = b[y:y + 5]
            a[y] = b0 ^ (~b1 & b2)
            a[y + 1] = b1 ^ (~b2 & b3)
            a[y + 2] = b2 ^ (~b3 & b4)
            a[y + 3] = b3 ^ (~b4 & b0)
            a[y + 4] = b4 ^ (~b0 & b1)
        a[0] ^= rc


def turboshake128(message: bytes, domain: int, length: int) -> bytes:
    """TurboSHAKE128(M, D, L) for a domain byte D in 0x01..0x7F."""
    padded = bytearray(message)
    padded.append(domain)
    padded += bytes(-len(padded) % RATE)
    padded[-1] ^= 0x80
    state = [0] * 25
    for start in range(0, len(padded), RATE):
        block = padded[start:start + RATE]
        for i in range(RATE // 8):
            state[i] ^= int.from_bytes(block[8 * i:8 * i + 8], "little")
        _permute(state)
    out = bytearray()
    while True:
        out += b"".join(lane.to_bytes(8, "little") for lane in state[:RATE // 8])
        if len(out) >= length:
            return bytes(out[:length])
        _permute(state)


def length_encode(n: int) -> bytes:
    """n as big-endian bytes without leading zeros, then the count of those bytes."""
    digits = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return digits + bytes([len(digits)])


def kangarootwelve(message: bytes, custom: bytes = b"", length: int = 32) -> bytes:
    """KangarooTwelve(M, C, L)."""
    s = message + custom + length_encode(len(custom))
    if len(s) <= CHUNK:
        return turboshake128(s, SINGLE_NODE, length)
    # Tree mode: the first chunk, then the chaining value of each further chunk, into one final node.
    chains = [turboshake128(s[start:start + CHUNK], CHAINING_VALUE, CHAIN_LENGTH)
              for start in range(CHUNK, len(s), CHUNK)]
    final = s[:CHUNK] + FINAL_NODE_MARK + b"".join(chains) + length_encode(len(chains)) + FINAL_NODE_END
    return turboshake128(final, FINAL_NODE, length)
