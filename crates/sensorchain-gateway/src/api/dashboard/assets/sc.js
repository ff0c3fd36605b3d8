// sensorchain's core rules in the page: a thin wrapper around
// sensorchain.wasm (crates/sensorchain-wasm). It only packs bytes into the
// module's input buffer and unpacks its answers; every verdict (signature,
// Merkle proof, hash chain, finality certificate, sealed payload) is the
// core's, compiled to WebAssembly. Layouts: crates/sensorchain-wasm/src/lib.rs.

const ERRORS = {
  "-1": "input does not fit its layout",
  "-2": "bytes do not strictly decode",
  "-3": "not a key the ledger admits",
  "-4": "signature does not verify (strict Ed25519)",
  "-5": "signed by another key",
  "-10": "proof length does not fit its index and tree size",
  "-11": "inclusion proof leads to another root than the header's tx_root",
  "-12": "header hash is not the block hash",
  "-13": "headers do not form a hash chain",
  "-20": "certificate is for another block",
  "-21": "vote from a key that is not a validator",
  "-22": "two votes from one validator",
  "-23": "a vote's signature does not verify",
  "-24": "fewer valid votes than the quorum",
  "-30": "not a sealed reading",
  "-31": "this key is not one of its readers",
  "-32": "sealed payload does not open (tampered?)",
  "-33": "opened bytes are not a vital sign",
  "-40": "unknown transaction kind",
};

export const KIND = { GRANT: 1, REVOKE: 2, ASSIGN: 3, CONSENT: 4 };
export const PERM = { connect: 1, send: 2, receive: 4, write: 8, admin: 16, validate: 32, audit: 64 };
const VITALS = { 1: "body_temperature", 2: "spo2", 3: "blood_pressure", 4: "heart_rate", 5: "opaque" };

export function hex2b(s) {
  if (typeof s !== "string" || s.length % 2 || /[^0-9a-fA-F]/.test(s)) throw new Error("not hex");
  const b = new Uint8Array(s.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(s.substr(2 * i, 2), 16);
  return b;
}

export function b2hex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/// Packs parts (Uint8Array, or {u8}, {u16}, {u64} numbers) into one array.
function pack(parts) {
  const len = parts.reduce((n, p) => n + (p instanceof Uint8Array ? p.length : p.u8 !== undefined ? 1 : p.u16 !== undefined ? 2 : 8), 0);
  const out = new Uint8Array(len);
  const dv = new DataView(out.buffer);
  let o = 0;
  for (const p of parts) {
    if (p instanceof Uint8Array) { out.set(p, o); o += p.length; }
    else if (p.u8 !== undefined) { out[o] = p.u8; o += 1; }
    else if (p.u16 !== undefined) { dv.setUint16(o, p.u16, true); o += 2; }
    else { dv.setBigUint64(o, BigInt(p.u64), true); o += 8; }
  }
  return out;
}

const sized = (b) => [{ u16: b.length }, b];

function vital(dv, o) {
  const code = dv.getUint8(o);
  return { code, vital: VITALS[code] || null, a: dv.getInt32(o + 1, true), b: dv.getInt32(o + 5, true) };
}

export class Core {
  static async load(url) {
    const buf = await (await fetch(url)).arrayBuffer();
    const { instance } = await WebAssembly.instantiate(buf, {});
    return new Core(instance.exports, buf.byteLength);
  }

  constructor(x, size) {
    this.x = x;
    this.size = size;
  }

  /// Calls export `name` with `input`; returns {ok, code, error, out}.
  call(name, input) {
    const x = this.x;
    const cap = x.sc_in_cap();
    if (input.length > cap) return { ok: false, code: -1, error: ERRORS["-1"] };
    new Uint8Array(x.memory.buffer, x.sc_in(), input.length).set(input);
    input.fill(0); // it may hold a secret key: keep no copy here
    const n = x["sc_" + name](input.length);
    if (n < 0) return { ok: false, code: n, error: ERRORS[String(n)] || "error " + n };
    const out = new Uint8Array(x.memory.buffer, x.sc_out(), n).slice();
    return { ok: true, code: 0, out, dv: new DataView(out.buffer) };
  }

  publicKey(seed) {
    const r = this.call("public_key", pack([seed.slice()]));
    if (!r.ok) throw new Error(r.error);
    return b2hex(r.out);
  }

  signLogin(seed, chainHex, gatewayHex, nonceHex, expiresMs) {
    const r = this.call("sign_login", pack([seed.slice(), hex2b(chainHex), hex2b(gatewayHex), hex2b(nonceHex), { u64: expiresMs }]));
    if (!r.ok) throw new Error(r.error);
    return b2hex(r.out);
  }

  /// The exact bytes of a signed transaction (see KIND for a and b).
  signTx(seed, chainHex, sequence, timestampMs, kind, a, b) {
    const r = this.call("sign_tx", pack([seed.slice(), hex2b(chainHex), { u64: sequence }, { u64: timestampMs }, { u8: kind }, a, b]));
    if (!r.ok) throw new Error(r.error);
    return r.out;
  }

  /// A transaction's strict decoding and its signer's signature.
  verifyTx(chainHex, signerHex, txBytes) {
    const r = this.call("verify_tx", pack([hex2b(chainHex), hex2b(signerHex), txBytes]));
    if (!r.ok) return r;
    const d = r.dv;
    return {
      ok: true,
      id: b2hex(r.out.slice(0, 32)),
      sequence: Number(d.getBigUint64(32, true)),
      timestamp_ms: Number(d.getBigUint64(40, true)),
      reading: d.getUint8(48),
      stream: d.getUint16(49, true),
      value: vital(d, 51),
    };
  }

  decodeHeader(headerBytes) {
    const r = this.call("decode_header", headerBytes.slice());
    if (!r.ok) return r;
    const d = r.dv, h = (o) => b2hex(r.out.slice(o, o + 32));
    return {
      ok: true, hash: h(0), height: Number(d.getBigUint64(32, true)), prev_hash: h(40), tx_root: h(72),
      state_root: h(104), timestamp_ms: Number(d.getBigUint64(136, true)), proposer: h(144), chain_id: h(176),
    };
  }

  /// The headers (consecutive heights) form one hash chain.
  verifyLink(headers) {
    const parts = [{ u16: headers.length }];
    for (const h of headers) parts.push(...sized(h));
    const r = this.call("verify_link", pack(parts));
    return r.ok ? { ok: true, hash: b2hex(r.out) } : r;
  }

  /// The header's proposer signed its hash.
  verifyProposal(headerBytes, sigHex) {
    const r = this.call("verify_proposal", pack([...sized(headerBytes), hex2b(sigHex)]));
    return r.ok ? { ok: true, proposer: b2hex(r.out) } : r;
  }

  /// An RFC 6962 inclusion proof of leaf `leafHex` against the header's
  /// tx_root, the header's hash being `blockHashHex`.
  verifyProof(leafHex, index, treeSize, blockHashHex, headerBytes, pathHex) {
    const r = this.call("verify_proof", pack([hex2b(leafHex), { u64: index }, { u64: treeSize }, hex2b(blockHashHex),
      ...sized(headerBytes), { u16: pathHex.length }, ...pathHex.map(hex2b)]));
    return r.ok ? { ok: true, root: b2hex(r.out.slice(0, 32)) } : r;
  }

  /// A finality certificate (as the API's JSON) proves the header final
  /// under the validator set (keys in hex).
  verifyCert(headerBytes, cert, validators) {
    const parts = [...sized(headerBytes), { u64: cert.height }, hex2b(cert.block_hash), { u8: cert.votes.length }];
    for (const v of cert.votes) parts.push(hex2b(v.validator_key_id), hex2b(v.signature));
    parts.push({ u8: validators.length }, ...validators.map(hex2b));
    const r = this.call("verify_cert", pack(parts));
    return r.ok ? { ok: true, votes: r.out[0], quorum: r.out[1] } : r;
  }

  /// Opens a sealed reading (the transaction's exact bytes) with `seed`,
  /// here in the page.
  openSealed(seed, chainHex, txBytes) {
    const r = this.call("open_sealed", pack([seed.slice(), hex2b(chainHex), txBytes]));
    if (!r.ok) return r;
    return { ok: true, key_id: b2hex(r.out.slice(0, 8)), value: vital(r.dv, 8) };
  }
}

/// A vital as the page shows it.
export function display(v) {
  switch (v.vital) {
    case "body_temperature": return (v.centi_celsius / 100).toFixed(2) + " °C";
    case "spo2": return v.percent + " %";
    case "blood_pressure": return v.systolic_mmhg + "/" + v.diastolic_mmhg + " mmHg";
    case "heart_rate": return v.bpm + " bpm";
    default: return v.display || "?";
  }
}

/// A wasm vital ({code, a, b}) in the API's JSON shape.
export function vitalJson(v) {
  switch (v.vital) {
    case "body_temperature": return { vital: v.vital, centi_celsius: v.a };
    case "spo2": return { vital: v.vital, percent: v.a };
    case "blood_pressure": return { vital: v.vital, systolic_mmhg: v.a, diastolic_mmhg: v.b };
    case "heart_rate": return { vital: v.vital, bpm: v.a };
    default: return { vital: "opaque", display: "kind " + v.a };
  }
}
