// The gateway binary as a process (`tidings-gateway`, built with `--features gateway`): a Node
// backend publishes over the HTTP API, `socket.io-client` and `eventsource` receive exactly what
// is addressed to them; acks through the API; JWT refusals (each with its code, and logged); API
// keys; the backend webhook answering, timing out and down; `/metrics` parsed by
// parse-prometheus-text-format and checked against what the test did; SIGTERM drains within the
// grace period.
//
// Each test starts its own gateway on free 127.0.0.1 ports (`--bind 127.0.0.1:0`; the ports are
// read from its "listening" log line) and stops it at the end; TIDINGS_URL is not used. By hand:
//   cargo build --features gateway --bin tidings-gateway && node --test tests/interop/gateway.test.mjs
// Environment: CARGO_TARGET_DIR (where the binary is), GATEWAY_BIN (the binary itself).
//
// Every wait is bounded; every process, client and server is closed in `after` / `finally`.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, generateKeyPairSync, sign as cryptoSign } from "node:crypto";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EventSource } from "eventsource";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { io } from "socket.io-client";
import { awaitConnect, within, sleep, SOCKET_OPTS } from "./helpers.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR)
  : path.join(ROOT, "target");
const BIN = process.env.GATEWAY_BIN ?? path.join(TARGET, "debug", "tidings-gateway");
const WAIT = 5000;
const T = { timeout: 30000 };
const SECRET = "gateway-test-secret-0123456789abcdef";
const KEY = "key-for-tests-1";

// --- the gateway process ------------------------------------------------------------------------

const running = new Set();
after(async () => {
  for (const g of running) await g.stop();
});

/** Starts the gateway with `args`; resolves once it logged its addresses. */
async function startGateway(args, env = {}) {
  if (!existsSync(BIN)) {
    throw new Error(`${BIN} is missing: cargo build --features gateway --bin tidings-gateway`);
  }
  const child = spawn(BIN, ["--bind", "127.0.0.1:0", "--api-bind", "127.0.0.1:0", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs = [];
  let partial = "";
  let waiters = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  child.stderr.on("data", (d) => {
    partial += d;
    const lines = partial.split("\n");
    partial = lines.pop();
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ msg: line });
      }
    }
    wake();
  });
  let exit = null;
  const exited = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      wake();
      resolve(exit);
    }),
  );
  const g = {
    child,
    logs,
    exited,
    /** Waits (bounded) for a log line that `pred` accepts. */
    async waitLog(pred, what, ms = WAIT) {
      const deadline = Date.now() + ms;
      for (;;) {
        const found = logs.find(pred);
        if (found) return found;
        if (exit) throw new Error(`gateway exited (${JSON.stringify(exit)}) before ${what}; logs: ${JSON.stringify(logs)}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no log line for ${what} within ${ms} ms; logs: ${JSON.stringify(logs.slice(-20))}`);
        await within(left, new Promise((r) => waiters.push(r)), what).catch(() => {});
      }
    },
    async stop() {
      running.delete(g);
      if (exit) return;
      child.kill("SIGKILL");
      await within(WAIT, exited, "gateway exit").catch(() => {});
    },
  };
  running.add(g);
  const ready = await g.waitLog((l) => l.msg === "tidings-gateway listening", "the listening line", 10000);
  g.main = `http://${ready.main}`;
  g.api = ready.api ? `http://${ready.api}` : null;
  return g;
}

// --- tokens ---------------------------------------------------------------------------------------

const b64url = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

/** A JWT signed with `alg` (HS256/HS384 with a secret, RS256/ES256 with a private key). */
function jwt(claims, { alg = "HS256", secret = SECRET, key } = {}) {
  const head = `${b64url({ alg, typ: "JWT" })}.${b64url(claims)}`;
  let sig;
  if (alg === "none") sig = "";
  else if (alg.startsWith("HS")) sig = createHmac(`sha${alg.slice(2)}`, secret).update(head).digest("base64url");
  else if (alg === "RS256") sig = cryptoSign("sha256", Buffer.from(head), key).toString("base64url");
  else if (alg === "ES256") sig = cryptoSign("sha256", Buffer.from(head), { key, dsaEncoding: "ieee-p1363" }).toString("base64url");
  return `${head}.${sig}`;
}

const token = (user, tenant, extra = {}) => jwt({ sub: user, tenant, exp: now() + 600, ...extra });

// --- clients --------------------------------------------------------------------------------------

const clients = new Set();
after(() => {
  for (const c of clients) c.close();
});

/** A Socket.IO client that logs every event (name and first argument). */
async function sio(base, auth, opts = {}) {
  const socket = io(base, { ...SOCKET_OPTS, reconnection: false, transports: ["websocket"], auth, ...opts });
  clients.add(socket);
  socket.log = [];
  socket.onAny((event, data) => socket.log.push([event, data]));
  await awaitConnect(socket);
  return socket;
}

/** The connect_error of a Socket.IO client that must be refused. */
async function sioRefused(base, auth) {
  const socket = io(base, { ...SOCKET_OPTS, reconnection: false, transports: ["websocket"], auth });
  clients.add(socket);
  try {
    return await within(
      WAIT,
      new Promise((resolve, reject) => {
        socket.once("connect", () => reject(new Error("connected, but should have been refused")));
        socket.once("connect_error", resolve);
      }),
      "connect_error",
    );
  } finally {
    socket.close();
  }
}

/** An EventSource that logs the named events; resolves once open. */
async function sse(base, query, names, init = {}) {
  const url = `${base}/events?${new URLSearchParams(query)}`;
  const es = new EventSource(url, init);
  clients.add(es);
  es.log = [];
  for (const n of names) es.addEventListener(n, (e) => es.log.push([n, JSON.parse(e.data)]));
  await within(
    WAIT,
    new Promise((resolve, reject) => {
      es.onopen = resolve;
      es.onerror = (e) => reject(new Error(`SSE error: ${e.message ?? e.code}`));
    }),
    "SSE open",
  );
  es.onerror = null;
  return es;
}

/** Waits (bounded) until `log` holds an entry with this event name. */
async function waitFor(log, event, what = event) {
  const deadline = Date.now() + WAIT;
  while (!log.some(([e]) => e === event)) {
    if (Date.now() > deadline) throw new Error(`${what} did not arrive: ${JSON.stringify(log)}`);
    await sleep(10);
  }
}

// --- the publish API ------------------------------------------------------------------------------

/** A request to the API; resolves with {status, body (parsed JSON or text)}. */
async function api(base, method, p, body, { key = KEY, raw, headers = {} } = {}) {
  const h = { ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  if (body !== undefined || raw !== undefined) h["content-type"] = "application/json";
  const res = await fetch(`${base}${p}`, {
    method,
    headers: h,
    body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    signal: AbortSignal.timeout(WAIT),
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, body: parsed, headers: res.headers };
}

const send = (g, to, event, data, transport) =>
  api(g.api, "POST", "/api/v1/send", { to, event, data, ...(transport ? { transport } : {}) });

async function metrics(g) {
  const res = await fetch(`${g.api}/metrics`, { signal: AbortSignal.timeout(WAIT) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  const families = parsePrometheusTextFormat(await res.text());
  const value = (name, labels = {}) => {
    const f = families.find((x) => x.name === name);
    if (!f) return undefined;
    const m = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
    return m === undefined ? undefined : Number(m.value);
  };
  return { families, value };
}

// ---------------------------------------------------------------------------------------------------

describe("gateway: publish API to real clients", () => {
  test("each client receives exactly what is addressed to it; reach, rooms and batch are right", T, async () => {
    const g = await startGateway(["--jwt-secret", SECRET, "--api-keys", KEY]);
    const aliceSio = await sio(g.main, { token: token("alice", "acme") });
    const aliceSse = await sse(g.main, { token: token("alice", "acme") }, ["note", "room", "end"]);
    const bobSio = await sio(g.main, { token: token("bob", "acme") });
    // carol@globex sends her token in an Authorization header (a server-side EventSource can).
    const carolSse = await sse(g.main, {}, ["note", "room", "end"], {
      fetch: (u, init) => fetch(u, { ...init, headers: { ...init.headers, authorization: `Bearer ${token("carol", "globex")}` } }),
    });

    let r = await send(g, { user: "alice", tenant: "acme" }, "note", { n: 1 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { reached: { sse: 1, socketio: 1, total: 2 } });
    r = await send(g, { tenant: "acme" }, "note", { n: 2 }, "socket");
    assert.deepEqual(r.body.reached, { sse: 0, socketio: 2, total: 2 });
    r = await send(g, { tenant: "globex" }, "note", { n: 3 }, "sse");
    assert.deepEqual(r.body.reached, { sse: 1, socketio: 0, total: 1 });
    r = await send(g, { user: "nobody", tenant: "acme" }, "note", { n: 0 });
    assert.deepEqual(r.body.reached, { sse: 0, socketio: 0, total: 0 });

    // Rooms belong to users: bob joins, the list says so, a room send reaches only him.
    r = await api(g.api, "POST", "/api/v1/rooms/join", { user: "bob", tenant: "acme", room: "ops" });
    assert.deepEqual(r, { status: 200, body: { rooms: ["ops"] }, headers: r.headers });
    r = await api(g.api, "GET", "/api/v1/rooms?user=bob&tenant=acme");
    assert.deepEqual(r.body, { rooms: ["ops"] });
    r = await send(g, { room: "ops" }, "room", { r: 1 });
    assert.deepEqual(r.body.reached, { sse: 0, socketio: 1, total: 1 });
    r = await api(g.api, "POST", "/api/v1/rooms/leave", { user: "bob", tenant: "acme", room: "ops" });
    assert.deepEqual(r.body, { rooms: [] });
    r = await send(g, { room: "ops" }, "room", { r: 2 });
    assert.equal(r.body.reached.total, 0);

    // A batch: each send answered on its own; a bad one does not stop the others.
    r = await api(g.api, "POST", "/api/v1/batch", {
      sends: [
        { to: { user: "carol", tenant: "globex" }, event: "note", data: { n: 4 } },
        { to: { user: "alice", tenant: "acme" }, event: "connect", data: {} },
        { to: { user: "bob", tenant: "acme" }, event: "note", data: { n: 5 }, transport: "socket" },
      ],
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.results[0], { reached: { sse: 1, socketio: 0, total: 1 } });
    assert.equal(r.body.results[1].error.code, "invalid_event");
    assert.deepEqual(r.body.results[2], { reached: { sse: 0, socketio: 1, total: 1 } });

    // The end marker to everyone: once it is in, everything sent before it is in (one
    // connection keeps order), so the logs below are final.
    r = await send(g, "all", "end", null);
    assert.deepEqual(r.body.reached, { sse: 2, socketio: 2, total: 4 });
    for (const c of [aliceSio, bobSio, aliceSse, carolSse]) await waitFor(c.log, "end");
    assert.deepEqual(aliceSio.log, [["note", { n: 1 }], ["note", { n: 2 }], ["end", null]]);
    assert.deepEqual(aliceSse.log, [["note", { n: 1 }], ["end", null]]);
    assert.deepEqual(bobSio.log, [["note", { n: 2 }], ["room", { r: 1 }], ["note", { n: 5 }], ["end", null]]);
    assert.deepEqual(carolSse.log, [["note", { n: 3 }], ["note", { n: 4 }], ["end", null]]);
    await g.stop();
  });

  test("asks a user through the API: one outcome per connection, timeouts, nobody", T, async () => {
    const g = await startGateway(["--jwt-secret", SECRET, "--api-keys", KEY]);
    const phone = await sio(g.main, { token: token("dana", "acme") });
    phone.on("are-you-there", (data, ack) => ack({ here: true, got: data }));
    const tablet = await sio(g.main, { token: token("dana", "acme") });
    tablet.on("are-you-there", () => {}); // never answers
    let r = await api(g.api, "POST", "/api/v1/ask", { user: "dana", tenant: "acme", event: "are-you-there", data: { q: 1 }, timeout_ms: 400 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const outcomes = [...r.body.outcomes].sort((x, y) => x.status.localeCompare(y.status));
    assert.deepEqual(outcomes, [{ status: "ok", args: [{ here: true, got: { q: 1 } }] }, { status: "timeout" }]);
    r = await api(g.api, "POST", "/api/v1/ask", { user: "nobody", tenant: "acme", event: "are-you-there" });
    assert.deepEqual(r.body, { outcomes: [] });
    r = await api(g.api, "POST", "/api/v1/ask", { user: "dana", tenant: "acme", event: "x", timeout_ms: 60000 });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, "invalid_field");
    const m = await metrics(g);
    assert.equal(m.value("tidings_pending_acks"), 0, "the ack table emptied itself");
    await g.stop();
  });

  test("API keys, bad JSON, unknown fields, oversized bodies: refused with a stable code", T, async () => {
    const g = await startGateway(["--anonymous", "--api-keys", `${KEY},second-key`, "--api-max-body", "2000", "--api-max-batch", "2"]);
    const ok = { to: "all", event: "e" };
    let r = await api(g.api, "POST", "/api/v1/send", ok, { key: null });
    assert.equal(r.status, 401);
    assert.equal(r.body.error.code, "missing_api_key");
    assert.equal(r.headers.get("www-authenticate"), "Bearer");
    r = await api(g.api, "POST", "/api/v1/send", ok, { key: "wrong" });
    assert.equal(r.status, 401);
    assert.equal(r.body.error.code, "invalid_api_key");
    await g.waitLog((l) => l.msg === "publish API: wrong API key" && l.level === "warn", "the wrong-key log line");
    r = await api(g.api, "POST", "/api/v1/send", ok, { key: "second-key" });
    assert.equal(r.status, 200);
    const cases = [
      [{ raw: "{not json" }, 400, "bad_json"],
      [{ body: { ...ok, extra: 1 } }, 400, "unknown_field"],
      [{ body: { to: "all" } }, 400, "missing_field"],
      [{ body: { to: { room: "r", user: "u" }, event: "e" } }, 400, "invalid_field"],
      [{ body: { to: "all", event: "e", data: "x".repeat(3000) } }, 413, "body_too_large"],
      [{ body: { to: "all", event: "connect" } }, 400, "invalid_event"],
    ];
    for (const [{ raw, body }, status, code] of cases) {
      r = await api(g.api, "POST", "/api/v1/send", body, { raw });
      assert.equal(r.status, status, `${code}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, code);
      assert.equal(typeof r.body.error.message, "string");
    }
    r = await api(g.api, "POST", "/api/v1/batch", { sends: [ok, ok, ok] });
    assert.equal(r.body.error.code, "batch_too_large");
    r = await api(g.api, "GET", "/api/v1/send");
    assert.equal(r.status, 405);
    assert.equal(r.body.error.code, "method_not_allowed");
    r = await api(g.api, "POST", "/api/v1/nope", ok);
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, "not_found");
    r = await api(g.api, "GET", "/elsewhere");
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, "not_found");
    // The main port serves no API unless asked to (and then only with a key).
    r = await api(g.main, "POST", "/api/v1/send", ok);
    assert.equal(r.status, 404);
    await g.stop();

    const both = await startGateway(["--anonymous", "--api-keys", KEY, "--api-on-main-port", "--api-bind", "off"]);
    assert.equal(both.api, null);
    r = await api(both.main, "POST", "/api/v1/send", ok, { key: null });
    assert.equal(r.body.error.code, "missing_api_key");
    r = await api(both.main, "POST", "/api/v1/send", ok);
    assert.deepEqual(r.body.reached, { sse: 0, socketio: 0, total: 0 });
    r = await fetch(`${both.main}/metrics`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(r.status, 401);
    await both.stop();
  });
});

describe("gateway: JWT client authentication", () => {
  test("HS256: bad tokens are refused over both transports with their code, and logged", T, async () => {
    const g = await startGateway(["--jwt-secret", SECRET, "--allowed-tenants", "acme,globex", "--jwt-rooms-claim", "rooms"]);
    const exp = now() + 600;
    const cases = [
      ["missing_token", null, 401],
      ["token_expired", token("u", "acme", { exp: now() - 60 }), 401],
      ["token_not_yet_valid", token("u", "acme", { nbf: now() + 600 }), 401],
      ["bad_signature", jwt({ sub: "u", tenant: "acme", exp }, { secret: "another-secret-0123456789abcdefgh" }), 401],
      ["alg_none", jwt({ sub: "u", tenant: "acme", exp }, { alg: "none" }), 401],
      ["wrong_algorithm", jwt({ sub: "u", tenant: "acme", exp }, { alg: "HS384" }), 401],
      ["malformed_token", "not-a-jwt", 401],
      ["tenant_not_allowed", token("u", "initech"), 403],
    ];
    for (const [code, tok, status] of cases) {
      const err = await sioRefused(g.main, tok ? { token: tok } : {});
      assert.equal(err.data?.code, code, `socket.io ${code}: ${err.message}`);
      const res = await fetch(`${g.main}/events${tok ? `?token=${encodeURIComponent(tok)}` : ""}`, {
        headers: { accept: "text/event-stream" },
        signal: AbortSignal.timeout(WAIT),
      });
      assert.equal(res.status, status, `SSE ${code}`);
      await res.body?.cancel();
      for (const transport of ["socketio", "sse"]) {
        await g.waitLog((l) => l.msg?.startsWith("client refused") && l.reason === code && l.transport === transport, `${code} over ${transport} logged`);
      }
    }
    // A token of acme presented as globex (the client names its tenant): 403.
    const err = await sioRefused(g.main, { token: token("u", "acme"), tenant: "globex" });
    assert.equal(err.data?.code, "wrong_tenant");
    const res = await fetch(`${g.main}/events?tenant=globex&token=${token("u", "acme")}`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(res.status, 403);
    await res.body?.cancel();

    // A good token: accepted; its rooms claim joins the user to those rooms.
    const ok = await sio(g.main, { token: token("erin", "acme", { rooms: ["night-shift"] }) });
    // A Node client may send the token as a header of its handshake instead.
    const byHeader = await sio(g.main, {}, { extraHeaders: { authorization: `Bearer ${token("erin", "acme")}` } });
    const cookie = await sse(g.main, {}, ["hello"], {
      fetch: (u, init) => fetch(u, { ...init, headers: { ...init.headers, cookie: `token=${token("erin", "acme")}` } }),
    });
    const r = await fetch(`${g.api}/api/v1/send`, {
      method: "POST",
      body: JSON.stringify({ to: { room: "night-shift" }, event: "hello", data: 1 }),
      signal: AbortSignal.timeout(WAIT),
    }).then((x) => x.json());
    assert.deepEqual(r.reached, { sse: 1, socketio: 2, total: 3 });
    await waitFor(ok.log, "hello");
    await waitFor(byHeader.log, "hello");
    await waitFor(cookie.log, "hello");
    const m = await metrics(g);
    assert.equal(m.value("tidings_auth_total", { transport: "socketio", outcome: "token_expired" }), 1);
    assert.equal(m.value("tidings_auth_total", { transport: "sse", outcome: "alg_none" }), 1);
    assert.equal(m.value("tidings_auth_total", { transport: "socketio", outcome: "accepted" }), 2);
    assert.equal(m.value("tidings_auth_total", { transport: "sse", outcome: "accepted" }), 1);
    await g.stop();
  });

  test("RS256 and ES256 with a public key; an HS256 token signed with that key is refused", T, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "tidings-gw-"));
    for (const [alg, kind, opts] of [
      ["RS256", "rsa", { modulusLength: 2048 }],
      ["ES256", "ec", { namedCurve: "P-256" }],
    ]) {
      const { publicKey, privateKey } = generateKeyPairSync(kind, opts);
      const pem = publicKey.export({ type: "spki", format: "pem" });
      const file = path.join(dir, `${alg}.pem`);
      writeFileSync(file, pem);
      const g = await startGateway(["--jwt-public-key-file", file, "--jwt-algorithm", alg, "--jwt-tenant-claim", "org"]);
      const claims = { sub: "frank", org: "acme", exp: now() + 600 };
      const s = await sio(g.main, { token: jwt(claims, { alg, key: privateKey }) });
      assert.ok(s.connected, alg);
      // The classic confusion attack: HS256 keyed with the public key's PEM text.
      let err = await sioRefused(g.main, { token: jwt(claims, { alg: "HS256", secret: pem }) });
      assert.equal(err.data?.code, "wrong_algorithm", alg);
      // Another key pair of the same kind: the signature does not verify.
      const other = generateKeyPairSync(kind, opts).privateKey;
      err = await sioRefused(g.main, { token: jwt(claims, { alg, key: other }) });
      assert.equal(err.data?.code, "bad_signature", alg);
      const r = await send(g, { user: "frank", tenant: "acme" }, "hi", 1);
      assert.equal(r.status, 200);
      assert.equal(r.body.reached.socketio, 1, alg);
      await g.stop();
    }
  });
});

/** A backend for the webhook: `answer(body)` decides what each call gets. */
async function backend(answer) {
  const calls = [];
  const server = http.createServer((req, res) => {
    let data = "";
    req.on("data", (d) => (data += d));
    req.on("end", async () => {
      const body = JSON.parse(data);
      calls.push(body);
      const { status = 200, json, delay = 0 } = await answer(body);
      if (delay) await sleep(delay);
      if (res.destroyed) return;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(json === undefined ? "" : JSON.stringify(json));
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}/hook`;
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url, calls, server };
}

describe("gateway: client events to the backend", () => {
  test("the backend's answer is the ack; a slow backend times out without stalling anything", T, async () => {
    const b = await backend((body) => {
      if (body.event === "slow") return { delay: 3000, json: { late: true } };
      if (body.event === "boom") return { status: 500, json: { oops: 1 } };
      if (body.event === "big") return { json: { blob: "x".repeat(20000) } };
      return { json: { echo: body.args, user: body.user, tenant: body.tenant } };
    });
    const g = await startGateway(["--jwt-secret", SECRET, "--api-keys", KEY, "--webhook-url", b.url, "--webhook-timeout-ms", "1000", "--webhook-events", "chat,slow,boom,big", "--max-payload", "10000"]);
    const s = await sio(g.main, { token: token("gina", "acme") });
    const reply = await within(WAIT, s.emitWithAck("chat", { text: "hi" }, 2), "chat ack");
    assert.deepEqual(reply, { echo: [{ text: "hi" }, 2], user: "gina", tenant: "acme" });
    const call = b.calls.find((c) => c.event === "chat");
    assert.equal(call.type, "event");
    assert.equal(call.sid, s.id);

    // While the backend sits on a slow call (it answers after 3 s; the gateway gives up after
    // 1 s), the gateway goes on: a publish and another event are served before the slow ack.
    let slowDone = false;
    const slow = within(WAIT, s.emitWithAck("slow"), "slow ack").finally(() => (slowDone = true));
    const pub = await send(g, { user: "gina", tenant: "acme" }, "tick", 1);
    assert.equal(pub.body.reached.socketio, 1);
    await waitFor(s.log, "tick");
    assert.deepEqual(await within(WAIT, s.emitWithAck("chat", "again"), "chat ack"), { echo: ["again"], user: "gina", tenant: "acme" });
    assert.equal(slowDone, false, "the publish and the other event waited for the slow backend");
    assert.equal((await slow).error.code, "backend_timeout");

    assert.equal((await within(WAIT, s.emitWithAck("boom"), "boom ack")).error.code, "backend_error");
    // An answer too large for one message to the client is not forwarded.
    assert.equal((await within(WAIT, s.emitWithAck("big"), "big ack")).error.code, "backend_unavailable");
    assert.equal((await within(WAIT, s.emitWithAck("not-forwarded"), "ack")).error.code, "unknown_event");
    assert.ok(!b.calls.some((c) => c.event === "not-forwarded"));
    const m = await metrics(g);
    assert.equal(m.value("tidings_webhook_calls_total", { kind: "event", outcome: "ok" }), 2);
    assert.equal(m.value("tidings_webhook_calls_total", { kind: "event", outcome: "timeout" }), 1);
    assert.equal(m.value("tidings_webhook_calls_total", { kind: "event", outcome: "error_status" }), 1);
    assert.equal(m.value("tidings_webhook_calls_total", { kind: "event", outcome: "unavailable" }), 1);
    await g.stop();
  });

  test("connects asked of the backend: allowed, refused, and refused while the backend is down", T, async () => {
    const b = await backend((body) => ({ json: body.user === "mallory" ? { allow: false, message: "banned" } : { allow: true } }));
    const g = await startGateway(["--jwt-secret", SECRET, "--webhook-url", b.url, "--webhook-connect", "--webhook-timeout-ms", "500"]);
    const s = await sio(g.main, { token: token("hank", "acme") });
    assert.ok(s.connected);
    const call = b.calls.find((c) => c.type === "connect");
    assert.deepEqual([call.user, call.tenant, call.transport], ["hank", "acme", "socketio"]);
    const err = await sioRefused(g.main, { token: token("mallory", "acme") });
    assert.equal(err.message, "banned");
    assert.equal(err.data.code, "backend_refused");
    const res = await fetch(`${g.main}/events?token=${token("mallory", "acme")}`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(res.status, 403);
    await res.body?.cancel();
    await g.stop();

    // Nobody listens at the backend's address: connects fail closed (SSE: 401, as tidings
    // answers every SSE refusal with 401 or 403), events get an error ack, and the gateway
    // itself stays up.
    const port = b.server.address().port;
    b.server.closeAllConnections();
    await new Promise((r) => b.server.close(r));
    const down = await startGateway(["--jwt-secret", SECRET, "--webhook-url", `http://127.0.0.1:${port}/hook`, "--webhook-connect", "--webhook-timeout-ms", "500"]);
    const e2 = await sioRefused(down.main, { token: token("ivy", "acme") });
    assert.equal(e2.data.code, "backend_unavailable");
    const r2 = await fetch(`${down.main}/events?token=${token("ivy", "acme")}`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(r2.status, 401);
    await r2.body?.cancel();
    const m = await metrics(down);
    assert.equal(m.value("tidings_webhook_calls_total", { kind: "connect", outcome: "unavailable" }), 2);
    await down.stop();

    const events = await startGateway(["--jwt-secret", SECRET, "--webhook-url", `http://127.0.0.1:${port}/hook`]);
    const s2 = await sio(events.main, { token: token("ivy", "acme") });
    assert.equal((await within(WAIT, s2.emitWithAck("chat", 1), "ack")).error.code, "backend_unavailable");
    await events.stop();
  });
});

describe("gateway: operations", () => {
  test("/metrics counts what the test did (parsed by a Prometheus text parser)", T, async () => {
    const g = await startGateway(["--jwt-secret", SECRET, "--api-keys", KEY]);
    const a = await sio(g.main, { token: token("jo", "acme") });
    const b = await sio(g.main, { token: token("kim", "acme") });
    const c = await sse(g.main, { token: token("jo", "acme") }, ["m"]);
    a.emit("hello", 1);
    a.emit("hello", 2);
    b.emit("hello", 3);
    let delivered = 0;
    for (let i = 0; i < 3; i++) delivered += (await send(g, { tenant: "acme" }, "m", i)).body.reached.total;
    delivered += (await send(g, { user: "jo", tenant: "acme" }, "m", 9, "sse")).body.reached.total;
    assert.equal(delivered, 3 * 3 + 1);
    await api(g.api, "POST", "/api/v1/send", { to: "all" });
    await api(g.api, "POST", "/api/v1/send", { to: "all", event: "m" }, { key: "nope" });
    await waitFor(c.log, "m");
    const deadline = Date.now() + WAIT;
    let m;
    for (;;) {
      m = await metrics(g);
      if (m.value("tidings_events_in_total") === 3 || Date.now() > deadline) break;
      await sleep(20);
    }
    assert.equal(m.value("tidings_connections", { transport: "socketio" }), 2);
    assert.equal(m.value("tidings_connections", { transport: "sse" }), 1);
    assert.equal(m.value("tidings_events_in_total"), 3);
    assert.equal(m.value("tidings_events_out_total", { transport: "socketio" }), 6);
    assert.equal(m.value("tidings_events_out_total", { transport: "sse" }), 4);
    assert.equal(m.value("tidings_api_requests_total", { endpoint: "send", status: "200" }), 4);
    assert.equal(m.value("tidings_api_requests_total", { endpoint: "send", status: "400" }), 1);
    assert.equal(m.value("tidings_api_requests_total", { endpoint: "send", status: "401" }), 1);
    assert.equal(m.value("tidings_api_errors_total", { code: "missing_field" }), 1);
    assert.equal(m.value("tidings_api_errors_total", { code: "invalid_api_key" }), 1);
    assert.equal(m.value("tidings_auth_total", { transport: "socketio", outcome: "accepted" }), 2);
    assert.equal(m.value("tidings_pending_acks"), 0);
    assert.equal(m.value("tidings_sse_history_events"), 4);
    assert.equal(m.value("tidings_slow_consumer_closes_total"), 0);
    assert.equal(m.value("tidings_dispatcher_backlog"), 0);
    assert.equal(m.value("tidings_up"), 1);
    assert.ok(m.value("tidings_bytes_in_total") > 0 && m.value("tidings_bytes_out_total") > 0);
    for (const f of m.families) assert.ok(["COUNTER", "GAUGE"].includes(f.type), `${f.name}: ${f.type}`);
    for (const p of ["/healthz", "/readyz"]) {
      for (const base of [g.main, g.api]) {
        const r = await fetch(`${base}${p}`, { signal: AbortSignal.timeout(WAIT) });
        assert.equal(r.status, 200, `${base}${p}`);
      }
    }
    await g.stop();
  });

  test("SIGTERM drains within the grace period: Socket.IO disconnects, SSE gets a retry hint", T, async () => {
    const g = await startGateway(["--anonymous", "--shutdown-grace-ms", "3000"]);
    const s = await sio(g.main, {});
    const disconnected = new Promise((r) => s.once("disconnect", r));
    // A raw SSE reader, to see the bytes after the last event.
    const res = await fetch(`${g.main}/events`, { headers: { accept: "text/event-stream" }, signal: AbortSignal.timeout(10000) });
    const reader = res.body.getReader();
    let text = "";
    const first = await within(WAIT, reader.read(), "first SSE bytes");
    text += Buffer.from(first.value).toString();
    const opened = text.length;
    const ended = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += Buffer.from(value).toString();
      }
    })();
    const started = Date.now();
    g.child.kill("SIGTERM");
    const reason = await within(WAIT, disconnected, "Socket.IO disconnect");
    assert.equal(reason, "transport close");
    await within(WAIT, ended, "the SSE stream's end");
    assert.match(text.slice(opened), /retry: \d+\n/, "a retry hint before the end");
    const exit = await within(5000, g.exited, "the gateway's exit");
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(Date.now() - started < 3000 + 1000, `drained in ${Date.now() - started} ms`);
    await g.waitLog((l) => l.msg === "drained; exiting", "the drained log line");
  });

  test("settings come from a JSON config file, the environment and flags, in that order", T, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "tidings-gw-"));
    const file = path.join(dir, "gateway.json");
    writeFileSync(file, JSON.stringify({ anonymous: true, api_keys: ["from-file"], api_max_batch: 1, sse_path: "/from-file" }));
    const g = await startGateway(["--config", file, "--sse-path", "/from-flag"], { TIDINGS_API_MAX_BATCH: "2" });
    let r = await api(g.api, "POST", "/api/v1/batch", { sends: [{ to: "all", event: "e" }, { to: "all", event: "e" }] }, { key: "from-file" });
    assert.equal(r.status, 200, "the environment's api_max_batch (2) beats the file's (1)");
    r = await api(g.api, "POST", "/api/v1/batch", { sends: [1, 2, 3] }, { key: "from-file" });
    assert.equal(r.body.error.code, "batch_too_large");
    const flagPath = await fetch(`${g.main}/from-flag`, { signal: AbortSignal.timeout(WAIT) });
    assert.match(flagPath.headers.get("content-type"), /^text\/event-stream/);
    await flagPath.body.cancel();
    const filePath = await fetch(`${g.main}/from-file`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(filePath.status, 404);
    await g.stop();
    writeFileSync(file, JSON.stringify({ anonymous: true, no_such_setting: 1 }));
    const bad = spawn(BIN, ["--config", file], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    bad.stderr.on("data", (d) => (err += d));
    const code = await within(WAIT, new Promise((r) => bad.once("exit", r)), "exit");
    assert.equal(code, 2);
    assert.match(err, /unknown setting "no_such_setting"/);
  });

  test("--help lists every setting with its default; bad settings stop the start", T, async () => {
    const help = await new Promise((resolve) => {
      const p = spawn(BIN, ["--help"], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      p.stdout.on("data", (d) => (out += d));
      p.once("exit", (code) => resolve({ code, out }));
    });
    assert.equal(help.code, 0);
    for (const s of ["--bind", "--api-keys", "--jwt-secret", "--webhook-url", "--shutdown-grace-ms", "TIDINGS_LOG_LEVEL", "default: 127.0.0.1:3000"]) {
      assert.ok(help.out.includes(s), s);
    }
    for (const args of [["--anonymous", "--nope", "1"], ["--api-on-main-port", "--anonymous"], []]) {
      const r = await new Promise((resolve) => {
        const p = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
        let err = "";
        p.stderr.on("data", (d) => (err += d));
        const t = setTimeout(() => p.kill("SIGKILL"), WAIT);
        p.once("exit", (code) => (clearTimeout(t), resolve({ code, err })));
      });
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
      assert.match(r.err, /tidings-gateway: /);
    }
  });
});
