// Interop: the unified API seen by real clients at once: socket.io-client 4.8 sockets and
// `eventsource` 4.x streams of the same users, against `examples/interop.rs`.
// Broadcasts, joins and user acks go through the `ctl:*` events of an anonymous control socket.
// Run through scripts/interop.sh, or by hand against a running example:
//   TIDINGS_URL=http://127.0.0.1:3000 node --test tests/interop/unified.test.mjs
//
// Negative checks use a sentinel: after the events that must not arrive, one that must is sent on
// the same path; connections are ordered, so once the sentinel is in, a leak would be in too.
// Every wait is bounded (at most 5 s); every client is closed in `finally`; ids are per test.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { EventSource } from "eventsource";
import { io } from "socket.io-client";
import {
  URL,
  TIMEOUT,
  T,
  QUIET_MS,
  SOCKET_OPTS,
  within,
  sleep,
  uid,
  ctl,
  closeControl,
  broadcast,
  join,
  expectNoPendingAcks,
  Log,
} from "./helpers.mjs";


// --- clients -------------------------------------------------------------------------------------
const EVENTS = ["u-sse", "u-socket", "u-both", "room-ev", "room-message", "leak", "ok", "sentinel", "after"];

/** A socket.io-client socket with identity `{user, tenant}`, logging the events above. */
async function sock(user, tenant, opts = {}) {
  const socket = io(URL, { ...SOCKET_OPTS, auth: { user, tenant }, ...opts });
  socket.log = new Log(`socket ${user}@${tenant}`);
  socket.connects = 0;
  socket.on("connect", () => {
    socket.connects++;
    socket.log.wake();
  });
  for (const e of EVENTS) socket.on(e, (data) => socket.log.push([e, data]));
  try {
    await socket.log.until(() => socket.connects > 0, "connect");
  } catch (e) {
    socket.close();
    throw e;
  }
  return socket;
}

/** An EventSource for `{user, tenant}`, logging the events above. */
async function stream(user, tenant) {
  const es = new EventSource(`${URL}/events?${new URLSearchParams({ user, tenant })}`);
  es.log = new Log(`sse ${user}@${tenant}`);
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
  for (const e of EVENTS) es.addEventListener(e, (m) => es.log.push([e, JSON.parse(m.data)]));
  try {
    await es.log.until(() => es.opens > 0, "open");
  } catch (e) {
    es.close();
    throw e;
  }
  return es;
}

function closeAll(...clients) {
  for (const c of clients) c?.close();
}

// --- control (see helpers.mjs) ----------------------------------------------------------------------
after(closeControl);

const user = (user, tenant) => ({ kind: "user", user, tenant });

describe("unified API with real clients", () => {
  test("to_user reaches exactly the transports addressed (sse / socket / both)", T, async () => {
    const alice = uid("alice");
    let es, s1, s2;
    try {
      es = await stream(alice, "acme");
      s1 = await sock(alice, "acme", { transports: ["websocket"] });
      s2 = await sock(alice, "acme", { transports: ["polling"] });
      await broadcast("sse", user(alice, "acme"), "u-sse", { t: "sse" });
      await broadcast("socket", user(alice, "acme"), "u-socket", { t: "socket" });
      await broadcast("both", user(alice, "acme"), "u-both", { t: "both" });
      await broadcast("both", user(alice, "acme"), "sentinel", null);
      assert.deepEqual(await es.log.settle(), [["u-sse", { t: "sse" }], ["u-both", { t: "both" }]]);
      for (const s of [s1, s2]) {
        assert.deepEqual(await s.log.settle(), [["u-socket", { t: "socket" }], ["u-both", { t: "both" }]]);
      }
    } finally {
      closeAll(es, s1, s2);
    }
  });

  test("rooms: members get to_room on SSE and Socket.IO, a non-member on neither", T, async () => {
    const tenant = "acme";
    const member = uid("member");
    const outsider = uid("outsider");
    const room = uid("room");
    const clients = [];
    try {
      const mEs = await stream(member, tenant);
      const mSock = await sock(member, tenant);
      const oEs = await stream(outsider, tenant);
      const oSock = await sock(outsider, tenant, { transports: ["websocket"] });
      clients.push(mEs, mSock, oEs, oSock);
      await join(member, tenant, room);
      for (const transport of ["sse", "socket", "both"]) {
        await broadcast(transport, { kind: "room", room }, "room-ev", transport);
      }
      for (const u of [member, outsider]) await broadcast("both", user(u, tenant), "sentinel", null);
      assert.deepEqual(await mEs.log.settle(), [["room-ev", "sse"], ["room-ev", "both"]]);
      assert.deepEqual(await mSock.log.settle(), [["room-ev", "socket"], ["room-ev", "both"]]);
      assert.deepEqual(await oEs.log.settle(), []);
      assert.deepEqual(await oSock.log.settle(), []);
    } finally {
      closeAll(...clients);
    }
  });

  test("one room model: join_room users and Socket::join sockets are one audience for every to_room", T, async () => {
    const tenant = "acme";
    const member = uid("member");
    const joiner = uid("joiner");
    const outsider = uid("outsider");
    const room = uid("room");
    const clients = [];
    try {
      const mEs = await stream(member, tenant);
      const mSock = await sock(member, tenant);
      // The joiner's socket joins by itself (Socket::join); its SSE stream is not in the room.
      const jEs = await stream(joiner, tenant);
      const jSock = await sock(joiner, tenant, { transports: ["websocket"] });
      const oEs = await stream(outsider, tenant);
      const oSock = await sock(outsider, tenant);
      clients.push(mEs, mSock, jEs, jSock, oEs, oSock);
      await join(member, tenant, room);
      assert.deepEqual(await jSock.timeout(TIMEOUT).emitWithAck("join-socket-room", room), true);
      // A socket's `to_room` (the outsider says it, and is not in the room) ...
      oSock.emit("to-socket-room", room, { from: "socket" });
      await mSock.log.until(() => mSock.log.items.length > 0, "the socket's room message");
      // ... and the unified API's reach the same audience.
      await broadcast("both", { kind: "room", room }, "room-ev", "unified");
      for (const u of [member, joiner, outsider]) await broadcast("both", user(u, tenant), "sentinel", null);
      const both = [["room-message", { from: "socket" }], ["room-ev", "unified"]];
      assert.deepEqual(await mEs.log.settle(), both);
      assert.deepEqual(await mSock.log.settle(), both);
      assert.deepEqual(await jSock.log.settle(), both);
      assert.deepEqual(await jEs.log.settle(), [], "a socket's join is not its user's");
      assert.deepEqual(await oEs.log.settle(), []);
      assert.deepEqual(await oSock.log.settle(), []);
    } finally {
      closeAll(...clients);
    }
  });

  test("the same user id in another tenant never receives acme's events", T, async () => {
    const name = uid("alice");
    const room = uid("room");
    const clients = [];
    try {
      const acmeEs = await stream(name, "acme");
      const acmeSock = await sock(name, "acme");
      const globexEs = await stream(name, "globex");
      const globexSock = await sock(name, "globex", { transports: ["websocket"] });
      clients.push(acmeEs, acmeSock, globexEs, globexSock);
      await join(name, "acme", room);
      await broadcast("both", user(name, "acme"), "ok", "user");
      await broadcast("both", { kind: "tenant", tenant: "acme" }, "ok", "tenant");
      await broadcast("both", { kind: "room", room }, "ok", "room");
      for (const t of ["acme", "globex"]) await broadcast("both", user(name, t), "sentinel", null);
      // Other tests' tenant broadcasts use their own event names; only "ok" is looked at.
      const oks = async (c) => (await c.log.settle()).filter(([e]) => e === "ok");
      for (const c of [acmeEs, acmeSock]) {
        assert.deepEqual(await oks(c), [["ok", "user"], ["ok", "tenant"], ["ok", "room"]]);
      }
      for (const c of [globexEs, globexSock]) assert.deepEqual(await oks(c), []);
      // And globex's own user event goes to globex only.
      await broadcast("both", user(name, "globex"), "after", "globex only");
      for (const t of ["acme", "globex"]) await broadcast("both", user(name, t), "sentinel", null);
      await globexEs.log.until(() => globexEs.log.items.some(([e]) => e === "after"), "globex event");
      await globexSock.log.until(() => globexSock.log.items.some(([e]) => e === "after"), "globex event");
      await acmeEs.log.until(() => acmeEs.log.items.filter(([e]) => e === "sentinel").length >= 2, "2nd sentinel");
      await acmeSock.log.until(() => acmeSock.log.items.filter(([e]) => e === "sentinel").length >= 2, "2nd sentinel");
      await sleep(QUIET_MS);
      for (const c of [acmeEs, acmeSock]) assert.ok(!c.log.items.some(([e]) => e === "after"), "globex event leaked to acme");
    } finally {
      closeAll(...clients);
    }
  });

  test("a room joined before a reconnect still delivers after it; ctl:rooms reads the join", T, async () => {
    const tenant = "acme";
    const name = uid("frank");
    const room = uid("room");
    const clients = [];
    try {
      const es = await stream(name, tenant);
      const socket = await sock(name, tenant);
      clients.push(es, socket);
      await join(name, tenant, room);
      // Read-your-writes: the join has returned, so it is visible.
      const rooms = await ctl("ctl:rooms", { user: name, tenant });
      assert.ok(Array.isArray(rooms) && rooms.includes(room), `ctl:rooms = ${JSON.stringify(rooms)}`);
      // Membership is per tenant, not per user id.
      assert.deepEqual(await ctl("ctl:rooms", { user: name, tenant: "globex" }), []);

      // Drop both transports from the server side and wait for both clients to come back.
      const dropped = await ctl("ctl:drop-sse", { user: name, tenant });
      assert.deepEqual(dropped, { dropped: 1 });
      const reason = new Promise((r) => socket.once("disconnect", r));
      socket.emit("drop-me");
      assert.equal(await within(TIMEOUT, reason, "socket disconnect"), "transport close");
      await es.log.until(() => es.opens >= 2, "SSE reconnect");
      await socket.log.until(() => socket.connects >= 2, "socket reconnect");

      await broadcast("both", { kind: "room", room }, "room-ev", "after reconnect");
      await broadcast("both", user(name, tenant), "sentinel", null);
      assert.deepEqual(await es.log.settle(), [["room-ev", "after reconnect"]]);
      assert.deepEqual(await socket.log.settle(), [["room-ev", "after reconnect"]]);

      // And a new connection of the same user, opened after the join, is a member too.
      const late = await sock(name, tenant, { transports: ["websocket"] });
      clients.push(late);
      await broadcast("both", { kind: "room", room }, "room-ev", "late");
      await broadcast("both", user(name, tenant), "sentinel", null);
      await late.log.until(() => late.log.items.some(([e]) => e === "sentinel"), "sentinel");
      assert.deepEqual(late.log.items.filter(([e]) => e !== "sentinel"), [["room-ev", "late"]]);

      // Leaving ends it on every transport.
      assert.deepEqual(await ctl("ctl:leave", { user: name, tenant, room }), { ok: true });
      const after = await ctl("ctl:rooms", { user: name, tenant });
      assert.ok(!after.includes(room), `still in the room after leave: ${JSON.stringify(after)}`);
      const before = clients.map((c) => c.log.items.length);
      await broadcast("both", { kind: "room", room }, "leak", "after leave");
      await broadcast("both", user(name, tenant), "sentinel", "final");
      for (const c of clients) {
        await c.log.until(() => c.log.items.some(([e, d]) => e === "sentinel" && d === "final"), "final sentinel");
      }
      await sleep(QUIET_MS);
      clients.forEach((c, i) => {
        assert.ok(!c.log.items.slice(before[i]).some(([e]) => e === "leak"), `${c.log.label} got a room event after leave`);
      });
    } finally {
      closeAll(...clients);
    }
  });

  test("ctl:ack-user: one answering, one silent, one leaving socket → ok, timeout, disconnected", T, async () => {
    const tenant = "acme";
    const name = uid("grace");
    const clients = [];
    try {
      const answering = await sock(name, tenant, { transports: ["websocket"] });
      const silent = await sock(name, tenant, { transports: ["polling"] });
      const leaving = await sock(name, tenant);
      // An SSE stream of the same user is not a Socket.IO recipient: it must not add an outcome.
      const es = await stream(name, tenant);
      clients.push(answering, silent, leaving, es);
      const got = { answering: [], silent: [], leaving: [] };
      answering.on("confirm", (data, cb) => {
        got.answering.push(data);
        cb({ confirmed: true }, "second");
      });
      silent.on("confirm", (data) => got.silent.push(data));
      leaving.on("confirm", (data) => {
        got.leaving.push(data);
        leaving.disconnect();
      });
      const start = Date.now();
      const res = await ctl("ctl:ack-user", { user: name, tenant, event: "confirm", data: { order: 7 }, timeoutMs: 1500 });
      const elapsed = Date.now() - start;
      assert.ok(res && Array.isArray(res.outcomes), `ctl:ack-user = ${JSON.stringify(res)}`);
      const kinds = res.outcomes.map((o) => o.kind).sort();
      assert.deepEqual(kinds, ["disconnected", "ok", "timeout"]);
      const ok = res.outcomes.find((o) => o.kind === "ok");
      assert.deepEqual(ok.args, [{ confirmed: true }, "second"]);
      assert.ok(elapsed >= 1400, `answered after ${elapsed} ms, before the 1500 ms timeout`);
      assert.deepEqual(got, { answering: [{ order: 7 }], silent: [{ order: 7 }], leaving: [{ order: 7 }] });
      assert.equal(es.log.items.length, 0);

      // A user with no Socket.IO connection (an SSE stream only, or nothing at all).
      const sseOnly = uid("sse-only");
      const es2 = await stream(sseOnly, tenant);
      clients.push(es2);
      for (const u of [sseOnly, uid("nobody")]) {
        const none = await ctl("ctl:ack-user", { user: u, tenant, event: "confirm", data: 1, timeoutMs: 1000 });
        assert.deepEqual(none, { noRecipients: true });
      }
      // The same user in another tenant has no sockets either.
      const other = await ctl("ctl:ack-user", { user: name, tenant: "globex", event: "confirm", data: 1, timeoutMs: 1000 });
      assert.deepEqual(other, { noRecipients: true });
      await expectNoPendingAcks();
    } finally {
      closeAll(...clients);
    }
  });
});
