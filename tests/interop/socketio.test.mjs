// Interop: the official socket.io-client 4.8 against `examples/interop.rs`.
// Every scenario runs over websocket only, polling only, and the default transport (polling, then
// the upgrade to websocket). Run through scripts/interop.sh, or by hand against a running example:
//   TIDINGS_URL=http://127.0.0.1:3000 node --test tests/interop/socketio.test.mjs
//
// Every wait is bounded (TIMEOUT, at most 5 s) so a hung server fails fast; every client is closed
// in `finally`; every test uses its own user ids so tests cannot see each other's events.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
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
  waitUntil,
  awaitConnect,
  closeControl,
  broadcast,
  expectNoPendingAcks,
  once,
  settled,
} from "./helpers.mjs";

const MODES = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  "polling→websocket": {},
};


/** Every occurrence of one event on a socket, in arrival order; attach before it can arrive. */
class Inbox {
  constructor(socket, event) {
    this.event = event;
    this.items = [];
    this.waiters = [];
    socket.on(event, (...args) => {
      this.items.push(args);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Waits until `n` occurrences have arrived; returns them all. */
  async count(n, ms = TIMEOUT) {
    await waitUntil(
      () => this.items.length >= n,
      this.waiters,
      `'${this.event}' #${n}`,
      ms,
      () => `'${this.event}': ${this.items.length} of ${n} within ${ms} ms: ${JSON.stringify(this.items)}`,
    );
    return this.items;
  }

  /** The args of occurrence number `i` (0-based), waiting for it. */
  async nth(i, ms = TIMEOUT) {
    return (await this.count(i + 1, ms))[i];
  }
}

/** Opens a socket and waits for `connect`; rejects with the `connect_error` message otherwise. */
async function connect(opts = {}, nsp = "/") {
  const socket = io(URL + nsp, { ...SOCKET_OPTS, ...opts });
  try {
    await awaitConnect(socket);
  } catch (e) {
    socket.close();
    throw e;
  }
  return socket;
}


/** The error of a connection attempt that must fail. */
async function connectError(opts, nsp = "/") {
  const socket = io(URL + nsp, { forceNew: true, reconnection: false, timeout: TIMEOUT, ...opts });
  try {
    let connected = false;
    socket.on("connect", () => (connected = true));
    const [err] = await once(socket, "connect_error");
    assert.equal(connected, false);
    assert.equal(socket.connected, false);
    return err;
  } finally {
    socket.close();
  }
}

// The anonymous control socket of the `ctl:*` events (see helpers.mjs).
after(closeControl);

const toUser = (user, tenant, event, data, transport = "socket") =>
  broadcast(transport, { kind: "user", user, tenant }, event, data);

/** Normalises what socket.io-client hands out for binary (Buffer, ArrayBuffer) to Buffer, deeply. */
function norm(v) {
  if (v instanceof ArrayBuffer) return Buffer.from(new Uint8Array(v));
  if (Buffer.isBuffer(v)) return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

const ALL_BYTES = Buffer.from(Uint8Array.from({ length: 256 }, (_, i) => i));
const UNICODE = "héllo wörld ✓ 🚀 — 日本語";

for (const [mode, transportOpts] of Object.entries(MODES)) {
  describe(`socket.io-client (${mode})`, () => {
    test("connects with an auth payload and the identity is honoured", T, async () => {
      const user = uid("alice");
      const socket = await connect({ ...transportOpts, auth: { user, tenant: "acme" } });
      try {
        const news = new Inbox(socket, "news");
        await settled(socket, mode);
        assert.equal(typeof socket.id, "string");
        await toUser(user, "acme", "news", { n: 1, text: UNICODE });
        assert.deepEqual(await news.nth(0), [{ n: 1, text: UNICODE }]);
        // The same user id in another tenant is somebody else.
        await toUser(user, "globex", "news", { n: 2 });
        await toUser(user, "acme", "news", { n: 3 });
        await news.count(2);
        await sleep(QUIET_MS);
        assert.deepEqual(news.items, [[{ n: 1, text: UNICODE }], [{ n: 3 }]]);
      } finally {
        socket.close();
      }
    });

    test("a rejected auth gets connect_error 'invalid token' with its data", T, async () => {
      const err = await connectError({ ...transportOpts, auth: { user: uid("mallory"), token: "bad" } });
      assert.equal(err.message, "invalid token");
      assert.deepEqual(err.data, { reason: "bad" });
    });

    test("namespace /custom connects and greets; an unknown namespace is refused", T, async () => {
      const socket = io(`${URL}/custom`, { forceNew: true, timeout: TIMEOUT, ...transportOpts });
      try {
        const hello = new Inbox(socket, "hello-custom");
        await once(socket, "connect");
        assert.deepEqual(await hello.nth(0), ["/custom"]);
      } finally {
        socket.close();
      }
      const err = await connectError(transportOpts, "/no-such-namespace");
      assert.equal(err.message, "Invalid namespace");
    });

    test("emit and receive (echo), several arguments, in order", T, async () => {
      const socket = await connect(transportOpts);
      try {
        const echo = new Inbox(socket, "echo");
        socket.emit("echo", "hello");
        socket.emit("echo", UNICODE, 42, null, true, { a: [1, { b: "c" }] });
        for (let i = 0; i < 20; i++) socket.emit("echo", i);
        await settled(socket, mode);
        socket.emit("echo", "after-upgrade");
        const got = await echo.count(23);
        assert.deepEqual(got[0], ["hello"]);
        assert.deepEqual(got[1], [UNICODE, 42, null, true, { a: [1, { b: "c" }] }]);
        assert.deepEqual(got.slice(2, 22), Array.from({ length: 20 }, (_, i) => [i]));
        assert.deepEqual(got[22], ["after-upgrade"]);
      } finally {
        socket.close();
      }
    });

    test("client→server ack (echo-ack via emitWithAck and a multi-argument callback)", T, async () => {
      const socket = await connect(transportOpts);
      try {
        await settled(socket, mode);
        assert.deepEqual(await socket.timeout(TIMEOUT).emitWithAck("echo-ack", { x: UNICODE }), { x: UNICODE });
        const args = await within(
          TIMEOUT,
          new Promise((resolve, reject) =>
            socket.timeout(TIMEOUT).emit("echo-ack", "a", 2, [3], (err, ...rest) => (err ? reject(err) : resolve(rest))),
          ),
          "echo-ack reply",
        );
        assert.deepEqual(args, ["a", 2, [3]]);
        // Many acks in flight at once each get their own answer.
        const replies = await Promise.all(
          Array.from({ length: 30 }, (_, i) => socket.timeout(TIMEOUT).emitWithAck("echo-ack", i)),
        );
        assert.deepEqual(replies, Array.from({ length: 30 }, (_, i) => i));
      } finally {
        socket.close();
      }
    });

    test("server→client ack answered: ask-result ok with the client's arguments", T, async () => {
      const socket = await connect(transportOpts);
      try {
        await settled(socket, mode);
        const results = new Inbox(socket, "ask-result");
        const seen = [];
        socket.on("question", (data, cb) => {
          seen.push(data);
          cb("yes", data, 7);
        });
        socket.emit("ask", { event: "question", data: { q: UNICODE }, timeoutMs: 3000 });
        assert.deepEqual(await results.nth(0), [{ kind: "ok", args: ["yes", { q: UNICODE }, 7] }]);
        assert.deepEqual(seen, [{ q: UNICODE }]);
      } finally {
        socket.close();
      }
    });

    test("server→client ack not answered: ask-result timeout", T, async () => {
      const socket = await connect(transportOpts);
      try {
        await settled(socket, mode);
        const results = new Inbox(socket, "ask-result");
        let asked = 0;
        socket.on("silent-question", () => asked++); // takes the ack callback and never calls it
        const start = Date.now();
        socket.emit("ask", { event: "silent-question", data: 1, timeoutMs: 300 });
        assert.deepEqual(await results.nth(0), [{ kind: "timeout" }]);
        assert.equal(asked, 1);
        const elapsed = Date.now() - start;
        assert.ok(elapsed >= 250, `timeout reported after only ${elapsed} ms (asked for 300)`);
      } finally {
        socket.close();
      }
    });

    test("server→client ack, client disconnects before answering: the pending ack is released", T, async () => {
      // ask-result would go to the disconnected socket itself, so the outcome is observed through
      // the ack table: it must be empty long before the 4 s timeout would have fired.
      const socket = await connect(transportOpts);
      try {
        await settled(socket, mode);
        await expectNoPendingAcks();
        const asked = once(socket, "leaving-question");
        socket.emit("ask", { event: "leaving-question", data: null, timeoutMs: 4000 });
        await asked;
        const start = Date.now();
        socket.disconnect();
        await expectNoPendingAcks(2000);
        assert.ok(Date.now() - start < 2500, "ack released by the timeout, not by the disconnect");
      } finally {
        socket.close();
      }
    });

    test("binary attachments both ways (top level, nested, several, empty)", T, async () => {
      const socket = await connect(transportOpts);
      try {
        await settled(socket, mode);
        const echo = new Inbox(socket, "echo");
        const small = Buffer.from([1, 2, 3]);
        const nested = { name: "file", parts: [ALL_BYTES, { inner: Buffer.from("çà", "utf8") }], n: 5 };
        socket.emit("echo", small, "text", nested, Buffer.alloc(0));
        const [got] = [await echo.nth(0)];
        assert.deepEqual(norm(got), [small, "text", nested, Buffer.alloc(0)]);
        // Binary in an ack, both directions.
        const big = Buffer.from(Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7) & 0xff));
        const reply = await socket.timeout(TIMEOUT).emitWithAck("echo-ack", { big, list: [small, small] });
        assert.deepEqual(norm(reply), { big, list: [small, small] });
        // Ten attachments (the limit) still go through.
        const ten = Array.from({ length: 10 }, (_, i) => Buffer.from([i]));
        socket.emit("echo", ten);
        assert.deepEqual(norm(await echo.nth(1)), [ten]);
      } finally {
        socket.close();
      }
    });

    test("server-side disconnect: 'io server disconnect' and no automatic reconnect", T, async () => {
      const socket = await connect(transportOpts);
      try {
        await settled(socket, mode);
        let reconnects = 0;
        socket.on("connect", () => reconnects++);
        socket.io.on("reconnect_attempt", () => reconnects++);
        const gone = once(socket, "disconnect");
        socket.emit("disconnect-me");
        const [reason] = await gone;
        assert.equal(reason, "io server disconnect");
        await sleep(800); // several reconnectionDelays
        assert.equal(reconnects, 0);
        assert.equal(socket.connected, false);
      } finally {
        socket.close();
      }
    });

    test("server drops the transport: 'transport close', automatic reconnect, identity kept", T, async () => {
      const user = uid("bob");
      const socket = await connect({ ...transportOpts, auth: { user, tenant: "acme" } });
      try {
        await settled(socket, mode);
        const news = new Inbox(socket, "news");
        const firstId = socket.id;
        const gone = once(socket, "disconnect");
        const back = new Promise((r) => socket.once("disconnect", () => socket.once("connect", r)));
        socket.emit("drop-me");
        const [reason] = await gone;
        assert.equal(reason, "transport close");
        await within(TIMEOUT, back, "reconnect");
        assert.equal(socket.connected, true);
        assert.notEqual(socket.id, firstId);
        await toUser(user, "acme", "news", "after-reconnect");
        assert.deepEqual(await news.nth(0), ["after-reconnect"]);
      } finally {
        socket.close();
      }
    });

    test("per-socket rooms: to-socket-room reaches members only", T, async () => {
      const room = uid("socket-room");
      const member = await connect(transportOpts);
      const outsider = await connect(transportOpts);
      const sender = await connect({ transports: ["websocket"] });
      try {
        await settled(member, mode);
        await settled(outsider, mode);
        const inMember = new Inbox(member, "room-message");
        const inOutsider = new Inbox(outsider, "room-message");
        assert.deepEqual(await member.timeout(TIMEOUT).emitWithAck("join-socket-room", room), true);
        sender.emit("to-socket-room", room, { hello: "room" });
        sender.emit("to-socket-room", uid("other-room"), { hello: "nobody" });
        assert.deepEqual(await inMember.nth(0), [{ hello: "room" }]);
        // The outsider joins another room afterwards and gets a sentinel there: anything sent to
        // it before would have arrived first on its (ordered) connection.
        const sentinel = uid("sentinel-room");
        assert.deepEqual(await outsider.timeout(TIMEOUT).emitWithAck("join-socket-room", sentinel), true);
        sender.emit("to-socket-room", sentinel, "sentinel");
        await inOutsider.nth(0);
        await sleep(QUIET_MS);
        assert.deepEqual(inOutsider.items, [["sentinel"]]);
        assert.deepEqual(inMember.items, [[{ hello: "room" }]]);
      } finally {
        member.close();
        outsider.close();
        sender.close();
      }
    });

    test("after the ack tests the server's ack table is empty", T, async () => {
      await expectNoPendingAcks();
    });
  });
}
