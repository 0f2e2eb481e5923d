// Interop: Socket.IO connection state recovery with the official socket.io-client 4.8, against the
// recovery server of `examples/interop.rs` (the same handlers, recovery on, a short window and a
// small history; scripts/interop.sh starts it on a port of its own and passes its address as
// TIDINGS_RECOVERY_URL). Every scenario runs over websocket only, polling only, and polling then
// the upgrade to websocket. By hand, against `RECOVERY_PORT=3001 cargo run --example interop`:
//   TIDINGS_RECOVERY_URL=http://127.0.0.1:3001 node --test tests/interop/recovery.test.mjs
//
// A connection is lost the way a network failure loses it, with no Socket.IO disconnect: a
// websocket's TCP connection is destroyed (no close frame), a polling session is closed by its
// engine. socket.io-client's manager then reconnects by itself and presents the socket's `pid`
// and last offset in its CONNECT. To send events *during* the gap, a test holds that CONNECT: the
// socket's `auth` is a function (socket.io-client calls it for every CONNECT) that answers only
// once the test releases it; the transport reconnects meanwhile. (Killing and the pid checks use
// the client's internals: `engine.transport.ws`, and `socket._pid` / `socket._lastOffset`, what
// socket.io-client presents when it reconnects.)
//
// With recovery on, every event without ack and not volatile carries its offset ("<epoch>:<seq>")
// as one more, last argument: the logs keep every argument, and `stamped` checks the offsets.
// Negative checks use a sentinel: after the events that must not arrive, one that must is sent on
// the same path; connections are ordered, so once the sentinel is in, a leak would be in too.
// Every wait is bounded; every client is closed in `finally`; ids are per test.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import {
  TIMEOUT,
  T,
  QUIET_MS,
  SOCKET_OPTS,
  within,
  sleep,
  uid,
  awaitConnect,
  controlSocket,
  Log,
  once,
  settled,
} from "./helpers.mjs";

const RECOVERY_URL = process.env.TIDINGS_RECOVERY_URL ?? "http://127.0.0.1:3001";
const TENANT = "acme";

const MODES = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  "polling→websocket": {},
};

// --- control ---------------------------------------------------------------------------------------
const control = controlSocket(RECOVERY_URL);
after(() => control.close());
const ctl = control.ctl;

/** A Socket.IO broadcast through the unified API; must succeed. */
async function broadcast(target, event, data, { volatile = false } = {}) {
  const r = await ctl("ctl:broadcast", { transport: "socket", target, event, data, volatile });
  assert.deepEqual(r, { ok: true }, `broadcast ${event} to ${JSON.stringify(target)}`);
}
const toUser = (user, event, data, tenant = TENANT, opts) => broadcast({ kind: "user", user, tenant }, event, data, opts);
const toRoom = (room, event, data) => broadcast({ kind: "room", room }, event, data);
const toAll = (event, data, opts) => broadcast({ kind: "all" }, event, data, opts);
const VOLATILE = { volatile: true };

/** The user `user` of TENANT joins `room` (`join_room`); must succeed. */
async function join(user, room) {
  assert.deepEqual(await ctl("ctl:join", { user, tenant: TENANT, room }), { ok: true });
}

/** What the server saw of socket `sid`, once `pred` holds of it (polled, bounded). */
async function serverLog(sid, pred, what) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const seen = await ctl("ctl:socket-log", { sid });
    if (pred(seen)) return seen;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what} of ${sid}: ${JSON.stringify(seen)}`);
    await sleep(20);
  }
}

/** The server's `Socket::recovered()` of each of socket `sid`'s first `n` connects. */
async function connectsOf(sid, n = 1) {
  return (await serverLog(sid, (l) => l.connects.length >= n, `connect #${n}`)).connects;
}

/** This server's `{recoveryWindowMs, historyEvents}`. */
let config;
before(async () => {
  config = await ctl("ctl:config", {});
  assert.equal(typeof config?.recoveryWindowMs, "number", `no recovery on ${RECOVERY_URL}: ${JSON.stringify(config)}`);
});

// --- clients ---------------------------------------------------------------------------------------


/**
 * A socket.io-client socket on the recovery server, authenticated as `{user, tenant}` (`extra` is
 * added to each of its CONNECT payloads), logging what it receives. `socket.hold()` holds its next
 * CONNECT until the function it returns is called; `socket.reconnects` counts the manager's
 * automatic reconnects.
 */
async function client(user, tenant, opts = {}, extra = {}) {
  let held = null;
  const socket = io(RECOVERY_URL, {
    ...SOCKET_OPTS,
    ...opts,
    auth: (send) => {
      const data = { user, tenant, ...extra };
      if (held) held.then(() => send(data));
      else send(data);
    },
  });
  socket.hold = () => {
    let release;
    held = new Promise((r) => (release = r));
    return () => {
      held = null;
      release();
    };
  };
  socket.log = new Log(`${user}@${tenant}`);
  socket.reconnects = 0;
  socket.io.on("reconnect", () => socket.reconnects++);
  socket.onAny((event, ...args) => socket.log.push([event, ...args]));
  try {
    await awaitConnect(socket);
  } catch (e) {
    socket.close();
    throw e;
  }
  return socket;
}


/**
 * Loses the connection under `socket` (see the top of the file) and waits until the server has
 * seen the socket go, for a recoverable reason.
 */
async function kill(socket) {
  const sid = socket.id;
  const engine = socket.io.engine;
  const gone = once(socket, "disconnect");
  if (engine.transport.name === "websocket") engine.transport.ws.terminate();
  else engine.close();
  await gone;
  const seen = await serverLog(sid, (l) => l.disconnects.length > 0, "the server-side disconnect");
  assert.deepEqual(seen.disconnects, ["transport close"]);
}

/** Releases a held CONNECT and waits for the socket to be connected again. */
async function reconnect(socket, release) {
  const back = once(socket, "connect");
  release();
  await back;
}

/** Receives one event, so the client has an offset to present. */
async function receiveOne(socket, user) {
  socket.log.clear();
  await toUser(user, "before", 0);
  await socket.log.until(() => socket.log.items.length === 1, "'before'");
}

/** Sends the sentinel `tag` to this very socket only (its own emit, after everything before). */
async function sentinelTo(socket, tag) {
  const r = await socket.timeout(TIMEOUT).emitWithAck("emit-me", { event: "sentinel", data: tag });
  assert.equal(r, true);
}

const OFFSET = /^(\d+):(\d+)$/;

/**
 * Checks that every item is [event, data, offset] with offsets of one epoch, strictly increasing
 * (so: in order, each once); returns the [event, data] pairs.
 */
function stamped(items) {
  let last = null;
  return items.map((item) => {
    assert.equal(item.length, 3, `not [event, data, offset]: ${JSON.stringify(item)}`);
    const [event, data, offset] = item;
    const m = OFFSET.exec(offset);
    assert.ok(m, `not an offset: ${JSON.stringify(offset)} in ${JSON.stringify(item)}`);
    const now = { epoch: m[1], seq: BigInt(m[2]) };
    if (last) {
      assert.equal(now.epoch, last.epoch, `epoch changed: ${JSON.stringify(items)}`);
      assert.ok(now.seq > last.seq, `offsets out of order or repeated: ${JSON.stringify(items)}`);
    }
    last = now;
    return [event, data];
  });
}

// --- scenarios -------------------------------------------------------------------------------------
for (const [mode, transportOpts] of Object.entries(MODES)) {
  describe(`connection state recovery, socket.io-client (${mode})`, () => {
    test("a lost transport is recovered: same id, rooms kept, every missed event once, in order", T, async () => {
      const alice = uid("alice");
      const userRoom = uid("user-room");
      const socketRoom = uid("socket-room");
      const socket = await client(alice, TENANT, transportOpts);
      try {
        await settled(socket, mode);
        assert.equal(socket.recovered, false);
        const { id, _pid: pid } = socket;
        assert.equal(typeof pid, "string", "the CONNECT reply carries a pid");
        await join(alice, userRoom);
        assert.equal(await socket.timeout(TIMEOUT).emitWithAck("join-socket-room", socketRoom), true);
        await receiveOne(socket, alice);

        const release = socket.hold();
        await kill(socket);
        // The gap: what is addressed to alice's socket, between what is not.
        await toUser(alice, "missed", 1);
        await toUser(uid("bob"), "leak", "another user");
        await toRoom(userRoom, "missed", 2);
        await toRoom(uid("other-room"), "leak", "another room");
        await toRoom(socketRoom, "missed", 3);
        await control.emit("to-socket-room", socketRoom, 4); // Socket::to_room: "room-message"
        await toAll("missed", 5);
        await toUser(alice, "leak", "the same user id in another tenant", "globex");
        await toUser(alice, "missed", 6);
        await reconnect(socket, release);

        assert.equal(socket.recovered, true);
        assert.equal(socket.id, id);
        assert.equal(socket._pid, pid);
        assert.equal(socket.reconnects, 1, "the manager reconnected by itself");
        assert.deepEqual(await connectsOf(id, 2), [false, true]);
        await toUser(alice, "sentinel", null);
        assert.deepEqual(stamped(await socket.log.settle()), [
          ["before", 0],
          ["missed", 1],
          ["missed", 2],
          ["missed", 3],
          ["room-message", 4],
          ["missed", 5],
          ["missed", 6],
        ]);

        // Its rooms came back with it: the socket's own room delivers live again.
        socket.log.clear();
        await toRoom(socketRoom, "live", "socket room");
        await toRoom(userRoom, "live", "user room");
        await toUser(alice, "sentinel", "live");
        assert.deepEqual(stamped(await socket.log.settle("live")), [
          ["live", "socket room"],
          ["live", "user room"],
        ]);
      } finally {
        socket.close();
      }
    });

    test("volatile events and events with an ack carry no offset; volatile ones are not replayed", T, async () => {
      const alice = uid("alice");
      const socket = await client(alice, TENANT, transportOpts);
      try {
        await settled(socket, mode);
        // Live: the volatile ones arrive, with their data only. (socket.io-client takes a string
        // last argument for an offset, so the data here are objects.)
        await toUser(alice, "vol", { v: 1 }, TENANT, VOLATILE);
        const emitMe = (req) => socket.timeout(TIMEOUT).emitWithAck("emit-me", req);
        assert.equal(await emitMe({ event: "vol", data: { v: 2 }, volatile: true }), true);
        assert.equal(await emitMe({ event: "plain", data: { p: 3 } }), true);
        await toUser(alice, "plain", { p: 4 });
        await toUser(alice, "sentinel", null);
        const live = await socket.log.settle();
        assert.deepEqual(
          live.filter(([e]) => e === "vol"),
          [
            ["vol", { v: 1 }],
            ["vol", { v: 2 }],
          ],
        );
        assert.deepEqual(stamped(live.filter(([e]) => e !== "vol")), [
          ["plain", { p: 3 }],
          ["plain", { p: 4 }],
        ]);

        // An event with an ack: its data and the callback, nothing else.
        const question = once(socket, "question");
        socket.emit("ask", { event: "question", data: { q: 5 }, timeoutMs: 3000 });
        const args = await question;
        assert.equal(args.length, 2, `question args: ${JSON.stringify(args)}`);
        assert.deepEqual(args[0], { q: 5 });
        assert.equal(typeof args[1], "function");
        args[1]("answer");
        await socket.log.until(() => socket.log.items.some(([e]) => e === "ask-result"), "'ask-result'");
        const result = socket.log.items.find(([e]) => e === "ask-result");
        assert.deepEqual(stamped([result]), [["ask-result", { kind: "ok", args: ["answer"] }]]);

        // The gap: only the plain event comes back.
        await receiveOne(socket, alice);
        const release = socket.hold();
        await kill(socket);
        await toUser(alice, "vol", { v: 6 }, TENANT, VOLATILE);
        await toAll("vol", { v: 7 }, VOLATILE);
        await toUser(alice, "missed", { m: 8 });
        await toUser(alice, "vol", { v: 9 }, TENANT, VOLATILE);
        await reconnect(socket, release);
        assert.equal(socket.recovered, true);
        await toUser(alice, "sentinel", null);
        assert.deepEqual(stamped(await socket.log.settle()), [
          ["before", 0],
          ["missed", { m: 8 }],
        ]);
      } finally {
        socket.close();
      }
    });

    test("back after max_disconnection_duration: a fresh session, nothing replayed", T, async () => {
      const alice = uid("alice");
      const socketRoom = uid("socket-room");
      const socket = await client(alice, TENANT, { ...transportOpts, reconnection: false });
      try {
        await settled(socket, mode);
        const { id, _pid: pid } = socket;
        assert.equal(await socket.timeout(TIMEOUT).emitWithAck("join-socket-room", socketRoom), true);
        await receiveOne(socket, alice);
        await kill(socket);
        await toUser(alice, "missed", 1);
        await toRoom(socketRoom, "missed", 2);
        await sleep(config.recoveryWindowMs + 500);

        socket.log.clear();
        const back = once(socket, "connect");
        socket.connect(); // presents the old pid and offset
        await back;
        assert.equal(socket.recovered, false);
        assert.notEqual(socket.id, id);
        assert.notEqual(socket._pid, pid);
        assert.deepEqual(await connectsOf(socket.id), [false]);
        assert.deepEqual(await connectsOf(id), [false], "the old socket never came back");
        // Nothing of the gap, and the old socket's room is not the new socket's.
        await toRoom(socketRoom, "leak", "the old socket's room");
        await toUser(alice, "sentinel", null);
        assert.deepEqual(stamped(await socket.log.settle()), []);
      } finally {
        socket.close();
      }
    });

    test("an offset trimmed from the history: a fresh session, nothing replayed", T, async () => {
      const alice = uid("alice");
      const bob = uid("bob");
      const socket = await client(alice, TENANT, transportOpts);
      try {
        await settled(socket, mode);
        const { id } = socket;
        await receiveOne(socket, alice);
        const release = socket.hold();
        await kill(socket);
        await toUser(alice, "missed", 1);
        // More events than the history holds push alice's out (recovery is all or nothing).
        for (let i = 0; i < config.historyEvents + 8; i++) await toUser(bob, "filler", i);
        assert.equal((await ctl("ctl:stats", {})).sseHistory, config.historyEvents, "the history is full");

        socket.log.clear();
        await reconnect(socket, release);
        assert.equal(socket.recovered, false);
        assert.notEqual(socket.id, id);
        assert.deepEqual(await connectsOf(socket.id), [false]);
        await toUser(alice, "sentinel", null);
        assert.deepEqual(stamped(await socket.log.settle()), []);
      } finally {
        socket.close();
      }
    });

    test("a forged pid gets a fresh session and nothing of the parked one, which still recovers", T, async () => {
      const alice = uid("alice");
      const socket = await client(alice, TENANT, transportOpts);
      let forged;
      try {
        await settled(socket, mode);
        const { id } = socket;
        await receiveOne(socket, alice);
        const release = socket.hold();
        await kill(socket);
        await toUser(alice, "missed", 1);

        // Another client of alice's presents a pid the server never gave out, with alice's offset.
        forged = await client(alice, TENANT, transportOpts, { pid: "forged", offset: socket._lastOffset });
        assert.equal(forged.recovered, false);
        assert.notEqual(forged.id, id);
        assert.equal(typeof forged._pid, "string");
        assert.notEqual(forged._pid, "forged");
        assert.deepEqual(await connectsOf(forged.id), [false]);
        await sentinelTo(forged, "forged");
        assert.deepEqual(stamped(await forged.log.settle("forged")), []);

        await reconnect(socket, release);
        assert.equal(socket.recovered, true);
        assert.equal(socket.id, id);
        await toUser(alice, "missed", 2);
        await sentinelTo(socket, "end");
        assert.deepEqual(stamped(await socket.log.settle("end")), [
          ["before", 0],
          ["missed", 1],
          ["missed", 2],
        ]);
      } finally {
        socket.close();
        forged?.close();
      }
    });

    test("a valid pid presented by another identity: a fresh session, none of the owner's events", T, async () => {
      const alice = uid("alice");
      const socket = await client(alice, TENANT, transportOpts);
      const thieves = [];
      try {
        await settled(socket, mode);
        await receiveOne(socket, alice);
        const { id, _pid: pid, _lastOffset: offset } = socket;
        const release = socket.hold();
        await kill(socket);
        await toUser(alice, "missed", 1);

        // Alice's real pid and offset, from another user, then from alice's user id in another
        // tenant: the authentication hook says someone else, so neither gets her session.
        const others = [
          [uid("mallory"), TENANT],
          [alice, "globex"],
        ];
        for (const [n, [user, tenant]] of others.entries()) {
          const thief = await client(user, tenant, transportOpts, { pid, offset });
          thieves.push(thief);
          assert.notEqual(thief.id, id);
          assert.equal(typeof thief._pid, "string");
          assert.notEqual(thief._pid, pid);
          assert.equal(thief.recovered, false);
          assert.deepEqual(await connectsOf(thief.id), [false]);
          await toUser(alice, "missed", 2 + n); // alice's live events are not the thief's either
          await sentinelTo(thief, "thief");
          assert.deepEqual(stamped(await thief.log.settle("thief")), [], `${user}@${tenant}`);
        }

        // Alice herself still recovers, with everything.
        await reconnect(socket, release);
        assert.equal(socket.recovered, true);
        assert.equal(socket.id, id);
        assert.equal(socket._pid, pid);
        await sentinelTo(socket, "end");
        assert.deepEqual(stamped(await socket.log.settle("end")), [
          ["before", 0],
          ["missed", 1],
          ["missed", 2],
          ["missed", 3],
        ]);
      } finally {
        socket.close();
        for (const t of thieves) t.close();
      }
    });
  });
}
