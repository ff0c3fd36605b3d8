// The sensorchain dashboard (docs/DASHBOARD.md). Everything it shows comes
// from the gateway's API on this origin; everything it trusts is checked
// here by the core compiled to WebAssembly (sc.js). The viewer's key never
// leaves this page: it signs the login challenge and transactions here and
// opens sealed readings here.
import { Core, KIND, PERM, hex2b, b2hex, display, vitalJson } from "/assets/sc.js";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const short = (h) => (h ? h.slice(0, 10) + "…" : "—");
const time = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const addr = (a) => (a && a.length > 14 ? a.slice(0, 12) + "…" : a || "");

// Plausible ranges for the alarm marks (presentation only; the ledger's
// plausibility rule is the core's and runs on the gateway).
const RANGES = {
  body_temperature: { a: [3600, 3800] },
  spo2: { a: [92, 100] },
  heart_rate: { a: [50, 110] },
  blood_pressure: { a: [90, 140], b: [60, 90] },
};
const GAP_MS = 5000; // a longer pause between readings breaks the line
const SILENT_MS = 10000; // the ward calls a sensor silent after this
const MAX_POINTS = 400;
const STEP_S = 0.25; // chart resolution

const S = {
  core: null,
  head: null, // /chain/head: chain id, validators (the set certificates are checked against)
  seed: null, // Uint8Array, in this page only
  me: null, // {key, role, permissions, address}
  devices: new Map(), // device key -> {patient, series: Map(vital -> {...}), last, sealed}
  live: null,
  readable: [],
  dirty: new Set(),
  txIds: new Set(), // transactions of readings this viewer was shown (it may read them)
};

function say(text, error = false) {
  const m = $("msg");
  m.textContent = text;
  m.className = error ? "error" : "";
}

async function api(path, opts = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...opts });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const e = new Error((json && json.error && json.error.message) || res.status + " " + res.statusText);
    e.status = res.status;
    e.code = json && json.error && json.error.code;
    throw e;
  }
  return { json, text };
}

function mark(ok, text) {
  return el("span", { class: "mark " + (ok === null ? "wait" : ok ? "ok" : "bad") }, text);
}

// ---- tabs

function showTab(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "tab-" + name;
  if (name === "chain") refreshChain();
  if (name === "cluster") refreshCluster();
  if (name === "devices") refreshDevices();
  if (name === "vitals") drawCharts(true);
}

// ---- login

function readSeed(text) {
  const line = (text || "").split("\n").map((l) => l.trim()).find((l) => l && !l.startsWith("#")) || "";
  const b = hex2b(line);
  if (b.length !== 32) throw new Error("a key is 64 hex digits");
  return b;
}

async function login(ev) {
  ev.preventDefault();
  try {
    const seed = readSeed($("key").value);
    $("key").value = "";
    const key = S.core.publicKey(seed);
    const c = (await api("/auth/challenge", { method: "POST" })).json;
    const signature = S.core.signLogin(seed, c.chain_id, c.gateway, c.challenge, c.expires_ms);
    const r = await api("/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ key, challenge: c.challenge, expires_ms: c.expires_ms, signature }),
    });
    S.seed = seed;
    S.me = r.json;
    $("login-form").hidden = true;
    $("whoami").hidden = false;
    $("who").textContent = `${S.me.role || "identity"} ${S.me.address} (key id ${S.me.key_id || key.slice(0, 16)}), ${S.me.permissions.join(", ")}`;
    say(`logged in: the challenge was signed in this page with your key (${key.slice(0, 16)}…)`);
    await startViewing();
  } catch (e) {
    say("login failed: " + e.message, true);
  }
}

async function logout() {
  try { await api("/auth/logout", { method: "POST" }); } catch (_) { /* always 204 */ }
  location.reload();
}

function sees(perm) {
  return S.me && S.me.permissions.includes(perm);
}

// ---- what the viewer may read

async function startViewing() {
  const me = (await api("/identities/" + S.me.key)).json;
  S.meIdentity = me;
  // may this viewer read any device? (its own devices, or a patient's consent)
  const readsAny = (me.devices && me.devices.length > 0) || (me.consented_by && me.consented_by.length > 0);
  $("actions").hidden = !(sees("admin") || S.me.role === "patient");
  if (!readsAny) {
    $("ward-note").textContent = "No patient's vitals are readable with this identity (no consent, no device of its own).";
    $("ward-rows").replaceChildren();
    return;
  }
  $("ward-note").textContent = "Latest value of every device you may read; click a row for its verification.";
  const since = Date.now() - 15000;
  try {
    const r = (await api(`/readings?from=${since}&limit=10000`)).json;
    for (const x of r.readings) addReading(x);
  } catch (e) {
    if (e.status !== 403) throw e;
  }
  renderWard();
  startLive();
}

function startLive() {
  if (S.live) S.live.close();
  const es = new EventSource("/readings/live");
  S.live = es;
  es.addEventListener("reading", (e) => addReading(JSON.parse(e.data)));
  es.addEventListener("block", (e) => onBlock(JSON.parse(e.data)));
  es.addEventListener("end", (e) => {
    say("live stream ended: " + e.data, true);
    es.close();
  });
}

function device(key) {
  let d = S.devices.get(key);
  if (!d) {
    d = { key, series: new Map(), last: 0, sealedLast: null, opened: null, lastOpenTry: 0 };
    S.devices.set(key, d);
    // its patient (the viewer may read the device, so its identity too)
    api("/identities/" + key).then((r) => {
      d.patient = r.json.patient;
      d.role = r.json.role;
    }).catch(() => {});
  }
  return d;
}

function outOfRange(v) {
  const r = RANGES[v.vital];
  if (!r) return false;
  const a = v.vital === "body_temperature" ? v.centi_celsius : v.vital === "spo2" ? v.percent : v.vital === "heart_rate" ? v.bpm : v.systolic_mmhg;
  if (a < r.a[0] || a > r.a[1]) return true;
  return v.vital === "blood_pressure" && (v.diastolic_mmhg < r.b[0] || v.diastolic_mmhg > r.b[1]);
}

function values(v) {
  switch (v.vital) {
    case "body_temperature": return [v.centi_celsius / 100];
    case "spo2": return [v.percent];
    case "heart_rate": return [v.bpm];
    case "blood_pressure": return [v.systolic_mmhg, v.diastolic_mmhg];
    default: return null;
  }
}

/// Adds a plain value (from the API, or opened here) to its chart series.
function addPoint(d, v, ts, txId, via) {
  const vals = values(v);
  if (!vals) return;
  let s = d.series.get(v.vital);
  if (!s) {
    s = { vital: v.vital, x: [], ys: vals.map(() => []), alarm: [], chart: null, latest: null };
    d.series.set(v.vital, s);
  }
  const t = ts / 1000;
  const prev = s.x.length ? s.x[s.x.length - 1] : null;
  const bad = outOfRange(v);
  s.latest = { v, ts, bad, txId, via };
  // keep the series in time order, at most one point per STEP_S (sensors
  // may send hundreds a second; the latest value is always shown)
  if (prev !== null && (t < prev || (t - prev < STEP_S && !bad))) return;
  // (sealed values are opened here one a device a second: sparser)
  if (prev !== null && (t - prev) * 1000 > (via === "plain" ? GAP_MS : 4 * GAP_MS)) {
    s.x.push(prev + 0.001);
    s.ys.forEach((y) => y.push(null));
    s.alarm.push(null);
  }
  s.x.push(t);
  vals.forEach((x, i) => s.ys[i].push(x));
  s.alarm.push(bad ? vals[0] : null);
  if (s.x.length > MAX_POINTS) {
    const cut = s.x.length - MAX_POINTS;
    s.x.splice(0, cut);
    s.ys.forEach((y) => y.splice(0, cut));
    s.alarm.splice(0, cut);
  }
  S.dirty.add(d.key + "/" + v.vital);
}

function addReading(x) {
  const d = device(x.device);
  d.last = Math.max(d.last, x.timestamp_ms);
  d.address = x.device_address;
  S.txIds.add(x.tx_id);
  if (x.value.encoding === "plain") {
    addPoint(d, x.value, x.timestamp_ms, x.tx_id, "plain");
  } else {
    d.sealedLast = x;
    d.sealedRecipients = x.value.recipients;
  }
}

/// Opens the latest sealed reading of each device, here, with the viewer's
/// key (at most one a device a second).
async function openSealedReadings() {
  if (!S.seed) return;
  for (const d of S.devices.values()) {
    const x = d.sealedLast;
    if (!x || Date.now() - d.lastOpenTry < 1000 || (d.opened && d.opened.tx_id === x.tx_id)) continue;
    d.lastOpenTry = Date.now();
    try {
      const t = (await api("/txs/" + x.tx_id)).json;
      const raw = hex2b(t.raw);
      const sig = S.core.verifyTx(S.head.chain_id, x.device, raw.slice());
      const r = S.core.openSealed(S.seed, S.head.chain_id, raw);
      if (r.ok) {
        const v = vitalJson(r.value);
        d.opened = { tx_id: x.tx_id, key_id: r.key_id, v, ts: x.timestamp_ms, signed: sig.ok };
        addPoint(d, v, x.timestamp_ms, x.tx_id, "sealed, opened in your browser with key " + r.key_id);
      } else {
        d.opened = { tx_id: x.tx_id, error: r.error };
      }
    } catch (e) {
      d.opened = { tx_id: x.tx_id, error: e.message };
    }
  }
}

function renderWard() {
  const rows = [];
  const now = Date.now();
  for (const d of [...S.devices.values()].sort((a, b) => a.key.localeCompare(b.key))) {
    const silent = now - d.last > SILENT_MS;
    const patient = d.patient ? short(d.patient) : "";
    const entries = [...d.series.values()];
    if (d.sealedLast && !entries.length) entries.push(null);
    for (const s of entries) {
      const l = s && s.latest;
      let value, vital, state, at;
      if (l) {
        vital = l.v.vital;
        value = el("span", { class: l.via === "plain" ? "" : "opened" }, display(l.v), l.via === "plain" ? "" : ` (${l.via})`);
        state = silent ? ["silent", "state-silent"] : l.bad ? ["alarm", "state-alarm"] : ["ok", "state-ok"];
        at = time(l.ts);
      } else {
        vital = "sealed";
        const why = d.opened && d.opened.error ? `sealed — ${d.opened.error}` : "sealed";
        value = el("span", { class: "sealed" }, why);
        state = silent ? ["silent", "state-silent"] : ["—", ""];
        at = time(d.last);
      }
      rows.push(el("tr", { "data-device": d.key, "data-vital": vital, onclick: () => showReading(d, s) },
        el("td", {}, patient), el("td", { class: "mono", title: d.key }, addr(d.address) || short(d.key)), el("td", {}, vital),
        el("td", { class: "value" }, value), el("td", {}, at), el("td", { class: state[1] + " state" }, state[0])));
    }
  }
  $("ward-rows").replaceChildren(...rows);
}

// ---- reading detail: its signature and inclusion proof, checked here

async function showReading(d, s) {
  const box = $("reading-detail");
  box.hidden = false;
  const l = s && s.latest;
  const txId = l ? l.txId : d.sealedLast && d.sealedLast.tx_id;
  box.dataset.tx = txId || "";
  box.dataset.device = d.key;
  $("reading-info").replaceChildren(
    el("div", {}, "device ", el("span", { class: "mono" }, d.key)),
    el("div", {}, "transaction ", el("span", { class: "mono" }, txId || "—")),
    el("div", {}, l ? `value ${display(l.v)} (${l.via})` : "sealed"),
  );
  $("open-result").textContent = "";
  $("reading-checks").replaceChildren(txId ? await verifyTx(txId, false) : "");
}

async function openWithOtherKey(ev) {
  ev.preventDefault();
  const out = $("open-result");
  try {
    const seed = readSeed($("open-with").value);
    $("open-with").value = "";
    const d = S.devices.get($("reading-detail").dataset.device);
    const x = d && d.sealedLast;
    if (!x) throw new Error("this device has no sealed reading here");
    const t = (await api("/txs/" + x.tx_id)).json;
    const kid = S.core.publicKey(seed.slice());
    const r = S.core.openSealed(seed, S.head.chain_id, hex2b(t.raw));
    out.className = r.ok ? "opened" : "sealed";
    out.textContent = r.ok
      ? `opened in your browser with key ${r.key_id}: ${display(vitalJson(r.value))}`
      : `sealed for key ${kid.slice(0, 16)}…: ${r.error}`;
  } catch (e) {
    out.className = "sealed";
    out.textContent = "sealed: " + e.message;
  }
}

// ---- the chain

let chainBusy = false;
let lastBlockRefresh = 0;

function onBlock(b) {
  if (!$("tab-chain").hidden && Date.now() - lastBlockRefresh > 3000) refreshChain();
}

async function loadHead() {
  S.head = (await api("/chain/head")).json;
  $("chain-name").textContent = `— ${S.head.chain_name} (chain ${S.head.chain_id.slice(0, 12)}…, height ${S.head.height})`;
}

/// Checks one block header answer: hash, certificate.
function checkHeader(h) {
  const hb = hex2b(h.header_hex);
  const d = S.core.decodeHeader(hb.slice());
  const checks = [];
  if (!d.ok) return { ok: false, checks: [["header decodes", false, d.error]], hb };
  checks.push(["header hash computed here equals the block hash", d.hash === h.hash, d.hash]);
  if (h.proposer_sig) {
    const p = S.core.verifyProposal(hb.slice(), h.proposer_sig);
    checks.push(["proposer's signature over the hash", p.ok, p.ok ? short(p.proposer) : p.error]);
  }
  if (h.finality_cert) {
    const c = S.core.verifyCert(hb.slice(), h.finality_cert, S.head.validators);
    checks.push(["finality certificate", c.ok, c.ok ? `${c.votes} votes, quorum ${c.quorum} of ${S.head.validators.length} validators` : c.error]);
  } else {
    checks.push(["finality certificate", null, "none yet (not final)"]);
  }
  return { ok: checks.every((c) => c[1] !== false), checks, hb, d };
}

function checkList(checks) {
  return el("ul", { class: "checks" }, ...checks.map(([what, ok, note]) =>
    el("li", { class: ok === null ? "" : ok ? "ok" : "bad" }, what + (note ? ": " + note : ""))));
}

async function refreshChain() {
  if (chainBusy || !S.core) return;
  chainBusy = true;
  lastBlockRefresh = Date.now();
  try {
    await loadHead();
    const top = S.head.height;
    const from = Math.max(0, top - 9);
    const hs = [];
    for (let h = top; h >= from; h--) hs.push((await api(`/blocks/${h}/header`)).json);
    const rows = [];
    for (let i = 0; i < hs.length; i++) {
      const h = hs[i];
      const r = checkHeader(h);
      let link = null;
      if (i + 1 < hs.length) {
        const l = S.core.verifyLink([hex2b(hs[i + 1].header_hex), r.hb.slice()]);
        link = l.ok && l.hash === h.hash;
        r.checks.push([`links to block ${h.height - 1} (prev_hash is its hash)`, link, l.ok ? "" : l.error]);
        r.ok = r.ok && link;
      }
      const votes = h.finality_cert ? h.finality_cert.votes.length : 0;
      rows.push(el("tr", { "data-height": h.height, onclick: () => showBlock(h, r) },
        el("td", {}, h.height), el("td", { class: "mono" }, short(h.hash)), el("td", { class: "mono" }, short(h.proposer)),
        el("td", {}, h.tx_count), el("td", {}, h.finality_cert ? `${votes} signatures` : "not final yet"),
        el("td", {}, mark(r.ok, r.ok ? "verified in your browser" : "FAILED"))));
    }
    $("blocks").replaceChildren(...rows);
  } catch (e) {
    say("chain: " + e.message, true);
  } finally {
    chainBusy = false;
  }
}

function showBlock(h, r) {
  const box = $("block-detail");
  box.hidden = false;
  box.dataset.height = h.height;
  const d = r.d || {};
  box.replaceChildren(
    el("h3", {}, `Block ${h.height} `, mark(r.ok, r.ok ? "verified in your browser" : "FAILED")),
    el("div", { class: "mono" }, "hash ", h.hash),
    el("div", { class: "mono" }, "prev ", d.prev_hash || ""),
    el("div", { class: "mono" }, "tx root ", d.tx_root || ""),
    el("div", {}, "proposer ", el("span", { class: "mono" }, h.proposer), " at ", d.timestamp_ms ? new Date(d.timestamp_ms).toISOString() : ""),
    el("div", {}, `${h.tx_count} transactions, ${h.size_bytes} bytes`),
    el("div", {}, "finality signatures: ", h.finality_cert ? h.finality_cert.votes.map((v) => v.validator_key_id).join(", ") : "none yet"),
    checkList(r.checks),
    el("p", { class: "muted" }, `validator set: the ${S.head.validators.length} keys holding validate in GET /chain/head at load`),
  );
}

/// Audits the header chain from genesis to the last final block here: each
/// header strictly decoded and linked to the one before by its hash, the
/// last one's finality certificate checked against the validator set.
async function auditChain() {
  const box = $("audit-result");
  box.replaceChildren(mark(null, "auditing…"));
  const checks = [];
  let ok = true;
  try {
    await loadHead();
    // the last block with a certificate (the head may not be final yet)
    let top = null;
    for (let h = S.head.height; h >= Math.max(0, S.head.height - 8) && !top; h--) {
      const x = (await api(`/blocks/${h}/header`)).json;
      if (x.finality_cert || h === 0) top = x;
    }
    const g = (await api("/blocks/0/header")).json;
    let prev = hex2b(g.header_hex);
    const gd = S.core.decodeHeader(prev.slice());
    const gok = gd.ok && gd.hash === g.hash && gd.chain_id === S.head.chain_id;
    checks.push(["genesis header decodes, hashes to its hash, names this chain", gok, gd.ok ? short(gd.hash) : gd.error]);
    ok = ok && gok;
    let from = 0, linked = 0;
    while (ok && from < top.height) {
      const to = Math.min(top.height, from + 2048);
      const c = (await api(`/chain/consistency?from=${from}&to=${to}`)).json;
      const hs = c.headers.map(hex2b);
      if (hs.length !== to - from) throw new Error(`asked for ${to - from} headers, got ${hs.length}`);
      for (let i = 0; i < hs.length; i += 64) {
        const chunk = [prev, ...hs.slice(i, i + 64)];
        const r = S.core.verifyLink(chunk.map((b) => b.slice()));
        if (!r.ok) {
          checks.push([`headers ${from + i} to ${from + i + chunk.length - 1} link`, false, r.error]);
          ok = false;
          break;
        }
        prev = chunk[chunk.length - 1];
        linked += chunk.length - 1;
      }
      from = to;
    }
    if (ok) {
      const last = S.core.decodeHeader(prev.slice());
      const same = last.ok && last.hash === top.hash && last.height === top.height;
      checks.push([`${linked} headers link by hash from genesis to block ${top.height}`, same, same ? short(last.hash) : "the chain ends elsewhere"]);
      ok = ok && same;
      if (top.finality_cert) {
        const c = S.core.verifyCert(prev.slice(), top.finality_cert, S.head.validators);
        checks.push([`block ${top.height} is final`, c.ok, c.ok ? `${c.votes} of ${S.head.validators.length} validators, quorum ${c.quorum}` : c.error]);
        ok = ok && c.ok;
      }
    }
  } catch (e) {
    checks.push(["audit", false, e.message]);
    ok = false;
  }
  box.replaceChildren(el("div", { class: "audit", "data-ok": ok ? "1" : "0" },
    mark(ok, ok ? "chain audited in your browser" : "audit FAILED in your browser"), checkList(checks)));
}

/// Verifies a transaction's inclusion proof (and, when the viewer may read
/// it, its signer's signature) here; `tamper` flips one byte of the
/// gateway's answer first, as a proxy in the middle would.
async function verifyTx(id, tamper) {
  const checks = [];
  let ok = true;
  try {
    if (!/^[0-9a-f]{64}$/.test(id)) throw new Error("a transaction id is 64 hex digits");
    if (!S.head) await loadHead();
    const p = (await api(`/txs/${id}/proof`)).json;
    if (tamper) {
      // one byte of the answer flipped: of the proof's path, or of the header
      const flip = (h, i) => h.slice(0, i) + (parseInt(h[i], 16) ^ 1).toString(16) + h.slice(i + 1);
      if (p.path.length) p.path[0] = flip(p.path[0], 1);
      else p.header_hex = flip(p.header_hex, p.header_hex.length - 1);
      checks.push(["one byte of the gateway's answer flipped (test of the check)", null, ""]);
    }
    const hb = hex2b(p.header_hex);
    checks.push(["the proof is for the transaction asked for", p.leaf_hash === id, ""]);
    ok = ok && p.leaf_hash === id;
    const r = S.core.verifyProof(id, p.index, p.tree_size, p.block_hash, hb.slice(), p.path);
    checks.push([`RFC 6962 inclusion proof (leaf ${p.index} of ${p.tree_size}) to the tx_root of block ${p.height}, whose header hashes to its block hash`, r.ok, r.ok ? "" : r.error]);
    ok = ok && r.ok;
    if (p.finality_cert) {
      const c = S.core.verifyCert(hb.slice(), p.finality_cert, S.head.validators);
      checks.push(["block's finality certificate", c.ok, c.ok ? `${c.votes} votes, quorum ${c.quorum}` : c.error]);
      ok = ok && c.ok;
    } else {
      checks.push(["block's finality certificate", null, "none yet"]);
    }
    if (S.me && S.txIds.has(id)) {
      const t = (await api("/txs/" + id)).json;
      const raw = hex2b(t.raw);
      if (tamper) raw[raw.length - 1] ^= 1;
      const v = S.core.verifyTx(S.head.chain_id, t.signer, raw);
      const same = v.ok && v.id === id;
      checks.push([`signature of ${t.kind === "reading" ? "the device" : "the signer"} ${short(t.signer)} over the exact bytes, whose leaf hash is the id`, same, v.ok ? (same ? "" : "another id") : v.error]);
      ok = ok && same;
    }
  } catch (e) {
    checks.push(["answer", false, e.message]);
    ok = false;
  }
  return el("div", { class: "proof", "data-ok": ok ? "1" : "0" },
    mark(ok, ok ? "verified in your browser" : "verification FAILED in your browser"), checkList(checks));
}

async function proofSubmit(ev, tamper) {
  if (ev) ev.preventDefault();
  const id = $("tx-id").value.trim().toLowerCase();
  $("proof-result").replaceChildren(mark(null, "checking…"));
  $("proof-result").replaceChildren(await verifyTx(id, tamper));
}

// ---- devices and transactions signed here

async function refreshDevices() {
  if (!S.me) {
    $("device-rows").replaceChildren(el("tr", {}, el("td", { colSpan: 9 }, "Log in to see devices.")));
    return;
  }
  try {
    let ids;
    if (sees("admin") || sees("validate") || sees("audit")) {
      ids = (await api("/identities")).json.identities;
    } else {
      ids = [];
      for (const k of [S.me.key, ...S.devices.keys()]) ids.push((await api("/identities/" + k)).json);
    }
    const rows = ids.map((i) => {
      const d = S.devices.get(i.key);
      if (d && i.patient) d.patient = i.patient;
      const links = i.links || { live_sessions: 0, rejected: {} };
      const rejected = Object.entries(links.rejected).map(([r, n]) => `${r} ${n}`).join(", ");
      const acts = el("td", {});
      if (sees("admin") && i.key !== S.me.key) {
        if (i.permissions.includes("connect")) {
          acts.append(el("button", { class: "revoke", onclick: () => revoke(i) }, "revoke"));
        } else {
          acts.append(el("button", { class: "grant", onclick: () => grant(i) }, "grant connect"));
        }
      }
      return el("tr", { "data-key": i.key, "data-role": i.role || "" },
        el("td", { class: "mono" }, i.address), el("td", {}, i.role || "—"),
        el("td", { class: "perms" }, i.permissions.join(", ") || "none"),
        el("td", { class: "mono" }, i.patient ? short(i.patient) : ""),
        el("td", {}, i.last_sequence ?? "—"), el("td", {}, d && d.last ? time(d.last) : "—"),
        el("td", { class: "session" }, links.live_sessions > 0 ? "live" : "—"),
        el("td", { class: "rejected" }, rejected || "none"), acts);
    });
    $("device-rows").replaceChildren(...rows);
  } catch (e) {
    say("devices: " + e.message, true);
  }
  try {
    const m = (await api("/metrics")).text;
    const rej = [...m.matchAll(/^sensorchain_rejects_total\{reason="([a-z_]+)"\} (\d+)/gm)].map((x) => `${x[1]} ${x[2]}`);
    $("rejects").textContent = "rejected submissions on this gateway, by reason: " + (rej.join(", ") || "none");
  } catch (_) { /* metrics are optional */ }
}

/// Signs `kind(a, b)` here with the viewer's key and submits it to POST /txs.
async function submit(kind, a, b, what) {
  const out = $("tx-result");
  out.textContent = `signing ${what} in this page…`;
  try {
    const me = (await api("/identities/" + S.me.key)).json;
    const seq = (me.last_sequence || 0) + 1;
    const tx = S.core.signTx(S.seed, S.head.chain_id, seq, Date.now(), kind, a, b);
    const r = await api("/txs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ tx: b2hex(tx) }),
    });
    out.textContent = `${what}: committed in block ${r.json.height} (tx ${r.json.tx_id.slice(0, 16)}…), signed in this page`;
    out.dataset.tx = r.json.tx_id;
    await refreshDevices();
  } catch (e) {
    out.textContent = `${what}: refused — ${e.message}`;
  }
}

const byte = (n) => { const b = new Uint8Array(32); b[0] = n; return b; };

function revoke(i) {
  const bits = i.permissions.filter((p) => p === "connect" || p === "write").reduce((n, p) => n | PERM[p], 0);
  return submit(KIND.REVOKE, hex2b(i.key), byte(bits), `revoke ${i.permissions.filter((p) => PERM[p] & bits).join("+")} of ${i.address}`);
}

function grant(i) {
  return submit(KIND.GRANT, hex2b(i.key), byte(PERM.connect), `grant connect to ${i.address}`);
}

// ---- the cluster

async function refreshCluster() {
  try {
    const c = (await api("/cluster")).json;
    // each member's own report (asked by this gateway over the peer links);
    // this gateway's row is its own view
    const own = { role: c.role, term: c.term, height: c.height, finalized_height: c.finalized_height, health: c.health };
    const cell = (m, f) => {
      const r = m.id === c.node_id ? own : m.reported;
      return r ? f(r) : "—";
    };
    $("cluster-view").replaceChildren(
      el("p", {}, `This gateway is member ${c.node_id} (${c.role}, term ${c.term}); leader ${c.leader ?? "none"}; evidence pairs ${c.evidence}.`),
      el("table", {}, el("thead", {}, el("tr", {}, ...["member", "role", "term", "height", "finalized", "health", "voter", "lag", "address", "key"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...c.members.map((m) => el("tr", { "data-member": m.id, class: m.unreachable ? "unreachable" : "" },
          el("td", {}, String(m.id) + (m.id === c.node_id ? " (this)" : "")),
          el("td", { class: "role" }, m.unreachable ? "unreachable" : cell(m, (r) => r.role)),
          el("td", {}, cell(m, (r) => r.term)),
          el("td", { class: "height" }, cell(m, (r) => r.height)),
          el("td", {}, cell(m, (r) => r.finalized_height ?? "—")),
          el("td", { title: m.unreachable || "" }, m.unreachable ? "no answer" : cell(m, (r) => r.health)),
          el("td", {}, m.voter ? "yes" : "no"), el("td", {}, m.lag ?? "—"),
          el("td", { class: "mono" }, m.addr), el("td", { class: "mono" }, short(m.key)))))),
      el("p", { class: "muted" }, "Each member's role, term, heights and health are its own report, asked by this gateway over the peer links (GET /cluster); lag is the leader's view."),
    );
  } catch (e) {
    say("cluster: " + e.message, true);
  }
}

// ---- charts (uPlot), redrawn at most once a second

const COLORS = ["#1f4e79", "#6a3d9a"];

function drawCharts(force) {
  if ($("tab-vitals").hidden && !force) return;
  const box = $("charts");
  for (const d of S.devices.values()) {
    for (const s of d.series.values()) {
      const id = d.key + "/" + s.vital;
      if (!s.chart) {
        const host = el("div", { class: "chart", "data-device": d.key, "data-vital": s.vital, "data-points": "0" },
          el("h4", { title: d.key }, `${addr(d.address) || short(d.key)} — ${s.vital.replace("_", " ")}`));
        box.append(host);
        if (typeof uPlot === "undefined") continue;
        // the last 30 s, scrolling with the newest point
        // (from the data itself: uPlot widens a single point's range by days)
        const scales = { x: { time: true, range: (u) => {
          const xs = u.data[0], now = Date.now() / 1000;
          if (!xs || !xs.length) return [now - 30, now];
          const first = xs[0], last = xs[xs.length - 1];
          return [first === last ? last - 15 : Math.max(first, last - 30), last + 0.5];
        } } };
        const series = [{}, ...s.ys.map((_, i) => ({ label: s.vital === "blood_pressure" ? ["systolic", "diastolic"][i] : s.vital, stroke: COLORS[i], width: 1.5 })),
          { label: "out of range", stroke: "#c62828", width: 0, points: { show: true, size: 7, fill: "#c62828" } }];
        s.chart = new uPlot({ width: Math.max(240, host.clientWidth - 10), height: 170, series, scales, legend: { show: true, live: false } },
          [s.x, ...s.ys, s.alarm], host);
        s.host = host;
        S.dirty.add(id);
      }
      if (S.dirty.has(id) && s.chart) {
        s.chart.setData([s.x, ...s.ys, s.alarm]);
        s.host.dataset.points = String(s.x.length);
        S.dirty.delete(id);
      }
    }
  }
}

async function tick() {
  drawCharts(false);
  renderWardThrottled();
  await openSealedReadings();
}

let lastWard = 0;
function renderWardThrottled() {
  if (Date.now() - lastWard < 1000 || !S.me) return;
  lastWard = Date.now();
  renderWard();
}

// ---- start

async function main() {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("key-file").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (f) $("key").value = (await f.text()).trim();
  });
  $("open-form").addEventListener("submit", openWithOtherKey);
  $("proof-form").addEventListener("submit", (e) => proofSubmit(e, false));
  $("tamper-tx").addEventListener("click", () => proofSubmit(null, true));
  $("audit").addEventListener("click", auditChain);
  $("assign-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submit(KIND.ASSIGN, hex2b($("assign-device").value.trim()), hex2b($("assign-patient").value.trim()), "assign");
  });
  $("consent-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submit(KIND.CONSENT, hex2b($("consent-reader").value.trim()), byte(Number($("consent-granted").value)), "consent");
  });
  try {
    S.core = await Core.load("/assets/sensorchain.wasm");
    $("core-status").replaceChildren(mark(true, "core loaded"), ` sensorchain-core as WebAssembly, ${Math.round(S.core.size / 1024)} KiB: every check on this page runs in your browser`);
    $("core-status").dataset.ready = "1";
    await loadHead();
  } catch (e) {
    $("core-status").replaceChildren(mark(false, "core not loaded"), " " + e.message);
    return;
  }
  setInterval(tick, 1000);
}

main();
