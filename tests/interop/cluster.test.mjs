// Interop: a cluster of three `examples/interop.rs` nodes on one Redis (the `redis` feature), seen
// by real clients: socket.io-client 4.8 over websocket and polling only, and `eventsource` 4.x.
// The API calls go through the `ctl:*` events of a control socket on node 1; the clients sit on
// nodes 2 and 3 (a few on node 1 too), so every delivery crosses Redis. The last test kills a
// node (SIGKILL): an EventSource resumes on the others with `Last-Event-ID` (the history is the
// cluster's), and socket.io-clients behind a small TCP "load balancer" reconnect to another node.
//
// The file starts everything itself and kills it in `after()`: its own `redis-server` on a free
// 127.0.0.1 port (a temporary directory, no snapshots, append-only with fsync on every write) and
// three interop nodes (free ports, `REDIS_URL`, `REDIS_PREFIX`); TIDINGS_URL is not used. Without
// `redis-server` the tests FAIL (CI installs it; see scripts/test-all.sh), they never skip.
// By hand:
//   cargo build --features redis --example interop && node --test tests/interop/cluster.test.mjs
// Environment: INTEROP_BIN (the interop example built with `--features redis`; default
//   $CARGO_TARGET_DIR/debug/examples/interop, or target/…), REDIS_SERVER (the redis-server
//   binary; default `redis-server` on the PATH).
//
// Exact audiences: every socket logs every event it gets (`onAny`); every EventSource logs every
// event name this file sends (and `tidings-reset`). A check ends with a `to_all` sentinel sent
// from node 1 after everything else: each node delivers the cluster's messages in one order, so
// once a client has the sentinel, a leak or a duplicate would be in too (plus a quiet window).
// Redis stays up throughout, so every test also checks that no node lost its link to it
// (`ctl:stats`: connected, no reconnect, nothing dropped). Every wait is bounded; the tests run in
// order (the last one kills node 3).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EventSource } from "eventsource";
import { io } from "socket.io-client";
import { TIMEOUT, QUIET_MS, SOCKET_OPTS, within, sleep, uid, controlSocket, Log, once } from "./helpers.mjs";
import { START_WAIT, findRedis, freePorts, portOpen, startProcess } from "./processes.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR)
  : path.join(ROOT, "target");
const BIN = process.env.INTEROP_BIN ?? path.join(TARGET, "debug", "examples", "interop");
const PREFIX = "interop-cluster";
const T = { timeout: 30000 };
/** Every event name an EventSource listens for (a socket logs everything it gets). */
const SSE_EVENTS = ["u-sse", "u-socket", "u-both", "t", "all", "room-ev", "room-message", "leak", "tick", "later", "sentinel", "tidings-reset"];

/** One command to Redis over RESP (no client library); the reply's first line. */
function redisCommand(port, ...args) {
  return within(
    TIMEOUT,
    new Promise((resolve, reject) => {
      const c = net.connect({ host: "127.0.0.1", port });
      let reply = "";
      c.once("error", reject);
      c.on("data", (d) => {
        reply += d;
        const end = reply.indexOf("\r\n");
        if (end >= 0) {
          c.destroy();
          resolve(reply.slice(0, end));
        }
      });
      c.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
    }),
    `redis ${args[0]}`,
  );
}

// --- a TCP "load balancer" ------------------------------------------------------------------------

/** Forwards every new connection to 127.0.0.1:`proxy.target`; `close()` drops them all. */
async function startProxy(target) {
  const conns = new Set();
  const proxy = { target, connections: 0 };
  const server = net.createServer((client) => {
    proxy.connections++;
    const upstream = net.connect({ host: "127.0.0.1", port: proxy.target });
    conns.add(client);
    conns.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(client);
      conns.delete(upstream);
    };
    for (const s of [client, upstream]) s.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  proxy.close = () => {
    server.close();
    for (const c of conns) c.destroy();
  };
  return proxy;
}

// --- clients --------------------------------------------------------------------------------------

const clients = new Set();

/** A socket.io-client socket on `url` as `{user, tenant}` (anonymous when `user` is null), logging every event. */
async function sock(url, user, tenant, transports) {
  const socket = io(url, { ...SOCKET_OPTS, transports, ...(user === null ? {} : { auth: { user, tenant } }) });
  clients.add(socket);
  socket.log = new Log(`socket ${user}@${tenant} ${transports} on ${url}`);
  socket.connects = 0;
  socket.on("connect", () => {
    socket.connects++;
    socket.log.wake();
  });
  // (An event with an ack has the ack function as its last argument: not logged.)
  socket.onAny((event, ...args) => socket.log.push([event, ...args.filter((a) => typeof a !== "function")]));
  await socket.log.until(() => socket.connects > 0, "connect");
  return socket;
}

/**
 * An EventSource on `url` for `{user, tenant}` (anonymous when `user` is null), logging the
 * events of SSE_EVENTS as [event, data] and their ids in `es.ids`; `lastEventId` sends that
 * `Last-Event-ID` on the first request (a resume on another node).
 */
async function stream(url, user, tenant, { lastEventId } = {}) {
  const query = user === null ? "" : `?${new URLSearchParams({ user, tenant })}`;
  // The headers eventsource itself sent, per request.
  const requests = [];
  const es = new EventSource(`${url}/events${query}`, {
    fetch: (input, init) => {
      requests.push({ ...(init?.headers ?? {}) });
      const headers = lastEventId && requests.length === 1 ? { ...init?.headers, "Last-Event-ID": lastEventId } : init?.headers;
      return fetch(input, { ...init, headers });
    },
  });
  clients.add(es);
  es.requests = requests;
  es.log = new Log(`sse ${user}@${tenant} on ${url}`);
  es.ids = [];
  es.opens = 0;
  es.errors = 0;
  es.addEventListener("open", () => {
    es.opens++;
    es.log.wake();
  });
  es.addEventListener("error", () => {
    es.errors++;
    es.log.wake();
  });
  for (const e of SSE_EVENTS) {
    es.addEventListener(e, (m) => {
      es.ids.push(m.lastEventId);
      es.log.push([e, JSON.parse(m.data)]);
    });
  }
  await es.log.until(() => es.opens > 0, "open");
  return es;
}

/** The ids are `<epoch>:<seq>`, of one epoch, strictly increasing, and all after `after` (an id) if given. */
function assertIdsIncrease(ids, after) {
  const parse = (id) => {
    const m = /^(\d+):(\d+)$/.exec(id);
    assert.ok(m, `event id '${id}' is not <epoch>:<seq>`);
    return { epoch: m[1], seq: BigInt(m[2]) };
  };
  const all = (after ? [after, ...ids] : ids).map(parse);
  for (let i = 1; i < all.length; i++) {
    assert.equal(all[i].epoch, all[0].epoch, `epoch changed: ${JSON.stringify(ids)} after ${after}`);
    assert.ok(all[i].seq > all[i - 1].seq, `ids not increasing: ${JSON.stringify(ids)} after ${after}`);
  }
}

// --- the cluster ------------------------------------------------------------------------------------

let redis = null;
let redisDir = null;
/** nodes[1..3]: the interop processes; node[i].ctl is a control socket on it. */
const nodes = [];
let proxy = null;
/** The balancer of the socket with recovery in the kill test. */
let recoveryProxy = null;

after(async () => {
  for (const c of clients) c.close();
  proxy?.close();
  recoveryProxy?.close();
  for (const n of nodes) n?.control.close();
  for (const n of nodes) n?.recovery.close();
  for (const n of nodes) await n?.kill().catch(() => {});
  await redis?.kill().catch(() => {});
  if (redisDir) rmSync(redisDir, { recursive: true, force: true });
});

/** `ctl:*` on node `i`. */
const ctl = (i, event, payload) => nodes[i].control.ctl(event, payload);

/** A broadcast through node `i` (default 1); must succeed. */
async function broadcast(target, event, data, { transport = "both", via = 1 } = {}) {
  const r = await ctl(via, "ctl:broadcast", { transport, target, event, data });
  assert.deepEqual(r, { ok: true }, `broadcast ${event} to ${JSON.stringify(target)} over ${transport} via node ${via}`);
}
const toUser = (user, tenant, event, data, opts) => broadcast({ kind: "user", user, tenant }, event, data, opts);

/** The to_all sentinel from node 1; then every client's log, sentinels left out, after a quiet window. */
async function settleAll(list) {
  const tag = uid("sentinel");
  await broadcast({ kind: "all" }, "sentinel", tag);
  return Promise.all(list.map((c) => c.log.settle(tag)));
}

/**
 * Redis never went away, so no node may have lost its link to it: connected now, never
 * reconnected, nothing dropped (a link that breaks and comes back refuses the broadcasts in
 * between with ClusterUnavailable). The nodes log warnings (INTEROP_LOG=warn) into the message.
 */
async function assertLinksHeld(ids = [1, 2, 3]) {
  for (const i of ids) {
    const stats = await ctl(i, "ctl:stats", {});
    const seen = { connected: stats?.clusterConnected, reconnects: stats?.clusterReconnects, dropped: stats?.clusterDropped };
    assert.deepEqual(seen, { connected: true, reconnects: 0, dropped: 0 }, `node ${i}'s link to Redis; its log:\n${nodes[i].output().slice(-1500)}`);
  }
}

/** Forgets what every client received so far (after a settled check). */
const clearAll = (list) => list.forEach((c) => c.log.clear());

describe("a cluster of three nodes on one Redis", () => {
  before(async () => {
    const redisBin = findRedis();
    if (!redisBin) {
      throw new Error(
        "redis-server not found (on the PATH, or REDIS_SERVER): the cluster tests need it. " +
          "Install Debian's package (apt-get install redis-server; scripts/test-all.sh does) or set REDIS_SERVER.",
      );
    }
    if (!existsSync(BIN)) {
      throw new Error(`${BIN} is missing: cargo build --features redis --example interop (scripts/interop.sh does)`);
    }
    const [redisPort, ...allPorts] = await freePorts(7);
    const ports = allPorts.slice(0, 3);
    const recoveryPorts = allPorts.slice(3);
    redisDir = mkdtempSync(path.join(os.tmpdir(), "tidings-cluster-interop-"));
    redis = await startProcess(
      "redis-server",
      redisBin,
      [
        "--bind", "127.0.0.1", "--port", String(redisPort),
        "--save", "", "--appendonly", "yes", "--appendfsync", "always",
        "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning",
        "--dir", redisDir,
      ],
      process.env,
      redisPort,
    );
    assert.equal(await redisCommand(redisPort, "PING"), "+PONG");
    const env = { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}/`, REDIS_PREFIX: PREFIX, INTEROP_LOG: "warn" };
    // Each node's recovery server (connection state recovery on) is a node of a second
    // cluster on the same Redis, made of the three recovery servers.
    for (const [i, port] of ports.entries()) {
      const recoveryPort = recoveryPorts[i];
      const nodeEnv = { ...env, PORT: String(port), RECOVERY_PORT: String(recoveryPort), RECOVERY_WINDOW_MS: "20000" };
      const node = await startProcess(`node ${i + 1}`, BIN, [], nodeEnv, port);
      const deadline = Date.now() + START_WAIT;
      while (!(await portOpen(recoveryPort))) {
        assert.ok(Date.now() < deadline, `node ${i + 1}'s recovery server did not listen; output:\n${node.output()}`);
        await sleep(50);
      }
      node.control = controlSocket(node.url);
      node.recoveryPort = recoveryPort;
      node.recovery = controlSocket(`http://127.0.0.1:${recoveryPort}`);
      nodes[i + 1] = node;
    }
    for (const i of [1, 2, 3]) {
      const stats = await ctl(i, "ctl:stats", {});
      assert.equal(stats?.clusterConnected, true, `node ${i} is not a connected cluster node: ${JSON.stringify(stats)}; output:\n${nodes[i].output()}`);
    }
  });
  // Every test but the last ends with `assertLinksHeld()`.

  test("to_user, to_tenant and to_all from node 1 reach exactly their audience on nodes 2 and 3", T, async () => {
    const tenant = uid("acme");
    const other = uid("globex");
    const alice = uid("alice");
    const bob = uid("bob");
    // alice: every kind of client on nodes 2 and 3 (and one on node 1).
    const aSocks = [];
    const aStreams = [];
    for (const i of [2, 3]) {
      aSocks.push(await sock(nodes[i].url, alice, tenant, ["websocket"]));
      aSocks.push(await sock(nodes[i].url, alice, tenant, ["polling"]));
      aStreams.push(await stream(nodes[i].url, alice, tenant));
    }
    aSocks.push(await sock(nodes[1].url, alice, tenant, ["websocket"]));
    // bob in the same tenant; alice's user id in another tenant; anonymous clients.
    const bSocks = [await sock(nodes[2].url, bob, tenant, ["websocket"]), await sock(nodes[3].url, bob, tenant, ["polling"])];
    const bStreams = [await stream(nodes[3].url, bob, tenant)];
    const oSocks = [await sock(nodes[3].url, alice, other, ["websocket"]), await sock(nodes[2].url, alice, other, ["polling"])];
    const oStreams = [await stream(nodes[2].url, alice, other)];
    const anon = [await sock(nodes[3].url, null, null, ["websocket"]), await stream(nodes[2].url, null, null)];

    await toUser(alice, tenant, "u-sse", { to: "alice", over: "sse" }, { transport: "sse" });
    await toUser(alice, tenant, "u-socket", { to: "alice", over: "socket" }, { transport: "socket" });
    await toUser(alice, tenant, "u-both", { to: "alice", over: "both" });
    await broadcast({ kind: "tenant", tenant }, "t", { to: tenant });
    await broadcast({ kind: "all" }, "all", { to: "everyone", test: tenant });
    const all = [...aSocks, ...aStreams, ...bSocks, ...bStreams, ...oSocks, ...oStreams, ...anon];
    const logs = await settleAll(all);
    const got = new Map(all.map((c, i) => [c, logs[i]]));
    const tenantEv = ["t", { to: tenant }];
    const allEv = ["all", { to: "everyone", test: tenant }];
    for (const s of aSocks) {
      assert.deepEqual(got.get(s), [["u-socket", { to: "alice", over: "socket" }], ["u-both", { to: "alice", over: "both" }], tenantEv, allEv], s.log.label);
    }
    for (const es of aStreams) {
      assert.deepEqual(got.get(es), [["u-sse", { to: "alice", over: "sse" }], ["u-both", { to: "alice", over: "both" }], tenantEv, allEv], es.log.label);
    }
    for (const c of [...bSocks, ...bStreams]) assert.deepEqual(got.get(c), [tenantEv, allEv], c.log.label);
    for (const c of [...oSocks, ...oStreams, ...anon]) assert.deepEqual(got.get(c), [allEv], c.log.label);
    // One numbering for the cluster: alice's streams on nodes 2 and 3 saw the same ids.
    assert.deepEqual(aStreams[0].ids, aStreams[1].ids);
    assertIdsIncrease(aStreams[0].ids);
    // The nodes used REDIS_PREFIX: the history is under it, and nothing under the default prefix.
    assert.equal(await redisCommand(redis.port, "EXISTS", `${PREFIX}:log`), ":1");
    assert.equal(await redisCommand(redis.port, "EXISTS", "tidings:log"), ":0");
    await assertLinksHeld();
  });

  test("to_room after ctl:join on node 1 reaches the member on nodes 2 and 3; ctl:rooms on node 3 reads the join", T, async () => {
    const tenant = uid("acme");
    const member = uid("member");
    const outsider = uid("outsider");
    const room = uid("room");
    const mClients = [];
    for (const i of [2, 3]) {
      mClients.push(await sock(nodes[i].url, member, tenant, ["websocket"]));
      mClients.push(await sock(nodes[i].url, member, tenant, ["polling"]));
      mClients.push(await stream(nodes[i].url, member, tenant));
    }
    const oClients = [
      await sock(nodes[2].url, outsider, tenant, ["polling"]),
      await sock(nodes[3].url, outsider, tenant, ["websocket"]),
      await stream(nodes[3].url, outsider, tenant),
      // The member's user id in another tenant is not the member.
      await sock(nodes[2].url, member, uid("globex"), ["websocket"]),
    ];
    const all = [...mClients, ...oClients];
    const isSse = (c) => c instanceof EventSource;

    assert.deepEqual(await ctl(1, "ctl:join", { user: member, tenant, room }), { ok: true });
    // The join returned on node 1, so every node reads it from Redis.
    for (const i of [3, 2]) assert.deepEqual(await ctl(i, "ctl:rooms", { user: member, tenant }), [room], `ctl:rooms on node ${i}`);
    assert.deepEqual(await ctl(3, "ctl:rooms", { user: outsider, tenant }), []);
    assert.deepEqual(await ctl(3, "ctl:rooms", { user: member, tenant: "globex" }), []);
    for (const transport of ["sse", "socket", "both"]) {
      await broadcast({ kind: "room", room }, "room-ev", transport, { transport });
    }
    let logs = await settleAll(all);
    all.forEach((c, i) => {
      const expected = mClients.includes(c) ? [["room-ev", isSse(c) ? "sse" : "socket"], ["room-ev", "both"]] : [];
      assert.deepEqual(logs[i], expected, c.log.label);
    });

    // Leaving on node 1 ends it on every node and transport.
    clearAll(all);
    assert.deepEqual(await ctl(1, "ctl:leave", { user: member, tenant, room }), { ok: true });
    assert.deepEqual(await ctl(3, "ctl:rooms", { user: member, tenant }), []);
    await broadcast({ kind: "room", room }, "leak", "after leave");
    await toUser(member, tenant, "u-both", "still the member");
    logs = await settleAll(all);
    all.forEach((c, i) => {
      assert.deepEqual(logs[i], mClients.includes(c) ? [["u-both", "still the member"]] : [], c.log.label);
    });
    await assertLinksHeld();
  });

  test("ctl:ack-user on node 1 collects the acks of the user's sockets on nodes 2 and 3", T, async () => {
    const tenant = uid("acme");
    const name = uid("grace");
    const answering2 = await sock(nodes[2].url, name, tenant, ["websocket"]);
    const answering3 = await sock(nodes[3].url, name, tenant, ["polling"]);
    const silent = await sock(nodes[3].url, name, tenant, ["websocket"]);
    const leaving = await sock(nodes[2].url, name, tenant, ["polling"]);
    // Not Socket.IO recipients of the user: its SSE stream, and another user's socket.
    const es = await stream(nodes[2].url, name, tenant);
    const other = await sock(nodes[3].url, uid("heidi"), tenant, ["websocket"]);
    answering2.on("confirm", (_data, cb) => cb({ node: 2 }, "second"));
    answering3.on("confirm", (_data, cb) => cb({ node: 3 }));
    leaving.on("confirm", () => leaving.disconnect());

    const res = await ctl(1, "ctl:ack-user", { user: name, tenant, event: "confirm", data: { order: 7 }, timeoutMs: 1500 });
    assert.ok(res && Array.isArray(res.outcomes), `ctl:ack-user = ${JSON.stringify(res)}`);
    assert.deepEqual(res.outcomes.map((o) => o.kind).sort(), ["disconnected", "ok", "ok", "timeout"], JSON.stringify(res));
    const oks = res.outcomes.filter((o) => o.kind === "ok").map((o) => o.args);
    oks.sort((a, b) => a[0].node - b[0].node);
    assert.deepEqual(oks, [[{ node: 2 }, "second"], [{ node: 3 }]]);
    const logs = await settleAll([answering2, answering3, silent, es, other]);
    for (const [i, s] of [answering2, answering3, silent].entries()) assert.deepEqual(logs[i], [["confirm", { order: 7 }]], s.log.label);
    assert.deepEqual(leaving.log.items, [["confirm", { order: 7 }]], leaving.log.label);
    assert.deepEqual(logs[3], [], "an SSE stream is not asked");
    assert.deepEqual(logs[4], [], "another user is not asked");

    // A user whose only connection is an SSE stream on node 3, and nobody at all: no recipients
    // anywhere in the cluster.
    const sseOnly = uid("sse-only");
    await stream(nodes[3].url, sseOnly, tenant);
    for (const user of [sseOnly, uid("nobody")]) {
      assert.deepEqual(await ctl(1, "ctl:ack-user", { user, tenant, event: "confirm", data: 1, timeoutMs: 1000 }), { noRecipients: true });
    }
    // No node is left waiting for an ack.
    for (const i of [1, 2, 3]) {
      const deadline = Date.now() + 3000;
      let stats;
      while ((stats = await ctl(i, "ctl:stats", {}))?.pendingAcks !== 0 && Date.now() < deadline) await sleep(50);
      assert.equal(stats?.pendingAcks, 0, `node ${i}: ${JSON.stringify(stats)}`);
    }
    await assertLinksHeld();
  });

  test("Socket::to_room reaches the room's sockets and users on every node, whichever node says it", T, async () => {
    const tenant = uid("acme");
    const room = uid("room");
    const joiner = uid("joiner");
    const member = uid("member");
    // Sockets that join by themselves (Socket::join), on nodes 2 and 3; the joiner's SSE stream is not in the room.
    const j2 = await sock(nodes[2].url, joiner, tenant, ["websocket"]);
    const j3 = await sock(nodes[3].url, joiner, tenant, ["polling"]);
    const jEs = await stream(nodes[2].url, joiner, tenant);
    // A user joined through the API (join_room on node 1): all of its connections are in the room.
    const m2 = await sock(nodes[2].url, member, tenant, ["polling"]);
    const m3 = await stream(nodes[3].url, member, tenant);
    // Not in the room: a socket on node 1 (which speaks too) and one on node 3.
    const out1 = await sock(nodes[1].url, uid("outsider"), tenant, ["websocket"]);
    const out3 = await sock(nodes[3].url, uid("outsider"), tenant, ["polling"]);
    for (const s of [j2, j3]) assert.equal(await within(TIMEOUT, s.timeout(TIMEOUT).emitWithAck("join-socket-room", room), "join-socket-room"), true);
    assert.deepEqual(await ctl(1, "ctl:join", { user: member, tenant, room }), { ok: true });
    // Socket::join is the socket's own, not its user's: not in the user's rooms.
    assert.deepEqual(await ctl(1, "ctl:rooms", { user: joiner, tenant }), []);

    // A member socket on node 3 says it (and hears itself: `Socket::to_room` leaves nobody out),
    // then the outsider on node 1.
    j3.emit("to-socket-room", room, { from: "node 3" });
    await j2.log.until(() => j2.log.items.length > 0, "the room message from node 3");
    out1.emit("to-socket-room", room, { from: "node 1" });
    await m3.log.until(() => m3.log.items.length > 1, "the room message from node 1");
    const all = [j2, j3, jEs, m2, m3, out1, out3];
    const logs = await settleAll(all);
    const both = [["room-message", { from: "node 3" }], ["room-message", { from: "node 1" }]];
    for (const [i, c] of all.entries()) assert.deepEqual(logs[i], [j2, j3, m2, m3].includes(c) ? both : [], c.log.label);
    await assertLinksHeld();
  });

  test("node 3 killed: an EventSource resumes on nodes 2 and 1 with Last-Event-ID, sockets move to node 2, a socket with recovery recovers there", { timeout: 60000 }, async () => {
    const tenant = uid("acme");
    const carol = uid("carol");
    const N = 4;
    const M = 5;
    // Straight to node 3, and through a "load balancer" that sends new connections to node 3
    // until it is gone, then to node 2 (the clients reconnect to the same URL by themselves).
    proxy = await startProxy(nodes[3].port);
    const direct = await stream(nodes[3].url, carol, tenant);
    const balanced = await stream(proxy.url, carol, tenant);
    const sockets = [await sock(proxy.url, carol, tenant, ["websocket"]), await sock(proxy.url, carol, tenant, ["polling"])];
    const bystander = await stream(nodes[2].url, uid("dave"), tenant);
    // A socket with connection state recovery on node 3's recovery server, through a balancer
    // of its own; its ticks go through node 3 (so its record, written at connect on the same
    // queue, is in Redis before the first tick is).
    recoveryProxy = await startProxy(nodes[3].recoveryPort);
    const recovering = await sock(recoveryProxy.url, carol, tenant, ["websocket"]);
    const recoveryBroadcast = async (via, target, event, data) => {
      const r = await nodes[via].recovery.ctl("ctl:broadcast", { transport: "both", target, event, data });
      assert.deepEqual(r, { ok: true }, `broadcast ${event} on the recovery servers via node ${via}`);
    };
    const carolTarget = { kind: "user", user: carol, tenant };
    for (let i = 0; i < N; i++) await recoveryBroadcast(3, carolTarget, "tick", i);
    await recovering.log.until(() => recovering.log.items.length >= N, `${N} ticks on the socket with recovery`);
    const recoveredSid = recovering.id;

    for (let i = 0; i < N; i++) await toUser(carol, tenant, "tick", i);
    for (const c of [direct, balanced, ...sockets]) {
      await c.log.until(() => c.log.items.length >= N, `${N} ticks`);
    }
    const ticks = (from, to) => Array.from({ length: to - from }, (_, k) => ["tick", from + k]);
    assert.deepEqual(direct.log.items, ticks(0, N));
    const lastSeen = direct.ids[N - 1];
    assert.deepEqual(balanced.ids, direct.ids);

    const errors = direct.errors;
    const disconnects = [...sockets, recovering].map((s) => once(s, "disconnect"));
    await nodes[3].kill();
    await direct.log.until(() => direct.errors > errors, "the direct stream noticing the kill");
    direct.close(); // eventsource would retry node 3 forever
    await Promise.all(disconnects);

    // Sent through node 1 while carol is connected nowhere.
    for (let i = N; i < N + M; i++) await toUser(carol, tenant, "tick", i);
    for (let i = N; i < N + M; i++) await recoveryBroadcast(1, carolTarget, "tick", i);
    // Carol's client reconnects by hand, with the id it saw last, to node 2, and another to node 1.
    const resumed = [await stream(nodes[2].url, carol, tenant, { lastEventId: lastSeen }), await stream(nodes[1].url, carol, tenant, { lastEventId: lastSeen })];
    for (const es of resumed) {
      await es.log.until(() => es.log.items.length >= M, `the ${M} missed ticks`);
    }
    // Node 2 has delivered the missed ticks; only now may the balancer reach it, so the sockets
    // (these nodes run without recovery) cannot get them: they hear what is sent after they are back.
    assert.equal(sockets[0].connected || sockets[1].connected, false, "a socket reconnected while node 3 was the only target");
    proxy.target = nodes[2].port;
    for (const s of sockets) await s.log.until(() => s.connects >= 2, "the reconnect to node 2", 10000);
    await balanced.log.until(() => balanced.opens >= 2, "the balanced stream's reconnect", 10000);
    for (const s of sockets) {
      // The socket is node 2's now: a fresh session there (no recovery on these nodes).
      assert.deepEqual(await ctl(2, "ctl:socket-log", { sid: s.id }), { connects: [false], disconnects: [] }, s.log.label);
    }
    await toUser(carol, tenant, "later", "after the move");
    // The socket with recovery: its client reconnects by itself to node 2 (with its pid and
    // offset) and gets its session back, with the ticks it missed, once, in order.
    recoveryProxy.target = nodes[2].recoveryPort;
    await recovering.log.until(() => recovering.connects >= 2, "the socket with recovery reconnecting to node 2", 10000);
    assert.equal(recovering.recovered, true, "socket.recovered after node 3 was killed");
    assert.equal(recovering.id, recoveredSid, "the same sid");
    assert.deepEqual(await nodes[2].recovery.ctl("ctl:socket-log", { sid: recovering.id }), { connects: [true], disconnects: [] });
    await recoveryBroadcast(1, carolTarget, "later", "after the move");
    const tag = uid("sentinel");
    await recoveryBroadcast(1, { kind: "all" }, "sentinel", tag);
    // (Each event carries its offset as a last argument: the name and first argument are compared.)
    const recoveredLog = (await recovering.log.settle(tag)).map(([e, d]) => [e, d]);
    assert.deepEqual(recoveredLog, [...ticks(0, N + M), ["later", "after the move"]], recovering.log.label);

    const logs = await settleAll([...resumed, balanced, ...sockets, bystander]);
    for (const [i, es] of resumed.entries()) {
      assert.deepEqual(logs[i], [...ticks(N, N + M), ["later", "after the move"]], es.log.label);
      assertIdsIncrease(es.ids, lastSeen);
    }
    // The balanced stream reconnected by itself (eventsource sends its last id): everything once, in order.
    assert.deepEqual(logs[2], [...ticks(0, N + M), ["later", "after the move"]], balanced.log.label);
    assert.equal(balanced.requests.at(-1)["Last-Event-ID"], lastSeen);
    assertIdsIncrease(balanced.ids);
    assert.deepEqual(balanced.ids.slice(N), resumed[0].ids);
    assert.deepEqual(resumed[0].ids, resumed[1].ids);
    for (const [i, s] of sockets.entries()) {
      assert.deepEqual(logs[3 + i], [...ticks(0, N), ["later", "after the move"]], s.log.label);
    }
    assert.deepEqual(logs[5], [], "another user's stream");
    // A node's death is not Redis's: the survivors kept their links all along.
    await assertLinksHeld([1, 2]);
  });
});
