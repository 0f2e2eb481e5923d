// Interop: a tidings node in a Node.js socket.io cluster. One plain Node socket.io 4.8 server on
// `@socket.io/redis-adapter` 8.3 (adapter-node-server.mjs, "N") and one tidings interop node
// (`examples/interop.rs` with SIO_ADAPTER_URL, "T") share a redis-server and its channels (key
// KEY below), next to a `@socket.io/redis-emitter` 5.1 in this process. socket.io-clients sit on
// both servers: two users of one tenant, one of them also in another tenant, anonymous ones,
// sockets in rooms, sockets of `/custom`. Each test is one row of the contract of that mode:
// emits from Node (io.emit, rooms, except, volatile, binary, `/custom`, socket.broadcast), from
// the emitter, from tidings (ctl:broadcast, Socket::to_room), and the requests Node makes that
// tidings answers (fetchSockets, socketsJoin/Leave, disconnectSockets, allRooms, serverSideEmit
// with and without ack, emitWithAck), and the same requests made by tidings over every server
// (`ctl:cluster`, Handle::socketio_cluster): the Node server answers them, its serverSideEmit
// listener (`ping-node`) records what it gets (its `ctl:server-side-log`).
//
// How tidings users and tenants look to Node: the rooms `tidings:user:` + JSON.stringify([tenant,
// user]) and `tidings:tenant:` + JSON.stringify(tenant), which the Node server's own sockets
// join from their auth (so tidings' to_user / to_tenant reach them).
//
// Exact audiences: every client logs every event it gets (binary as {bin: hex}); each check ends
// with a sentinel to everyone from the origin of the events checked (the Node server, the
// emitter or tidings), which arrives after them since one origin's messages arrive in one order;
// then `/custom`'s sentinel (from Node, or the emitter), then a quiet window. Every client's log
// is compared, the ones that must have got nothing included. The control sockets are outside the
// cast: Node's is in namespace `/ctl`, tidings' is an anonymous socket of `/` (it is counted
// where the whole namespace is: fetchSockets, allRooms, emitWithAck). Each test has its own cast
// and closes it; afterEach waits until both servers have let it go.
//
// The file starts everything itself and kills it in `after()`: its own redis-server (free
// 127.0.0.1 port, no persistence), the Node server, the tidings node (env SIO_ADAPTER_URL,
// SIO_ADAPTER_KEY, PORT, INTEROP_LOG=warn; no REDIS_URL). Without redis-server or the binary the
// tests FAIL, they never skip. Run alone:
//   cargo build --features redis --example interop
//   cd tests/interop && INTEROP_BIN=../../target/debug/examples/interop node --test adapter.test.mjs
// Environment: INTEROP_BIN (default $CARGO_TARGET_DIR/debug/examples/interop, or target/…),
// REDIS_SERVER (default `redis-server` on the PATH).
import { test, describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { io } from "socket.io-client";
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";
import { TIMEOUT, QUIET_MS, SOCKET_OPTS, within, sleep, uid, Log, awaitConnect } from "./helpers.mjs";
import { START_WAIT, findRedis, freePorts, startProcess } from "./processes.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR)
  : path.join(ROOT, "target");
const BIN = process.env.INTEROP_BIN ? path.resolve(process.env.INTEROP_BIN) : path.join(TARGET, "debug", "examples", "interop");
const NODE_SERVER = path.join(HERE, "adapter-node-server.mjs");
/** The adapter key (channel prefix) of the cluster: not the default, so that it must be passed on. */
const KEY = "interop-mixed";
const OPTS = { timeout: 30000 };

const userRoom = (tenant, user) => "tidings:user:" + JSON.stringify([tenant, user]);
const tenantRoom = (tenant) => "tidings:tenant:" + JSON.stringify(tenant);

// --- control sockets --------------------------------------------------------------------------------

/**
 * A control socket on `url` (a namespace URL): `ctl(event, payload)` awaits the ack; `id()` is
 * its socket id. It answers a "question" with `label` (tidings' control socket is in `/`).
 */
async function openControl(url, label) {
  const socket = io(url, { forceNew: true, transports: ["websocket"], timeout: TIMEOUT });
  socket.on("question", (_q, cb) => cb(label));
  try {
    await awaitConnect(socket, `control socket on ${url}`, "control connect_error");
  } catch (e) {
    socket.close();
    throw e;
  }
  return {
    label,
    id: () => socket.id,
    ctl: (event, payload) => within(TIMEOUT, socket.timeout(TIMEOUT).emitWithAck(event, payload), `${event} on ${url}`),
    close: () => socket.close(),
  };
}

// --- the cluster --------------------------------------------------------------------------------------

let redis = null;
let redisClient = null;
let emitter = null;
/** The Node server and the tidings node: {tag, url, control, output, kill}. */
const NODE = { tag: "N" };
const TIDINGS = { tag: "T" };

/** `ctl:*` on the Node server; a reply with `error` fails. */
async function nctl(event, payload = {}) {
  const r = await NODE.control.ctl(event, payload);
  assert.ok(!(r && typeof r === "object" && !Array.isArray(r) && "error" in r && !("responses" in r)), `${event} ${JSON.stringify(payload)} on the Node server: ${JSON.stringify(r)}`);
  return r;
}
/** `ctl:*` on the tidings node. */
const tctl = (event, payload = {}) => TIDINGS.control.ctl(event, payload);

/** A Node-side emit (`ctl:emit`); must succeed. */
async function nodeEmit(req) {
  assert.deepEqual(await nctl("ctl:emit", req), { ok: true }, `ctl:emit ${JSON.stringify(req)}`);
}
/** A tidings broadcast (`ctl:broadcast`); must succeed. */
async function tidingsBroadcast(target, event, data, transport = "both") {
  const r = await tctl("ctl:broadcast", { transport, target, event, data });
  assert.deepEqual(r, { ok: true }, `tidings ctl:broadcast ${event} to ${JSON.stringify(target)} over ${transport}`);
}

/** `ctl:cluster` on tidings: one request of tidings over every server; `{ok, result}` or `{ok, error}`. */
const cluster = (req) => tctl("ctl:cluster", req);
/** A `ctl:cluster` request that must succeed: its result. */
async function clusterOk(req) {
  const r = await cluster(req);
  assert.ok(r?.ok === true && "result" in r, `ctl:cluster ${JSON.stringify(req)}: ${JSON.stringify(r)}`);
  return r.result;
}

/** The tidings node is still connected to the adapter's Redis (its warnings in the message). */
async function assertAdapterConnected() {
  const stats = await tctl("ctl:stats", {});
  assert.equal(stats?.adapterConnected, true, `tidings ctl:stats: ${JSON.stringify(stats)}; its log:\n${TIDINGS.output().slice(-1500)}`);
}

before(async () => {
  const redisBin = findRedis();
  if (!redisBin) {
    throw new Error(
      "redis-server not found (on the PATH, or REDIS_SERVER): the mixed-cluster tests need it. " +
        "Install Debian's package (apt-get install redis-server; scripts/test-all.sh does) or set REDIS_SERVER.",
    );
  }
  if (!existsSync(BIN)) {
    throw new Error(`${BIN} is missing: cargo build --features redis --example interop (or set INTEROP_BIN)`);
  }
  const [redisPort, nodePort, tidingsPort] = await freePorts(3);
  redis = await startProcess(
    "redis-server",
    redisBin,
    ["--bind", "127.0.0.1", "--port", String(redisPort), "--save", "", "--appendonly", "no",
      "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"],
    process.env,
    redisPort,
  );
  const redisUrl = `redis://127.0.0.1:${redisPort}/`;
  const base = { ...process.env };
  for (const k of ["REDIS_URL", "REDIS_PREFIX", "RECOVERY_PORT", "SIO_ADAPTER_URL", "SIO_ADAPTER_KEY"]) delete base[k];
  Object.assign(
    NODE,
    await startProcess("the Node server", process.execPath, [NODE_SERVER],
      { ...base, PORT: String(nodePort), REDIS_URL: redisUrl, KEY, REQUESTS_TIMEOUT: "3000" }, nodePort),
  );
  Object.assign(
    TIDINGS,
    await startProcess("the tidings node", BIN, [],
      { ...base, PORT: String(tidingsPort), SIO_ADAPTER_URL: redisUrl, SIO_ADAPTER_KEY: KEY, INTEROP_LOG: "warn" }, tidingsPort),
  );
  redisClient = createClient({ url: redisUrl });
  redisClient.on("error", () => {});
  await within(TIMEOUT, redisClient.connect(), "the emitter's Redis connection");
  emitter = new Emitter(redisClient, { key: KEY });
  NODE.control = await openControl(`${NODE.url}/ctl`, "N:control");
  TIDINGS.control = await openControl(TIDINGS.url, "T:control");

  // The tidings node is a connected node of both namespaces: it says so, and Redis counts it on
  // their request channels (the Node server is the other subscriber).
  let stats;
  for (const deadline = Date.now() + START_WAIT; ; await sleep(50)) {
    stats = await tctl("ctl:stats", {});
    if (stats?.adapterConnected === true || Date.now() > deadline) break;
  }
  assert.equal(stats?.adapterConnected, true, `tidings is not connected to the adapter: ctl:stats = ${JSON.stringify(stats)}; output:\n${TIDINGS.output()}`);
  const channels = ["/", "/custom"].map((nsp) => `${KEY}-request#${nsp}#`);
  let numsub;
  for (const deadline = Date.now() + START_WAIT; ; await sleep(50)) {
    const reply = await redisClient.sendCommand(["PUBSUB", "NUMSUB", ...channels]);
    numsub = Object.fromEntries(channels.map((c, i) => [c, Number(reply[2 * i + 1])]));
    if (Object.values(numsub).every((n) => n === 2) || Date.now() > deadline) break;
  }
  assert.deepEqual(numsub, Object.fromEntries(channels.map((c) => [c, 2])), `subscribers of the request channels (the Node server and tidings); tidings output:\n${TIDINGS.output()}`);
});

after(async () => {
  for (const c of clients) c.close();
  NODE.control?.close();
  TIDINGS.control?.close();
  await redisClient?.quit().catch(() => {});
  await TIDINGS.kill?.().catch(() => {});
  await NODE.kill?.().catch(() => {});
  await redis?.kill().catch(() => {});
});

// --- clients ------------------------------------------------------------------------------------------

const clients = new Set();

/** Binary (Buffer, ArrayBuffer, typed arrays) as {bin: hex}, recursively; the rest as is. */
function plain(v) {
  if (v instanceof ArrayBuffer) return { bin: Buffer.from(v).toString("hex") };
  if (ArrayBuffer.isView(v)) return { bin: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") };
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/**
 * A socket.io-client socket on `server` in `nsp`, as `who` ({user, tenant}, or null: anonymous),
 * logging every event it gets; it answers a "question" with its label (unless `silent`).
 * `expectedRooms` is what the test knows of its rooms (its id, its reserved rooms in `/`, and the
 * rooms it is made to join).
 */
async function sock(server, name, who, { transport = "websocket", nsp = "/", silent = false } = {}) {
  const label = `${server.tag}:${name}`;
  const socket = io(`${server.url}${nsp === "/" ? "" : nsp}`, {
    ...SOCKET_OPTS,
    transports: [transport],
    ...(who ? { auth: { user: who.user, tenant: who.tenant } } : {}),
  });
  clients.add(socket);
  Object.assign(socket, { name, label, server, who, nspName: nsp, connects: 0, disconnects: [] });
  socket.log = new Log(`${label} (${who ? `${who.user}@${who.tenant}` : "anonymous"}, ${transport}, ${nsp} on ${server.url})`);
  socket.on("connect", () => {
    socket.connects++;
    socket.log.wake();
  });
  socket.on("disconnect", (reason) => {
    socket.disconnects.push(reason);
    socket.log.wake();
  });
  socket.on("connect_error", (e) => {
    socket.connectError = e.message;
    socket.log.wake();
  });
  // (An event with an ack has the ack function as its last argument: not logged.)
  socket.onAny((event, ...args) => socket.log.push([event, ...plain(args.filter((a) => typeof a !== "function"))]));
  if (!silent) socket.on("question", (_q, cb) => cb(label));
  await socket.log.until(() => socket.connects > 0, `${label} connect${socket.connectError ? ` (connect_error ${socket.connectError})` : ""}`);
  if (server === TIDINGS && nsp === "/custom") {
    // The interop server greets every socket of `/custom`.
    await socket.log.until(() => socket.log.items.some(([e]) => e === "hello-custom"), "hello-custom");
    socket.log.clear();
  }
  socket.expectedRooms = new Set([socket.id, ...(who && nsp === "/" ? [userRoom(who.tenant, who.user), tenantRoom(who.tenant)] : [])]);
  return socket;
}

/** The cast of the current test (closed by afterEach). */
let current = null;

/**
 * Each test's clients. Users: alice and bob of tenant A, alice of tenant B (another user with the
 * same name). Room R: sockets that joined it themselves (Socket::join on tidings, socket.join on
 * Node). Room U: bob's user room on tidings (ctl:join), and a Node socket of bob's that joined it.
 */
async function cast() {
  const A = uid("acme");
  const B = uid("globex");
  const aliceA = { user: uid("alice"), tenant: A };
  const bobA = { user: uid("bob"), tenant: A };
  const aliceB = { user: aliceA.user, tenant: B };
  const R = uid("room");
  const U = uid("uroom");
  const k = { A, B, aliceA, bobA, aliceB, R, U, c: {} };
  current = k;
  const spec = [
    ["tA1", TIDINGS, aliceA, "websocket", "/"],
    ["tA2", TIDINGS, aliceA, "polling", "/"],
    ["tB", TIDINGS, bobA, "polling", "/"],
    ["tG", TIDINGS, aliceB, "websocket", "/"],
    ["tAnon", TIDINGS, null, "websocket", "/"],
    ["tAnon2", TIDINGS, null, "polling", "/"],
    ["tC", TIDINGS, aliceA, "websocket", "/custom"],
    ["tC2", TIDINGS, null, "polling", "/custom"],
    ["nA1", NODE, aliceA, "websocket", "/"],
    ["nA2", NODE, aliceA, "polling", "/"],
    ["nB", NODE, bobA, "websocket", "/"],
    ["nG", NODE, aliceB, "polling", "/"],
    ["nAnon", NODE, null, "polling", "/"],
    ["nAnon2", NODE, null, "websocket", "/"],
    ["nC", NODE, aliceA, "websocket", "/custom"],
    ["nC2", NODE, null, "polling", "/custom"],
  ];
  for (const [name, server, who, transport, nsp] of spec) k.c[name] = await sock(server, name, who, { transport, nsp });
  k.names = Object.keys(k.c);
  k.all = Object.values(k.c);
  for (const n of ["tA1", "tAnon"]) await socketJoin(k.c[n], R);
  for (const n of ["nA1", "nAnon"]) await socketJoin(k.c[n], R);
  await userJoin(bobA, U, [k.c.tB]);
  await socketJoin(k.c.nB, U);
  return k;
}

/** The client's own server makes it join `room` (tidings: `join-socket-room`, Node: `join`). */
async function socketJoin(c, room) {
  const event = c.server === TIDINGS ? "join-socket-room" : "join";
  assert.equal(await within(TIMEOUT, c.timeout(TIMEOUT).emitWithAck(event, room), `${c.label} ${event}`), true, `${c.label} ${event} ${room}`);
  c.expectedRooms.add(room);
}

/** `ctl:join` on tidings: the user joins `room`; `sockets` are its tidings sockets in `/`. */
async function userJoin(who, room, sockets) {
  assert.deepEqual(await tctl("ctl:join", { ...who, room }), { ok: true }, `ctl:join ${JSON.stringify(who)} ${room}`);
  for (const s of sockets) s.expectedRooms.add(room);
}

// Name groups of the cast (see `cast`).
const MAIN = ["tA1", "tA2", "tB", "tG", "tAnon", "tAnon2", "nA1", "nA2", "nB", "nG", "nAnon", "nAnon2"];
const CUSTOM = ["tC", "tC2", "nC", "nC2"];
const IN_R = ["tA1", "tAnon", "nA1", "nAnon"];
const IN_U = ["tB", "nB"];
const ALICE_A = ["tA1", "tA2", "nA1", "nA2"];
const TENANT_A = [...ALICE_A, "tB", "nB"];
const ALICE_B = ["tG", "nG"];
const BOB_A = ["tB", "nB"];
const minus = (a, ...bs) => a.filter((x) => !bs.some((b) => b.includes(x)));

afterEach(async () => {
  const k = current;
  current = null;
  if (!k) return;
  for (const c of k.all) {
    c.close();
    clients.delete(c);
  }
  // Both servers let the cast go: no Node socket left, only the control socket on tidings.
  let local;
  let stats;
  for (const deadline = Date.now() + TIMEOUT; ; await sleep(50)) {
    local = await nctl("ctl:local", {});
    stats = await tctl("ctl:stats", {});
    const done = local["/"].length === 0 && local["/custom"].length === 0 && stats?.sioSockets === 1;
    if (done || Date.now() > deadline) break;
  }
  assert.deepEqual({ node: local, tidingsSockets: stats?.sioSockets }, { node: { "/": [], "/custom": [] }, tidingsSockets: 1 }, "the closed cast is still there");
});

/** Sends a sentinel `tag` to everyone of `nsp` from `via`: "node", "emitter" or "tidings" (`/` only). */
async function sentinel(via, nsp, tag) {
  if (via === "node") return nodeEmit({ nsp, event: "sentinel", args: [tag] });
  if (via === "emitter") return void (nsp === "/" ? emitter : emitter.of(nsp)).emit("sentinel", tag);
  assert.equal(nsp, "/");
  return tidingsBroadcast({ kind: "all" }, "sentinel", tag);
}

/**
 * The sentinel to `/` from `via` (after the events under test, from the same origin), once every
 * connected client of `/` has it the sentinel to `/custom` (from Node when `via` is tidings), then
 * a quiet window: every client's log by name, sentinels left out. A disconnected client gets no
 * sentinel: its log is read after the quiet window.
 */
async function settleAll(k, via) {
  const tag = uid("sentinel");
  const has = (c) => c.log.items.some(([e, d]) => e === "sentinel" && d === tag);
  const live = k.all.filter((c) => c.connected);
  await sentinel(via, "/", tag);
  await Promise.all(live.filter((c) => c.nspName === "/").map((c) => c.log.until(() => has(c), `sentinel ${tag} from ${via}`)));
  await sentinel(via === "tidings" ? "node" : via, "/custom", tag);
  const logs = {};
  await Promise.all(
    k.all.map(async (c) => {
      if (c.connected) logs[c.name] = await c.log.settle(tag);
      else {
        await sleep(QUIET_MS);
        logs[c.name] = c.log.items.filter(([e]) => e !== "sentinel");
      }
    }),
  );
  return logs;
}

/**
 * Every client's log is exactly what `spec` says: `[[names, [event, ...args]], ...]`, in that
 * order per client; a client named nowhere got nothing. A client named in `lossy` may have missed
 * some of its events (but got nothing else). All differences are reported at once.
 */
function assertLogs(k, logs, spec, what, { lossy = [] } = {}) {
  const want = Object.fromEntries(k.names.map((n) => [n, []]));
  for (const [names, ev] of spec) for (const n of names) want[n].push(ev);
  // A subsequence of `want`: nothing else, nothing twice, in order.
  const within_ = (got, w) => {
    let i = 0;
    for (const ev of got) {
      while (i < w.length && !isDeepStrictEqual(w[i], ev)) i++;
      if (i++ >= w.length) return false;
    }
    return true;
  };
  const diffs = k.names
    .filter((n) => !(lossy.includes(n) ? within_(logs[n], want[n]) : isDeepStrictEqual(logs[n], want[n])))
    .map((n) => `  ${k.c[n].log.label}:\n    got  ${JSON.stringify(logs[n])}\n    want ${JSON.stringify(want[n])}`);
  assert.ok(diffs.length === 0, `${what}: ${diffs.length} client(s) got something else\n${diffs.join("\n")}`);
}

/** Clears every client's log (after a settled check). */
const clearAll = (k) => k.all.forEach((c) => c.log.clear());

/**
 * A list of what tidings' cluster requests answer, split where tidings' own part ends: `[its own
 * (the leading entries `mine` says are tidings'), the rest]`, each sorted by `key`; a tidings
 * entry after a Node one lands in the second part.
 */
function tidingsFirst(list, mine, key = (x) => x) {
  assert.ok(Array.isArray(list), `not a list: ${JSON.stringify(list)}`);
  let i = 0;
  while (i < list.length && mine(list[i])) i++;
  return [sortedBy(list.slice(0, i), key), sortedBy(list.slice(i), key)];
}
/** What `tidingsFirst` gives for an answer made of `list` (in any order). */
const split = (list, mine, key = (x) => x) => [sortedBy(list.filter(mine), key), sortedBy(list.filter((x) => !mine(x)), key)];
const sortedBy = (list, key) => [...list].sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : 0));

/**
 * Waits (bounded) until Node's `io.in(room).fetchSockets()` is exactly the clients `names` (the
 * requests tidings publishes are done by each server when it hears them), then asserts it.
 */
async function awaitMembers(k, room, names, what) {
  const want = names.map((n) => k.c[n].id).sort();
  const label = (id) => k.all.find((c) => c.id === id)?.label ?? id;
  let got;
  for (const deadline = Date.now() + TIMEOUT; ; await sleep(50)) {
    got = (await nctl("ctl:fetch", { rooms: [room] })).map((s) => s.id).sort();
    if (isDeepStrictEqual(got, want) || Date.now() > deadline) break;
  }
  assert.deepEqual(got.map(label), want.map(label), `${what}: the sockets in ${room}`);
}

// --- the tests ----------------------------------------------------------------------------------------

describe("a tidings node in a Node socket.io cluster (@socket.io/redis-adapter)", () => {
  test("Node io.emit reaches every client of / on both servers, and nobody in /custom", OPTS, async () => {
    const k = await cast();
    await nodeEmit({ event: "n-all", args: [{ n: 1 }, "two"] });
    await nodeEmit({ event: "n-none", args: [] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [[MAIN, ["n-all", { n: 1 }, "two"]], [MAIN, ["n-none"]]], "io.emit");
    await assertAdapterConnected();
  });

  test("Node io.to(room).emit: a tidings socket room, a user room, the reserved user and tenant rooms, a tidings socket id", OPTS, async () => {
    const k = await cast();
    await nodeEmit({ rooms: [k.R], event: "to-r", args: ["socket room"] });
    await nodeEmit({ rooms: [k.U], event: "to-u", args: ["user room"] });
    await nodeEmit({ rooms: [userRoom(k.A, k.aliceA.user)], event: "to-user", args: ["alice of A"] });
    await nodeEmit({ rooms: [userRoom(k.B, k.aliceB.user)], event: "to-user", args: ["alice of B"] });
    await nodeEmit({ rooms: [tenantRoom(k.A)], event: "to-tenant", args: ["A"] });
    await nodeEmit({ rooms: [k.c.tA2.id], event: "to-sid", args: ["tA2"] });
    await nodeEmit({ rooms: [k.c.tAnon2.id], event: "to-sid", args: ["tAnon2"] });
    await nodeEmit({ rooms: [uid("empty")], event: "to-nobody", args: [] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [
      [IN_R, ["to-r", "socket room"]],
      [IN_U, ["to-u", "user room"]],
      [ALICE_A, ["to-user", "alice of A"]],
      [ALICE_B, ["to-user", "alice of B"]],
      [TENANT_A, ["to-tenant", "A"]],
      [["tA2"], ["to-sid", "tA2"]],
      [["tAnon2"], ["to-sid", "tAnon2"]],
    ], "io.to(room)");
    await assertAdapterConnected();
  });

  test("Node io.to([r1, r2]).emit reaches the union, each socket once", OPTS, async () => {
    const k = await cast();
    await nodeEmit({ rooms: [k.R, k.U], event: "r-u", args: [1] });
    // alice's sockets tA1 and nA1 are in both rooms.
    await nodeEmit({ rooms: [userRoom(k.A, k.aliceA.user), k.R], event: "alice-r", args: [2] });
    await nodeEmit({ rooms: [k.c.tA2.id, k.c.tG.id, k.c.nAnon2.id], event: "sids", args: [3] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [
      [[...IN_R, ...IN_U], ["r-u", 1]],
      [[...new Set([...ALICE_A, ...IN_R])], ["alice-r", 2]],
      [["tA2", "tG", "nAnon2"], ["sids", 3]],
    ], "io.to([r1, r2])");
    await assertAdapterConnected();
  });

  test("Node io.except(room).emit leaves the room out, on tidings too", OPTS, async () => {
    const k = await cast();
    await nodeEmit({ except: [k.R], event: "not-r", args: [1] });
    await nodeEmit({ rooms: [tenantRoom(k.A)], except: [userRoom(k.A, k.aliceA.user)], event: "a-not-alice", args: [2] });
    await nodeEmit({ except: [k.R, k.c.tB.id, userRoom(k.B, k.aliceB.user)], event: "not-several", args: [3] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [
      [minus(MAIN, IN_R), ["not-r", 1]],
      [["tB", "nB"], ["a-not-alice", 2]],
      [minus(MAIN, IN_R, ["tB"], ALICE_B), ["not-several", 3]],
    ], "io.except(room)");
    await assertAdapterConnected();
  });

  test("Node io.volatile.emit reaches the connected clients of tidings", OPTS, async () => {
    const k = await cast();
    await nodeEmit({ volatile: true, event: "v-all", args: [1] });
    await nodeEmit({ volatile: true, rooms: [k.R], event: "v-r", args: [2] });
    const logs = await settleAll(k, "node");
    // Node itself drops a volatile packet for a client whose transport is not writable at that
    // moment (a polling client between two requests); tidings drops one only for a client with
    // a backlog, which these idle ones do not have. So the Node server's own clients may miss
    // one (they must get nothing else); the tidings clients get both.
    const nodeClients = k.names.filter((n) => k.c[n].server === NODE);
    assertLogs(k, logs, [[MAIN, ["v-all", 1]], [IN_R, ["v-r", 2]]], "io.volatile.emit", { lossy: nodeClients });
    await assertAdapterConnected();
  });

  test("Node binary emits: Buffers arrive as binary at the tidings clients", OPTS, async () => {
    const k = await cast();
    await nodeEmit({ event: "bin", args: [Buffer.from([0, 1, 2, 255]), { nested: Buffer.from("hi"), list: [Buffer.alloc(0), 7] }, "text"] });
    await nodeEmit({ rooms: [k.R], event: "bin-r", args: [Buffer.from([9])] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [
      [MAIN, ["bin", { bin: "000102ff" }, { nested: { bin: "6869" }, list: [{ bin: "" }, 7] }, "text"]],
      [IN_R, ["bin-r", { bin: "09" }]],
    ], "binary");
    await assertAdapterConnected();
  });

  test("Node io.of('/custom').emit reaches /custom on both servers, and nobody in /", OPTS, async () => {
    const k = await cast();
    await nodeEmit({ nsp: "/custom", event: "c-all", args: [{ nsp: "/custom" }] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [[CUSTOM, ["c-all", { nsp: "/custom" }]]], "io.of('/custom').emit");
    await assertAdapterConnected();
  });

  test("socket.broadcast.emit from a Node socket reaches the tidings clients, not the sender", OPTS, async () => {
    const k = await cast();
    const say = async (c, req) =>
      assert.equal(await within(TIMEOUT, c.timeout(TIMEOUT).emitWithAck("broadcast", req), `${c.label} broadcast`), true);
    await say(k.c.nA1, { event: "b-all", args: [1] });
    // socket.to(room): the room but the sender (nAnon is in R).
    await say(k.c.nAnon, { rooms: [k.R], event: "b-r", args: [2] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [[minus(MAIN, ["nA1"]), ["b-all", 1]], [minus(IN_R, ["nAnon"]), ["b-r", 2]]], "socket.broadcast.emit");
    await assertAdapterConnected();
  });

  test("the emitter: emit, to(room), except(room), of('/custom') reach the tidings clients too", OPTS, async () => {
    const k = await cast();
    emitter.emit("e-all", 1);
    emitter.to(k.R).emit("e-r", 2);
    emitter.to(userRoom(k.A, k.aliceA.user)).emit("e-user", 3);
    emitter.to([k.U, k.c.tG.id]).emit("e-multi", 4);
    emitter.except(k.R).emit("e-not-r", 5);
    emitter.of("/custom").emit("e-custom", Buffer.from([1, 2]));
    const logs = await settleAll(k, "emitter");
    assertLogs(k, logs, [
      [MAIN, ["e-all", 1]],
      [IN_R, ["e-r", 2]],
      [ALICE_A, ["e-user", 3]],
      [[...IN_U, "tG"], ["e-multi", 4]],
      [minus(MAIN, IN_R), ["e-not-r", 5]],
      [CUSTOM, ["e-custom", { bin: "0102" }]],
    ], "the emitter");
    await assertAdapterConnected();
  });

  // The emitter sends its join, leave and disconnect requests without a uid; every server acts.
  test("the emitter's socketsJoin, socketsLeave and disconnectSockets act on the tidings sockets too", OPTS, async () => {
    const k = await cast();
    const R2 = uid("emitter-joined");
    emitter.in(k.R).socketsJoin(R2);
    emitter.in(userRoom(k.A, k.bobA.user)).socketsJoin(R2);
    const inR2 = [...IN_R, ...BOB_A];
    await awaitMembers(k, R2, inR2, "emitter socketsJoin");
    await nodeEmit({ rooms: [R2], event: "r2", args: ["joined"] });
    let logs = await settleAll(k, "node");
    assertLogs(k, logs, [[inR2, ["r2", "joined"]]], "emitter socketsJoin then io.to(R2)");
    clearAll(k);
    emitter.in(k.R).socketsLeave(R2);
    await awaitMembers(k, R2, BOB_A, "emitter socketsLeave");
    await nodeEmit({ rooms: [R2], event: "r2", args: ["after leave"] });
    logs = await settleAll(k, "node");
    assertLogs(k, logs, [[BOB_A, ["r2", "after leave"]]], "emitter socketsLeave then io.to(R2)");
    clearAll(k);
    emitter.in(R2).disconnectSockets();
    for (const n of BOB_A) {
      const c = k.c[n];
      await c.log.until(() => c.disconnects.length > 0, `${c.label}'s disconnect`);
    }
    const seen = Object.fromEntries(k.names.map((n) => [n, k.c[n].disconnects]));
    const expected = Object.fromEntries(k.names.map((n) => [n, BOB_A.includes(n) ? ["io server disconnect"] : []]));
    assert.deepEqual(seen, expected, "emitter disconnectSockets: who was disconnected, and why");
    await assertAdapterConnected();
  });

  test("tidings ctl:broadcast to all, a room, a user, a tenant reaches the Node clients in the audience", OPTS, async () => {
    const k = await cast();
    await tidingsBroadcast({ kind: "all" }, "t-all", { n: 1 });
    await tidingsBroadcast({ kind: "room", room: k.R }, "t-room", "R");
    await tidingsBroadcast({ kind: "room", room: k.U }, "t-room", "U");
    await tidingsBroadcast({ kind: "user", ...k.aliceA }, "t-user", "alice of A");
    await tidingsBroadcast({ kind: "user", ...k.aliceB }, "t-user", "alice of B");
    await tidingsBroadcast({ kind: "tenant", tenant: k.A }, "t-tenant", "A");
    await tidingsBroadcast({ kind: "room", room: uid("empty") }, "t-nobody", 0);
    // Over SSE only: no socket.io client anywhere.
    await tidingsBroadcast({ kind: "all" }, "t-sse", 0, "sse");
    const logs = await settleAll(k, "tidings");
    assertLogs(k, logs, [
      [MAIN, ["t-all", { n: 1 }]],
      [IN_R, ["t-room", "R"]],
      [IN_U, ["t-room", "U"]],
      [ALICE_A, ["t-user", "alice of A"]],
      [ALICE_B, ["t-user", "alice of B"]],
      [TENANT_A, ["t-tenant", "A"]],
    ], "tidings ctl:broadcast");
    await assertAdapterConnected();
  });

  test("Socket::to_room from a tidings socket (to-socket-room) reaches the Node sockets in the room", OPTS, async () => {
    const k = await cast();
    const arrived = (names, data) =>
      Promise.all(names.map((n) => k.c[n].log.until(() => k.c[n].log.items.some(([e, d]) => e === "room-message" && isDeepStrictEqual(d, data)), `room-message ${JSON.stringify(data)}`)));
    // A member speaks (and hears itself: Socket::to_room leaves nobody out).
    k.c.tA1.emit("to-socket-room", k.R, { from: "tA1" });
    await arrived(IN_R, { from: "tA1" });
    // An outsider speaks to bob's user room U (where a Node socket of bob's is too).
    k.c.tAnon2.emit("to-socket-room", k.U, { from: "tAnon2" });
    await arrived(IN_U, { from: "tAnon2" });
    const logs = await settleAll(k, "tidings");
    assertLogs(k, logs, [[IN_R, ["room-message", { from: "tA1" }]], [IN_U, ["room-message", { from: "tAnon2" }]]], "to-socket-room");
    await assertAdapterConnected();
  });

  test("Node fetchSockets includes the tidings sockets: id, rooms, data", OPTS, async () => {
    const k = await cast();
    const record = (c) => ({ id: c.id, rooms: [...c.expectedRooms].sort(), data: c.server === TIDINGS ? c.who ?? undefined : c.who ?? {}, local: c.server === NODE });
    const control = { id: TIDINGS.control.id(), rooms: [TIDINGS.control.id()], data: undefined, local: false };
    const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    const fetch = async (req) => {
      const list = await nctl("ctl:fetch", req);
      assert.ok(Array.isArray(list), `ctl:fetch ${JSON.stringify(req)} = ${JSON.stringify(list)}`);
      for (const s of list) assert.equal(s.handshake, true, `a fetched socket without a handshake object: ${JSON.stringify(s)}`);
      return list.map((s) => ({ id: s.id, rooms: [...s.rooms].sort(), data: s.data, local: s.local })).sort(byId);
    };
    const want = (names, extra = []) => [...names.map((n) => record(k.c[n])), ...extra].sort(byId);
    const cases = [
      ["io.fetchSockets()", {}, want(MAIN, [control])],
      ["in(R)", { rooms: [k.R] }, want(IN_R)],
      ["in(U)", { rooms: [k.U] }, want(IN_U)],
      ["in(alice of A)", { rooms: [userRoom(k.A, k.aliceA.user)] }, want(ALICE_A)],
      ["in(tenant B)", { rooms: [tenantRoom(k.B)] }, want(ALICE_B)],
      ["in(tA2's id)", { rooms: [k.c.tA2.id] }, want(["tA2"])],
      ["in([R, U]).except(tA1's id)", { rooms: [k.R, k.U], except: [k.c.tA1.id] }, want(minus([...IN_R, ...IN_U], ["tA1"]))],
    ];
    for (const [what, req, expected] of cases) assert.deepEqual(await fetch(req), expected, what);
    // /custom: its sockets of both servers, each in its own room only (their `data` is not part
    // of the contract there).
    const custom = (await fetch({ nsp: "/custom" })).map(({ id, rooms, local }) => ({ id, rooms, local }));
    assert.deepEqual(custom, CUSTOM.map((n) => ({ id: k.c[n].id, rooms: [k.c[n].id], local: k.c[n].server === NODE })).sort(byId), "io.of('/custom').fetchSockets()");
    await assertAdapterConnected();
  });

  test("Node socketsJoin / socketsLeave act on the tidings sockets (a following emit shows it)", OPTS, async () => {
    const k = await cast();
    const R2 = uid("joined");
    const ok = { ok: true };
    assert.deepEqual(await nctl("ctl:sockets-join", { rooms: [k.R], room: R2 }), ok);
    assert.deepEqual(await nctl("ctl:sockets-join", { rooms: [k.c.tA2.id], room: R2 }), ok);
    assert.deepEqual(await nctl("ctl:sockets-join", { rooms: [k.U], room: R2 }), ok);
    await nodeEmit({ rooms: [R2], event: "r2", args: ["joined"] });
    let logs = await settleAll(k, "node");
    const joined = [...IN_R, "tA2", ...IN_U];
    assertLogs(k, logs, [[joined, ["r2", "joined"]]], "socketsJoin then io.to(R2)");
    // The tidings sockets report the room too.
    const fetched = await nctl("ctl:fetch", { rooms: [R2] });
    assert.deepEqual(fetched.map((s) => s.id).sort(), joined.map((n) => k.c[n].id).sort(), "io.in(R2).fetchSockets()");
    for (const s of fetched) assert.ok(s.rooms.includes(R2), `${s.id}'s rooms: ${JSON.stringify(s.rooms)}`);

    clearAll(k);
    assert.deepEqual(await nctl("ctl:sockets-leave", { rooms: [k.R], room: R2 }), ok);
    await nodeEmit({ rooms: [R2], event: "r2", args: ["after leave"] });
    // R itself is untouched.
    await nodeEmit({ rooms: [k.R], event: "r", args: ["still in R"] });
    logs = await settleAll(k, "node");
    assertLogs(k, logs, [[["tA2", ...IN_U], ["r2", "after leave"]], [IN_R, ["r", "still in R"]]], "socketsLeave then io.to(R2)");
    await assertAdapterConnected();
  });

  test("Node disconnectSockets disconnects the tidings sockets in the audience, and only them", OPTS, async () => {
    const k = await cast();
    assert.deepEqual(await nctl("ctl:disconnect", { rooms: [k.R] }), { ok: true });
    assert.deepEqual(await nctl("ctl:disconnect", { rooms: [k.c.tB.id] }), { ok: true });
    const gone = [...IN_R, "tB"];
    for (const n of gone) {
      const c = k.c[n];
      await c.log.until(() => c.disconnects.length > 0, `${c.label}'s disconnect`);
    }
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [], "disconnectSockets");
    const seen = Object.fromEntries(k.names.map((n) => [n, { connected: k.c[n].connected, disconnects: k.c[n].disconnects }]));
    const expected = Object.fromEntries(
      k.names.map((n) => [n, gone.includes(n) ? { connected: false, disconnects: ["io server disconnect"] } : { connected: true, disconnects: [] }]),
    );
    assert.deepEqual(seen, expected, "who was disconnected, and why");
    await assertAdapterConnected();
  });

  test("Node allRooms includes the rooms of the tidings sockets, and no room nobody is in", OPTS, async () => {
    const k = await cast();
    // Exactly the union of the rooms of the namespace's sockets on both servers, as Node's own
    // answer is: every socket's id among them (Node lists its sockets' ids), and no room without
    // a socket in it (a room the user left; the user rooms of earlier tests' users, who have no
    // socket left).
    // A room only a tidings socket is in, a user room only on tidings, a room the user left.
    const RT = uid("tidings-only");
    const UT = uid("tidings-user-room");
    const LEFT = uid("left");
    await socketJoin(k.c.tAnon2, RT);
    await userJoin(k.aliceB, UT, [k.c.tG]);
    await userJoin(k.bobA, LEFT, []);
    assert.deepEqual(await tctl("ctl:leave", { ...k.bobA, room: LEFT }), { ok: true });
    const expected = new Set([TIDINGS.control.id()]);
    for (const n of MAIN) for (const r of k.c[n].expectedRooms) expected.add(r);
    // Whose room each one is, for the message.
    const owners = (room) => {
      const who = k.all.filter((c) => c.expectedRooms.has(room)).map((c) => (c.id === room ? `${c.label}'s id` : c.label));
      if (room === TIDINGS.control.id()) who.push("T:control's id");
      return `${room} (${who.join(", ") || "nobody here"})`;
    };
    const compare = (what, got, want) => {
      assert.ok(Array.isArray(got), `${what} = ${JSON.stringify(got)}`);
      const missing = [...want].filter((r) => !got.includes(r));
      const unexpected = got.filter((r) => !want.has(r));
      return missing.length || unexpected.length
        ? [`${what}:\n    missing ${missing.length}: ${missing.map(owners).join("; ")}\n    unexpected ${unexpected.length}: ${unexpected.map(owners).join("; ")}`]
        : [];
    };
    const problems = [
      ...compare("io.of('/').adapter.allRooms()", await nctl("ctl:all-rooms", {}), expected),
      // /custom's rooms are its sockets' own, on both servers.
      ...compare("io.of('/custom').adapter.allRooms()", await nctl("ctl:all-rooms", { nsp: "/custom" }), new Set(CUSTOM.map((n) => k.c[n].id))),
    ];
    assert.ok(problems.length === 0, `allRooms is not the union of the sockets' rooms (the room the user left: ${LEFT}):\n  ${problems.join("\n  ")}`);
    await assertAdapterConnected();
  });

  test("Node serverSideEmit reaches the tidings app, in order, and no client", OPTS, async () => {
    const k = await cast();
    const tag = uid("ping");
    const x1 = { tag, n: 1 };
    const x2 = { tag, n: 2, nested: [true, null] };
    assert.deepEqual(await nctl("ctl:server-side-emit", { event: "ping-tidings", args: [x1] }), { ok: true });
    assert.deepEqual(await nctl("ctl:server-side-emit", { event: "ping-tidings", args: [x2, "second"] }), { ok: true });
    const mine = async () => {
      const log = await tctl("ctl:server-side-log", {});
      assert.ok(Array.isArray(log), `ctl:server-side-log = ${JSON.stringify(log)}`);
      return log.filter((entry) => Array.isArray(entry) && entry.some((a) => a?.tag === tag));
    };
    let got = [];
    for (const deadline = Date.now() + TIMEOUT; got.length < 2 && Date.now() < deadline; await sleep(50)) got = await mine();
    const want = [["ping-tidings", x1], ["ping-tidings", x2, "second"]];
    assert.deepEqual(got, want, "what the tidings app recorded");
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [], "serverSideEmit");
    assert.deepEqual(await mine(), want, "what the tidings app recorded, after a quiet window");
    await assertAdapterConnected();
  });

  test("Node serverSideEmitWithAck gets the tidings node's answer", OPTS, async () => {
    const k = await cast();
    const x = { tag: uid("ask"), list: [1, "two"] };
    assert.deepEqual(await nctl("ctl:server-side-emit-ack", { event: "ping-tidings", args: [x] }), { responses: [{ from: "tidings", args: [x] }] });
    assert.deepEqual(await nctl("ctl:server-side-emit-ack", { event: "ping-tidings", args: ["a", 2] }), { responses: [{ from: "tidings", args: ["a", 2] }] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [], "serverSideEmitWithAck");
    await assertAdapterConnected();
  });

  test("Node emitWithAck collects the acks of the tidings clients; a silent tidings client makes it time out", OPTS, async () => {
    const k = await cast();
    const labels = (names, extra = []) => [...names.map((n) => k.c[n].label), ...extra].sort();
    const ask = async (req) => {
      const r = await nctl("ctl:emit-with-ack", { event: "question", timeout: 3000, ...req });
      return { ...r, responses: Array.isArray(r.responses) ? [...r.responses].sort() : r.responses };
    };
    assert.deepEqual(await ask({ args: ["q-all"] }), { responses: labels(MAIN, [TIDINGS.control.label]) }, "io.timeout(3000).emitWithAck");
    assert.deepEqual(await ask({ rooms: [k.R], args: ["q-r"] }), { responses: labels(IN_R) }, "io.to(R).timeout(3000).emitWithAck");
    assert.deepEqual(await ask({ rooms: [userRoom(k.A, k.aliceA.user)], args: ["q-alice"] }), { responses: labels(ALICE_A) }, "to alice of A");
    // A tidings socket that never answers, in a room with a Node socket that does.
    const silent = await sock(TIDINGS, "tSilent", null, { silent: true });
    k.c.tSilent = silent;
    k.names.push("tSilent");
    k.all.push(silent);
    const RS = uid("silent");
    await socketJoin(silent, RS);
    await socketJoin(k.c.nB, RS);
    assert.deepEqual(await ask({ rooms: [RS], args: ["q-silent"], timeout: 1500 }), { error: "operation has timed out", responses: [k.c.nB.label] }, "a room with a silent tidings socket");
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [
      [MAIN, ["question", "q-all"]],
      [IN_R, ["question", "q-r"]],
      [ALICE_A, ["question", "q-alice"]],
      [["tSilent", "nB"], ["question", "q-silent"]],
    ], "emitWithAck");
    await assertAdapterConnected();
  });

  // --- requests made by tidings (ctl:cluster) ----------------------------------------------------

  test("tidings fetchSockets: all, in a room, except a room, by reserved user and tenant rooms; its own first", OPTS, async () => {
    const k = await cast();
    const tidingsIds = new Set([TIDINGS.control.id(), ...k.all.filter((c) => c.server === TIDINGS).map((c) => c.id)]);
    // A tidings socket's data is its {user, tenant} (null when anonymous); a Node socket's is
    // what the Node server set ({} when anonymous).
    const record = (c) => ({ id: c.id, rooms: [...c.expectedRooms].sort(), data: c.who ?? (c.server === TIDINGS ? null : {}) });
    const control = { id: TIDINGS.control.id(), rooms: [TIDINGS.control.id()], data: null };
    const fetch = async (req) => {
      const list = await clusterOk({ op: "fetch", ...req });
      return tidingsFirst(
        list.map((s) => ({ id: s.id, rooms: Array.isArray(s.rooms) ? [...s.rooms].sort() : s.rooms, data: s.data })),
        (s) => tidingsIds.has(s.id),
        (s) => s.id,
      );
    };
    const want = (names, extra = []) => split([...names.map((n) => record(k.c[n])), ...extra], (s) => tidingsIds.has(s.id), (s) => s.id);
    const cases = [
      ["all", {}, want(MAIN, [control])],
      ["in(R)", { rooms: [k.R] }, want(IN_R)],
      ["except(R)", { except: [k.R] }, want(minus(MAIN, IN_R), [control])],
      ["in(U)", { rooms: [k.U] }, want(IN_U)],
      ["in(alice of A)", { rooms: [userRoom(k.A, k.aliceA.user)] }, want(ALICE_A)],
      ["in(tenant B)", { rooms: [tenantRoom(k.B)] }, want(ALICE_B)],
      ["in(tenant A).except(alice of A)", { rooms: [tenantRoom(k.A)], except: [userRoom(k.A, k.aliceA.user)] }, want(["tB", "nB"])],
      ["in(nG's id, tAnon2's id)", { rooms: [k.c.nG.id, k.c.tAnon2.id] }, want(["nG", "tAnon2"])],
      ["in([R, U]).except(tA1's id, nB's id)", { rooms: [k.R, k.U], except: [k.c.tA1.id, k.c.nB.id] }, want(minus([...IN_R, ...IN_U], ["tA1", "nB"]))],
      ["in(a room nobody is in)", { rooms: [uid("empty")] }, [[], []]],
    ];
    for (const [what, req, expected] of cases) assert.deepEqual(await fetch(req), expected, `fetchSockets ${what}`);
    // /custom: its sockets of both servers, each in its own room only (data left out).
    const custom = (await fetch({ nsp: "/custom" })).map((part) => part.map(({ id, rooms }) => ({ id, rooms })));
    assert.deepEqual(custom, want(CUSTOM).map((part) => part.map(({ id }) => ({ id, rooms: [id] }))), "fetchSockets of /custom");
    const logs = await settleAll(k, "tidings");
    assertLogs(k, logs, [], "fetchSockets");
    await assertAdapterConnected();
  });

  test("tidings socketsJoin: a following Node io.to(room).emit reaches exactly the joined sockets on both servers", OPTS, async () => {
    const k = await cast();
    const R2 = uid("joined");
    const R3 = uid("joined-too");
    const join = (req) => clusterOk({ op: "join", ...req });
    assert.equal(await join({ rooms: [k.R], join: [R2] }), null);
    assert.equal(await join({ rooms: [k.c.tA2.id], join: [R2] }), null);
    // By bob's reserved user room, into two rooms at once.
    assert.equal(await join({ rooms: [userRoom(k.A, k.bobA.user)], join: [R2, R3] }), null);
    // The tenant B and R, but two of R.
    assert.equal(await join({ rooms: [tenantRoom(k.B), k.R], except: [k.c.tAnon.id, k.c.nA1.id], join: [R3] }), null);
    const inR2 = [...IN_R, "tA2", ...IN_U];
    const inR3 = [...IN_U, ...ALICE_B, "tA1", "nAnon"];
    await awaitMembers(k, R2, inR2, "socketsJoin");
    await awaitMembers(k, R3, inR3, "socketsJoin");
    await nodeEmit({ rooms: [R2], event: "r2", args: ["joined"] });
    await nodeEmit({ rooms: [R3], event: "r3", args: [{ n: 3 }] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [[inR2, ["r2", "joined"]], [inR3, ["r3", { n: 3 }]]], "tidings socketsJoin then io.to(room)");
    // The joined sockets report the room, as tidings sees them too.
    const fetched = await clusterOk({ op: "fetch", rooms: [R2] });
    assert.deepEqual(fetched.map((s) => s.id).sort(), inR2.map((n) => k.c[n].id).sort(), "tidings fetchSockets in(R2)");
    for (const s of fetched) assert.ok(s.rooms.includes(R2), `${s.id}'s rooms: ${JSON.stringify(s.rooms)}`);
    await assertAdapterConnected();
  });

  test("tidings socketsLeave: the selected sockets leave on both servers, the others stay", OPTS, async () => {
    const k = await cast();
    const R2 = uid("joined");
    assert.equal(await clusterOk({ op: "join", rooms: [k.R, k.U], join: [R2] }), null);
    await awaitMembers(k, R2, [...IN_R, ...IN_U], "socketsJoin");
    const leave = (req) => clusterOk({ op: "leave", ...req });
    // R's sockets leave R2; R's but nA1 leave R itself (a socket's own room choice on either server).
    assert.equal(await leave({ rooms: [k.R], join: [R2] }), null);
    assert.equal(await leave({ rooms: [k.R], except: [k.c.nA1.id], join: [k.R] }), null);
    await awaitMembers(k, R2, IN_U, "socketsLeave");
    await awaitMembers(k, k.R, ["nA1"], "socketsLeave");
    await nodeEmit({ rooms: [R2], event: "r2", args: ["after leave"] });
    await nodeEmit({ rooms: [k.R], event: "r", args: ["left R"] });
    // Their other rooms are untouched.
    await nodeEmit({ rooms: [userRoom(k.A, k.aliceA.user)], event: "alice", args: [] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [[IN_U, ["r2", "after leave"]], [["nA1"], ["r", "left R"]], [ALICE_A, ["alice"]]], "tidings socketsLeave then io.to(room)");
    await assertAdapterConnected();
  });

  /** Disconnects with `requests` (each `[via, selector]`), then: exactly `gone` got "io server disconnect", the others stay. */
  async function disconnectRow(k, requests, gone, what) {
    for (const [via, req] of requests) {
      if (via === "tidings") assert.equal(await clusterOk({ op: "disconnect", ...req }), null, `tidings disconnectSockets ${JSON.stringify(req)}`);
      else assert.deepEqual(await nctl("ctl:disconnect", req), { ok: true }, `Node disconnectSockets ${JSON.stringify(req)}`);
    }
    for (const n of gone) {
      const c = k.c[n];
      await c.log.until(() => c.disconnects.length > 0, `${c.label}'s disconnect`);
    }
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [], what);
    const seen = Object.fromEntries(k.names.map((n) => [n, { connected: k.c[n].connected, disconnects: k.c[n].disconnects }]));
    const expected = Object.fromEntries(
      k.names.map((n) => [n, gone.includes(n) ? { connected: false, disconnects: ["io server disconnect"] } : { connected: true, disconnects: [] }]),
    );
    assert.deepEqual(seen, expected, `${what}: who was disconnected, and why`);
    await assertAdapterConnected();
  }

  test("tidings disconnectSockets: the selected clients of both servers get 'io server disconnect', the others stay", OPTS, async () => {
    const k = await cast();
    // By a room, and by alice of B's reserved user room.
    await disconnectRow(k, [["tidings", { rooms: [k.R] }], ["tidings", { rooms: [userRoom(k.B, k.aliceB.user)] }]], [...IN_R, ...ALICE_B], "tidings disconnectSockets");
  });

  // socket.io's disconnectSockets(true) (Socket#disconnect(true): Client#_disconnect) sends each
  // socket of the connection its DISCONNECT packet, then closes the connection: the client says
  // "io server disconnect" and does not reconnect; tidings does the same.
  test("disconnectSockets(true), from tidings and from Node: the selected clients get 'io server disconnect', the others stay", OPTS, async () => {
    const k = await cast();
    await disconnectRow(k, [
      ["tidings", { rooms: [userRoom(k.B, k.aliceB.user)], close: true }],
      ["node", { rooms: [userRoom(k.A, k.bobA.user)], close: true }],
    ], [...ALICE_B, "tB", "nB"], "disconnectSockets(true)");
  });

  test("tidings serverSideEmit reaches the Node listener once, with the args, and no client", OPTS, async () => {
    const k = await cast();
    const tag = uid("ping");
    const x1 = { tag, n: 1 };
    const x2 = { tag, n: 2, nested: [true, null] };
    assert.equal(await clusterOk({ op: "server-side-emit", event: "ping-node", args: [x1] }), null);
    assert.equal(await clusterOk({ op: "server-side-emit", event: "ping-node", args: [x2, "second"] }), null);
    const mine = async (ctl) => {
      const log = await ctl("ctl:server-side-log", {});
      assert.ok(Array.isArray(log), `ctl:server-side-log = ${JSON.stringify(log)}`);
      return log.filter((entry) => JSON.stringify(entry).includes(tag));
    };
    let got = [];
    for (const deadline = Date.now() + TIMEOUT; got.length < 2 && Date.now() < deadline; await sleep(50)) got = await mine(nctl);
    const want = [
      { nsp: "/", event: "ping-node", args: [x1], withAck: false },
      { nsp: "/", event: "ping-node", args: [x2, "second"], withAck: false },
    ];
    assert.deepEqual(got, want, "what the Node listener recorded");
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [], "tidings serverSideEmit");
    assert.deepEqual(await mine(nctl), want, "what the Node listener recorded, after a quiet window");
    // The other servers only: tidings' own listener heard nothing.
    assert.deepEqual(await mine(tctl), [], "what the tidings app recorded");
    await assertAdapterConnected();
  });

  test("tidings serverSideEmitWithAck gets the Node answer; a Node listener that never answers makes it fail", OPTS, async () => {
    const k = await cast();
    const x = { tag: uid("ask"), list: [1, "two"] };
    assert.deepEqual(await cluster({ op: "server-side-emit-ack", event: "ping-node", args: [x], timeoutMs: 3000 }), { ok: true, result: [{ from: "node", args: [x] }] });
    assert.deepEqual(await cluster({ op: "server-side-emit-ack", event: "ping-node", args: ["a", 2], timeoutMs: 3000 }), { ok: true, result: [{ from: "node", args: ["a", 2] }] });
    const silent = { tag: uid("silent") };
    assert.deepEqual(
      await cluster({ op: "server-side-emit-ack", event: "ping-node-silent", args: [silent], timeoutMs: 1000 }),
      { ok: false, error: "cluster unavailable: timeout reached: only 0 responses received out of 1" },
      "serverSideEmitWithAck to a listener that never answers",
    );
    const log = (await nctl("ctl:server-side-log", {})).filter((e) => [[x], ["a", 2], [silent]].some((args) => isDeepStrictEqual(e.args, args)));
    assert.deepEqual(log, [
      { nsp: "/", event: "ping-node", args: [x], withAck: true },
      { nsp: "/", event: "ping-node", args: ["a", 2], withAck: true },
      { nsp: "/", event: "ping-node-silent", args: [silent], withAck: true },
    ], "what the Node listener recorded");
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [], "tidings serverSideEmitWithAck");
    await assertAdapterConnected();
  });

  test("tidings emitWithAck collects the answers of both servers' clients, its own first", OPTS, async () => {
    const k = await cast();
    // The clients answer with their labels: "T:…" on tidings, "N:…" on Node.
    const mine = (l) => typeof l === "string" && l.startsWith("T:");
    const labels = (names, extra = []) => split([...extra, ...names.map((n) => k.c[n].label)], mine);
    const ask = async (req) => tidingsFirst(await clusterOk({ op: "emit-with-ack", event: "question", timeoutMs: 3000, ...req }), mine);
    assert.deepEqual(await ask({ args: ["q-all"] }), labels(MAIN, [TIDINGS.control.label]), "emitWithAck to all");
    assert.deepEqual(await ask({ rooms: [k.R], args: ["q-r"] }), labels(IN_R), "emitWithAck in(R)");
    assert.deepEqual(await ask({ except: [k.R], args: ["q-not-r"] }), labels(minus(MAIN, IN_R), [TIDINGS.control.label]), "emitWithAck except(R)");
    assert.deepEqual(await ask({ rooms: [userRoom(k.A, k.aliceA.user)], args: ["q-alice"] }), labels(ALICE_A), "emitWithAck to alice of A");
    assert.deepEqual(await ask({ rooms: [uid("empty")], args: ["q-nobody"] }), [[], []], "emitWithAck to nobody");
    assert.deepEqual(await ask({ nsp: "/custom", args: ["q-custom"] }), labels(CUSTOM), "emitWithAck to /custom");
    const logs = await settleAll(k, "tidings");
    assertLogs(k, logs, [
      [MAIN, ["question", "q-all"]],
      [IN_R, ["question", "q-r"]],
      [minus(MAIN, IN_R), ["question", "q-not-r"]],
      [ALICE_A, ["question", "q-alice"]],
      [CUSTOM, ["question", "q-custom"]],
    ], "tidings emitWithAck");
    await assertAdapterConnected();
  });

  test("tidings emitWithAck with a silent client, on either server, fails after its timeout", OPTS, async () => {
    const k = await cast();
    for (const [name, server] of [["tSilent", TIDINGS], ["nSilent", NODE]]) {
      const c = await sock(server, name, null, { silent: true });
      k.c[name] = c;
      k.names.push(name);
      k.all.push(c);
    }
    // Each silent client in a room with answering clients of both servers.
    const RT = uid("silent-t");
    const RN = uid("silent-n");
    for (const n of ["tSilent", "tAnon2", "nB"]) await socketJoin(k.c[n], RT);
    for (const n of ["nSilent", "tG", "nAnon2"]) await socketJoin(k.c[n], RN);
    assert.deepEqual(
      await cluster({ op: "emit-with-ack", rooms: [RT], event: "question", args: ["q-silent-t"], timeoutMs: 1500 }),
      { ok: false, error: "cluster unavailable: operation has timed out with 2 answers" },
      "emitWithAck to a room with a silent tidings client",
    );
    assert.deepEqual(
      await cluster({ op: "emit-with-ack", rooms: [RN], event: "question", args: ["q-silent-n"], timeoutMs: 1500 }),
      { ok: false, error: "cluster unavailable: operation has timed out with 2 answers" },
      "emitWithAck to a room with a silent Node client",
    );
    const logs = await settleAll(k, "tidings");
    assertLogs(k, logs, [
      [["tSilent", "tAnon2", "nB"], ["question", "q-silent-t"]],
      [["nSilent", "tG", "nAnon2"], ["question", "q-silent-n"]],
    ], "tidings emitWithAck with a silent client");
    await assertAdapterConnected();
  });

  test("tidings socketsJoin / socketsLeave refuse a tidings: room, and nobody joins or leaves anything", OPTS, async () => {
    const k = await cast();
    const R2 = uid("not-joined");
    const refused = { ok: false, error: 'invalid room: rooms starting with "tidings:" are reserved' };
    assert.deepEqual(await cluster({ op: "join", rooms: [k.R], join: [userRoom(k.A, k.bobA.user)] }), refused, "join a user room");
    assert.deepEqual(await cluster({ op: "join", rooms: [k.R], join: [R2, tenantRoom(k.A)] }), refused, "join a room and a tenant room");
    assert.deepEqual(await cluster({ op: "leave", rooms: [userRoom(k.A, k.aliceA.user)], join: [tenantRoom(k.A)] }), refused, "leave a tenant room");
    // A request that goes through, published after the refused ones would have been: once it is
    // done everywhere, they would be too.
    const R4 = uid("barrier");
    assert.equal(await clusterOk({ op: "join", rooms: [k.R], join: [R4] }), null);
    await awaitMembers(k, R4, IN_R, "the join after the refused ones");
    await nodeEmit({ rooms: [R2], event: "r2", args: [] });
    await nodeEmit({ rooms: [userRoom(k.A, k.bobA.user)], event: "bob", args: [] });
    await nodeEmit({ rooms: [tenantRoom(k.A)], event: "tenant-a", args: [] });
    const logs = await settleAll(k, "node");
    assertLogs(k, logs, [[IN_U, ["bob"]], [TENANT_A, ["tenant-a"]]], "after the refused requests");
    await assertAdapterConnected();
  });
});
