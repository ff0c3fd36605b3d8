#!/usr/bin/env python3
"""Crafts Ed25519 edge cases over sensorchain transaction signing messages and
records the verdicts of two standard strict verifiers:

* OpenSSL, through Python's `cryptography` package (Ed25519PublicKey.verify);
* libsodium, through PyNaCl (crypto_sign_verify_detached via VerifyKey.verify).

Writes ed25519_verdicts.json next to this script. The Rust test
`consensus_ed25519.rs` rebuilds each message from the transaction fields and
checks that every ledger path of sensorchain gives the verdict recorded here.

The curve arithmetic below is an independent, deliberately naive
implementation of RFC 8032 (affine-free extended coordinates, from the RFC's
reference code); it only crafts inputs, it never decides a verdict.

    pip install cryptography pynacl
    python3 gen_ed25519_verdicts.py
"""
import hashlib
import json
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
import cryptography
from cryptography.hazmat.backends import default_backend
import nacl
import nacl.bindings
import nacl.exceptions
import nacl.signing

p = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
d = -121665 * pow(121666, p - 2, p) % p
SQRT_M1 = pow(2, (p - 1) // 4, p)


def inv(x):
    return pow(x, p - 2, p)


def add(P, Q):
    X1, Y1, Z1, T1 = P
    X2, Y2, Z2, T2 = Q
    A = (Y1 - X1) * (Y2 - X2) % p
    B = (Y1 + X1) * (Y2 + X2) % p
    C = T1 * 2 * d * T2 % p
    D = Z1 * 2 * Z2 % p
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F % p, G * H % p, F * G % p, E * H % p)


def mul(s, P):
    Q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            Q = add(Q, P)
        P = add(P, P)
        s >>= 1
    return Q


def neg(P):
    X, Y, Z, T = P
    return (-X % p, Y, Z, -T % p)


def compress(P):
    X, Y, Z, _ = P
    zi = inv(Z)
    x, y = X * zi % p, Y * zi % p
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def recover_x(y, sign):
    if y >= p:
        return None
    x2 = (y * y - 1) * inv(d * y * y + 1) % p
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (p + 3) // 8, p)
    if (x * x - x2) % p != 0:
        x = x * SQRT_M1 % p
    if (x * x - x2) % p != 0:
        return None
    if (x & 1) != sign:
        x = p - x
    return x


def point(x, y):
    return (x % p, y % p, 1, x * y % p)


def decompress_lenient(b):
    """Decodes y mod p (so y >= p is accepted) and ignores the x = 0 sign rule:
    used only to craft non-canonical encodings of known points."""
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    y %= p
    x2 = (y * y - 1) * inv(d * y * y + 1) % p
    x = pow(x2, (p + 3) // 8, p)
    if (x * x - x2) % p != 0:
        x = x * SQRT_M1 % p
    if (x * x - x2) % p != 0:
        return None
    if (x & 1) != sign:
        x = (p - x) % p
    return point(x, y)


Gy = 4 * inv(5) % p
B = point(recover_x(Gy, 0), Gy)
IDENTITY = (0, 1, 1, 0)


def eq(P, Q):
    return compress(P) == compress(Q)


def find_torsion8():
    """A point of order exactly 8 (y = sqrt((1 - sqrt(1 + d)) ... ) found by
    clearing the prime-order part of random points)."""
    i = 2
    while True:
        y = i
        x = recover_x(y, 0)
        i += 1
        if x is None:
            continue
        P = point(x, y)
        T = mul(L, P)  # kills the prime-order part: T is in the 8-torsion
        if not eq(mul(4, T), IDENTITY):
            return T


T8 = find_torsion8()
assert eq(mul(8, T8), IDENTITY) and not eq(mul(4, T8), IDENTITY)


def sha512_int(*parts):
    h = hashlib.sha512()
    for part in parts:
        h.update(part)
    return int.from_bytes(h.digest(), "little")


def secret_scalar(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


# --- the signed message: a sensorchain Reading transaction ------------------

TX_CTX = b"sensorchain/tx/v1"
CHAIN_ID_CTX = b"sensorchain/chain-id/v2"
CHAIN_NAME = b"consensus-ed25519"
TIMESTAMP_MS = 1_000
STREAM = 3
BPM = 72


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def public_of(seed):
    return compress(mul(secret_scalar(seed)[0], B))


# The chain: its id is the tagged hash of the genesis transaction's exact
# body bytes (docs/PROTOCOL.md, "Chain id"). Members, in order: admin (seed
# 01*32, role Admin, CONNECT|SEND|ADMIN), gateway (seed 02*32, role Gateway,
# CONNECT|VALIDATE), device (seed 00 01 .. 1f, role Device, CONNECT|WRITE);
# creator the admin, sequence 0, time TIMESTAMP_MS, default parameters.
ROLE_DEVICE, ROLE_ADMIN, ROLE_GATEWAY = 0, 5, 6
GENESIS_MEMBERS = [
    (public_of(bytes([1]) * 32), 0x13, ROLE_ADMIN),
    (public_of(bytes([2]) * 32), 0x21, ROLE_GATEWAY),
    (public_of(bytes(range(32))), 0x09, ROLE_DEVICE),
]
GENESIS_BODY = (
    GENESIS_MEMBERS[0][0]  # signer: the creator
    + varint(0)  # sequence
    + varint(TIMESTAMP_MS)
    + varint(6)  # TxKind::Genesis
    + varint(len(CHAIN_NAME))
    + CHAIN_NAME
    + bytes([1, 2, 0])  # admin consensus 1/2, no proof of work
    + varint(10_000)  # max_block_txs
    + varint(300_000)  # max_future_skew_ms
    + varint(len(GENESIS_MEMBERS))
    + b"".join(key + bytes([perms]) + varint(role) for key, perms, role in GENESIS_MEMBERS)
)
CHAIN_ID = hashlib.sha256(bytes([len(CHAIN_ID_CTX)]) + CHAIN_ID_CTX + GENESIS_BODY).digest()


def tx_message(pk, sequence):
    """len(ctx) || ctx || chain_id || postcard(TxBody::reading(pk, sequence,
    TIMESTAMP_MS, STREAM, Vital::HeartRate { bpm: BPM }))."""
    body = (
        pk
        + varint(sequence)
        + varint(TIMESTAMP_MS)
        + varint(0)  # TxKind::Reading
        + varint(STREAM)
        + varint(0)  # Payload::Plain
        + varint(3)  # Vital::HeartRate
        + varint(BPM)
    )
    return bytes([len(TX_CTX)]) + TX_CTX + CHAIN_ID + body


# --- verdicts of the standard verifiers -------------------------------------


def openssl_verdict(pk, msg, sig):
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


def libsodium_verdict(pk, msg, sig):
    try:
        nacl.signing.VerifyKey(pk).verify(msg, sig)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False


# --- the cases ---------------------------------------------------------------

cases = []


def case(name, pk, sequence, sig, note):
    msg = tx_message(pk, sequence)
    cases.append(
        {
            "name": name,
            "pk": pk.hex(),
            "sequence": sequence,
            "msg": msg.hex(),
            "sig": sig.hex(),
            "openssl": openssl_verdict(pk, msg, sig),
            "libsodium": libsodium_verdict(pk, msg, sig),
            "note": note,
        }
    )


def le(n):
    return int.to_bytes(n, 32, "little")


seed = bytes(range(32))
a, prefix = secret_scalar(seed)
A = mul(a, B)
pk = compress(A)


def k_of(R_enc, pk_enc, msg):
    return sha512_int(R_enc, pk_enc, msg) % L


def sign_with_R(r_point_enc, r_scalar, pk_enc, a_scalar, msg):
    k = k_of(r_point_enc, pk_enc, msg)
    return r_point_enc + le((r_scalar + k * a_scalar) % L)


def honest(sequence):
    msg = tx_message(pk, sequence)
    r = sha512_int(prefix, msg) % L
    return sign_with_R(compress(mul(r, B)), r, pk, a, msg)


case("valid", pk, 1, honest(1), "an honest RFC 8032 signature")

sig = honest(2)
S = int.from_bytes(sig[32:], "little")
case("s_plus_l", pk, 2, sig[:32] + le(S + L), "S + L: same value mod L, non-canonical S")
case("s_all_ones", pk, 2, sig[:32] + b"\xff" * 32, "S = 2^256 - 1")
case("s_equals_l", pk, 2, sig[:32] + le(L), "S = L")

# R with a small-order component: R' = rB + T8, S = r + k'a. Cofactored
# verifiers (ed25519-compact, batch verifiers) accept, cofactorless reject.
msg = tx_message(pk, 3)
r = 12345678901234567890
Rp = compress(add(mul(r, B), T8))
case("r_mixed_order", pk, 3, sign_with_R(Rp, r, pk, a, msg), "R = rB + T (T of order 8), S = r + k*a")

# R a small-order point, S = k*a: [S]B - [k]A = identity != R (cofactorless
# rejects), 8([S]B - [k]A - R) = 0 (cofactored accepts).
msg = tx_message(pk, 4)
Rt = compress(T8)
case("r_small_order", pk, 4, Rt + le(k_of(Rt, pk, msg) * a % L), "R = T (order 8), S = k*a")

# R = identity (canonical encoding), S = k*a: the cofactorless equation holds
# exactly. OpenSSL (and Go, RFC 8032) accept; libsodium refuses any
# small-order R.
msg = tx_message(pk, 5)
Rid = compress(IDENTITY)
case("r_identity", pk, 5, Rid + le(k_of(Rid, pk, msg) * a % L), "R = identity (01 00..00), S = k*a")

# R = identity with a non-canonical encoding (y = p + 1), S = k*a.
msg = tx_message(pk, 6)
Rnc = le(p + 1)
assert eq(decompress_lenient(Rnc), IDENTITY)
case("r_identity_noncanonical_y", pk, 6, Rnc + le(k_of(Rnc, pk, msg) * a % L), "R = identity encoded with y = p + 1, S = k*a")

# R = identity encoded as "negative zero" (x = 0 with the sign bit set).
msg = tx_message(pk, 7)
Rnz = le(1 | (1 << 255))
case("r_identity_negative_zero", pk, 7, Rnz + le(k_of(Rnz, pk, msg) * a % L), "R = identity encoded with the sign bit set (-0), S = k*a")

# Non-canonical R of an ordinary point: R = rB whose y < 19 is impossible to
# find, so flip the sign bit instead (a different point, -R): must fail.
sig = honest(8)
case("r_sign_flipped", pk, 8, sig[:31] + bytes([sig[31] ^ 0x80]) + sig[32:], "R with its sign bit flipped")
case("r_not_on_curve", pk, 8, le(2) + sig[32:], "R = y 2 is not on the curve")

# Wrong message and wrong key.
case("wrong_message", pk, 9, honest(10), "signature of another sequence number")

# --- key edge cases (refused at registration by the ledger) -----------------

# Mixed-order key A' = aB + T8. With k = H(R || A' || M) divisible by 8,
# S = r + k*a satisfies [S]B = R + [k]A' exactly: standard verifiers accept.
Amix = add(A, T8)
pk_mix = compress(Amix)
seq = 100
while True:
    msg = tx_message(pk_mix, seq)
    r = sha512_int(b"mix", msg) % L
    R = compress(mul(r, B))
    if k_of(R, pk_mix, msg) % 8 == 0:
        break
    seq += 1
case("key_mixed_order", pk_mix, seq, sign_with_R(R, r, pk_mix, a, msg), "A = aB + T (mixed order), k = 0 mod 8, S = r + k*a")

# Small-order keys: the identity and an order-8 point. R = identity, S = 0
# satisfies [0]B = I + [k]I for the identity key.
zero_sig = compress(IDENTITY) + le(0)
case("key_identity", compress(IDENTITY), 200, zero_sig, "A = identity, R = identity, S = 0")
# Order-8 key T with k = 0 mod 8: [0]B = I + [k]T = I.
seq = 300
while True:
    msg = tx_message(compress(T8), seq)
    if k_of(compress(IDENTITY), compress(T8), msg) % 8 == 0:
        break
    seq += 1
case("key_small_order", compress(T8), seq, zero_sig, "A = T (order 8), R = identity, S = 0, k = 0 mod 8")

# Non-canonical key encodings of the identity: y = p + 1 and negative zero.
case("key_identity_noncanonical_y", le(p + 1), 400, zero_sig, "A = identity encoded with y = p + 1, R = identity, S = 0")
case("key_identity_negative_zero", le(1 | (1 << 255)), 401, zero_sig, "A = identity encoded as -0, R = identity, S = 0")

# A key that is not a point at all.
case("key_not_on_curve", le(2), 402, honest(1), "A = y 2, not on the curve")

out = {
    "generator": "gen_ed25519_verdicts.py",
    "openssl": "cryptography " + cryptography.__version__ + " / " + default_backend().openssl_version_text(),
    "libsodium": "PyNaCl " + nacl.__version__ + " (bundled libsodium)",
    "chain_name": CHAIN_NAME.decode(),
    "genesis_body": GENESIS_BODY.hex(),
    "chain_id": CHAIN_ID.hex(),
    "timestamp_ms": TIMESTAMP_MS,
    "stream": STREAM,
    "bpm": BPM,
    "seed": seed.hex(),
    "cases": cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ed25519_verdicts.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
for c in cases:
    print(f"{c['name']:32} openssl={c['openssl']!s:5} libsodium={c['libsodium']!s:5}")
