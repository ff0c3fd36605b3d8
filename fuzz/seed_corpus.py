#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the test vectors in tests/vectors/*.json.

    python3 fuzz/seed_corpus.py

Only the byte-oriented decoders get seeds (the structured targets start from
libFuzzer's own inputs). Each seed file is named after its origin.
"""
import hashlib
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
VEC = os.path.join(HERE, "..", "tests", "vectors")


def load(name):
    with open(os.path.join(VEC, name + ".json")) as f:
        return json.load(f)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def cobs(data):
    out, block = bytearray(), bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += bytes([255]) + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out) + b"\x00"


seeds = {}


def add(target, origin, data):
    seeds.setdefault(target, []).append((origin, data))


h = bytes.fromhex
ledger = load("ledger")
add("decode_tx", "ledger-reading", h(ledger["reading"]["transaction"]))
add("decode_block", "ledger-genesis", h(ledger["genesis"]["block"]))
add("decode_block", "ledger-block1", h(ledger["block1"]["block"]))
add("decode_block_header", "ledger-block1-header", h(ledger["block1"]["header"]))
fv = ledger["finality_vote"]
vote = h(fv["validator_key_id"]) + h(fv["signature"])
add("decode_cert", "ledger-vote", vote)
add("decode_cert", "ledger-cert-1-vote", varint(1) + h(ledger["block1"]["hash"]) + varint(1) + vote)

hs = load("handshake")
link = []
for i, m in enumerate(["message1", "message2", "message3"]):
    msg = h(hs[m])
    add("decode_handshake", "handshake-" + m, msg)
    link.append(varint(i) + varint(len(msg)) + msg)
session = load("session")
for f in session["frames"]:
    frame = h(f["frame"])
    link.append(varint(3) + varint(len(frame)) + frame)
    add("decode_link", "session-payload-%d" % f["counter"], h(f["payload"]))
for i, l in enumerate(link):
    add("decode_link", "link-frame-%d" % i, l)
add("frame_accumulator", "link-stream", b"".join(cobs(l) for l in link))

peer = load("peer")
for r in peer["requests"]:
    add("decode_peer", "peer-request-" + r["request"], h(r["bytes"]))
for a in peer["answers"]:
    add("decode_peer", "peer-answer-" + a["answer"].replace(" ", "-"), h(a["bytes"]))
add("decode_peer", "peer-wire-request", h(peer["wire"]["request"]["message"]))
add("decode_peer", "peer-wire-answer", h(peer["wire"]["answer"]["message"]))

sealed = load("sealed")
add("decode_sealed", "sealed", h(sealed["sealed"]))

for target, items in seeds.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for origin, data in items:
        name = "seed-%s-%s" % (origin, hashlib.sha1(data).hexdigest()[:8])
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print("%-22s %d seeds" % (target, len(items)))
