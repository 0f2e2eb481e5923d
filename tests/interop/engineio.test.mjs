// Interop: the official engine.io-client 6.x against the raw Engine.IO v4 echo endpoint of
// `examples/conformance.rs`. Run through scripts/interop.sh, or by hand:
//   TIDINGS_URL=http://127.0.0.1:3000 node --test tests/interop/
//
// Every wait is bounded (TIMEOUT) so a hung server fails fast instead of stalling CI, and every
// client is closed in `finally` so a failing test cannot keep the process alive.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { Socket, Fetch, NodeXHR, NodeWebSocket } from "engine.io-client";
// T (the per-test guard) is generous enough for the heartbeat test (~3.5 ping intervals).
import { URL, TIMEOUT, T, within } from "./helpers.mjs";

const PATH = "/engine.io/";

/** Resolves on the first `event` from an engine.io-client emitter; rejects if it closes first. */
function once(socket, event, ms = TIMEOUT) {
  return within(
    ms,
    new Promise((resolve, reject) => {
      const onEvent = (...args) => {
        socket.off("close", onClose);
        resolve(args);
      };
      const onClose = (reason, description) => {
        socket.off(event, onEvent);
        reject(new Error(`closed (${reason}) while waiting for '${event}': ${describeErr(description)}`));
      };
      socket.once(event, onEvent);
      if (event !== "close") socket.once("close", onClose);
    }),
    `'${event}'`,
  );
}

function describeErr(d) {
  if (!d) return "";
  if (d instanceof Error) return d.message;
  if (d.description instanceof Error) return d.description.message;
  return String(d.message ?? d.description ?? d);
}

/** Queue of received messages, attached before `open` so nothing is missed. */
class Inbox {
  constructor(socket) {
    this.items = [];
    this.waiters = [];
    this.closedWith = null;
    socket.on("message", (data) => {
      const w = this.waiters.shift();
      if (w) w.resolve(data);
      else this.items.push(data);
    });
    socket.on("close", (reason, description) => {
      this.closedWith = `closed (${reason}) ${describeErr(description)}`;
      for (const w of this.waiters.splice(0)) w.reject(new Error(this.closedWith));
    });
  }

  next(ms = TIMEOUT) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.closedWith) return Promise.reject(new Error(this.closedWith));
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (d) => (clearTimeout(timer), resolve(d)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no message within ${ms} ms`));
      }, ms);
      this.waiters.push(w);
    });
  }
}

/** Opens a client and waits for `open`. Returns { socket, inbox, handshake }. */
async function connect(opts = {}) {
  const socket = new Socket(URL, { path: PATH, ...opts });
  const inbox = new Inbox(socket);
  let handshake = null;
  socket.once("handshake", (h) => (handshake = h));
  try {
    await once(socket, "open");
  } catch (e) {
    socket.close();
    throw e;
  }
  return { socket, inbox, handshake };
}

/** Bytes of a binary message, whatever container the transport delivered (Buffer/ArrayBuffer). */
function bytes(data) {
  assert.notEqual(typeof data, "string", "binary message came back as text");
  return Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
}

/** Every byte value, so any UTF-8 or base64 mangling shows. */
const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
/** Multi-byte UTF-8 catches byte/char length confusion (e.g. polling Content-Length). */
const UNICODE_TEXT = "héllo wörld ✓ 🚀 — 日本語";

async function echoText(socket, inbox, text) {
  socket.send(text);
  const reply = await inbox.next();
  assert.equal(typeof reply, "string", "text message came back as binary");
  assert.equal(reply.length, text.length);
  assert.ok(reply === text, "text echo differs");
}

async function echoBinary(socket, inbox, input) {
  socket.send(input);
  const reply = await inbox.next();
  assert.deepEqual(bytes(reply), Buffer.from(input));
}

async function echoBasics(socket, inbox) {
  await echoText(socket, inbox, "hello");
  await echoText(socket, inbox, UNICODE_TEXT);
  await echoBinary(socket, inbox, Uint8Array.from([1, 2, 3, 4]));
  await echoBinary(socket, inbox, ALL_BYTES);
  // Several messages sent back to back (polling batches them into one payload) arrive in order.
  const sent = Array.from({ length: 20 }, (_, i) => (i % 2 ? `m${i}` : Uint8Array.from([i, 255 - i])));
  for (const m of sent) socket.send(m);
  for (const m of sent) {
    const reply = await inbox.next();
    if (typeof m === "string") assert.equal(reply, m);
    else assert.deepEqual(bytes(reply), Buffer.from(m));
  }
}

const TRANSPORTS = {
  websocket: ["websocket"],
  "polling (xhr)": ["polling"],
  "polling (fetch)": [Fetch],
};

describe("engine.io-client against /engine.io/", () => {
  test("default client: polling handshake, upgrade to websocket, echo", T, async () => {
    const socket = new Socket(URL, { path: PATH });
    const inbox = new Inbox(socket);
    try {
      // All listeners first: `open` fires synchronously right after `handshake`.
      const upgraded = once(socket, "upgrade");
      const opened = once(socket, "open");
      const [handshake] = await once(socket, "handshake");
      assert.equal(typeof handshake.sid, "string");
      assert.deepEqual(handshake.upgrades, ["websocket"]);
      assert.equal(typeof handshake.pingInterval, "number");
      assert.equal(typeof handshake.pingTimeout, "number");
      assert.equal(typeof handshake.maxPayload, "number");
      await opened;
      assert.equal(socket.transport.name, "polling");
      const [transport] = await upgraded;
      assert.equal(transport.name, "websocket");
      assert.equal(socket.transport.name, "websocket");
      assert.equal(socket.id, handshake.sid, "sid must survive the upgrade");
      await echoBasics(socket, inbox);
    } finally {
      socket.close();
    }
  });

  test("messages sent during the upgrade are neither lost nor reordered", T, async () => {
    const socket = new Socket(URL, { path: PATH });
    const inbox = new Inbox(socket);
    try {
      const upgraded = once(socket, "upgrade");
      await once(socket, "open");
      // Sent on polling while the probe runs; some echoes may come back on either transport.
      const sent = Array.from({ length: 10 }, (_, i) => `during-upgrade-${i}`);
      for (const m of sent) socket.send(m);
      await upgraded;
      for (const m of sent) assert.equal(await inbox.next(), m);
      await echoText(socket, inbox, "after-upgrade");
    } finally {
      socket.close();
    }
  });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`${name} only: text and binary echo`, T, async () => {
      const { socket, inbox, handshake } = await connect({ transports, upgrade: false });
      try {
        assert.deepEqual(handshake.upgrades, name === "websocket" ? [] : ["websocket"]);
        await echoBasics(socket, inbox);
      } finally {
        socket.close();
      }
    });

    test(`${name} only: a 500 KB text message echoes intact`, T, async () => {
      const { socket, inbox } = await connect({ transports, upgrade: false });
      try {
        // Not a repeated single character, so a dropped or duplicated chunk is visible.
        let text = "";
        for (let i = 0; text.length < 500_000; i++) text += `${i.toString(36)}:é|`;
        await echoText(socket, inbox, text);
        await echoText(socket, inbox, "still alive");
      } finally {
        socket.close();
      }
    });

    test(`${name} only: a 200 KB binary message echoes intact`, T, async () => {
      const { socket, inbox } = await connect({ transports, upgrade: false });
      try {
        const big = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 31 + (i >> 8)) & 0xff);
        await echoBinary(socket, inbox, big);
      } finally {
        socket.close();
      }
    });

    test(`${name} only: heartbeat keeps the session alive over several ping intervals`, T, async (t) => {
      const { socket, inbox, handshake } = await connect({ transports, upgrade: false });
      try {
        const interval = handshake.pingInterval;
        if (interval > 2000) {
          t.skip(`pingInterval ${interval} ms is too long for this test`);
          return;
        }
        let pings = 0;
        socket.on("ping", () => pings++);
        await new Promise((r) => setTimeout(r, interval * 3 + interval / 2));
        assert.equal(socket.readyState, "open", `closed: ${inbox.closedWith}`);
        assert.ok(pings >= 3, `expected >= 3 pings in ${interval * 3.5} ms, got ${pings}`);
        await echoText(socket, inbox, "after pings");
      } finally {
        socket.close();
      }
    });

    test(`${name} only: close() then a new connection works`, T, async () => {
      const first = await connect({ transports, upgrade: false });
      const closed = once(first.socket, "close");
      first.socket.close();
      const [reason] = await closed;
      assert.equal(reason, "forced close");
      const second = await connect({ transports, upgrade: false });
      try {
        assert.notEqual(second.socket.id, first.socket.id, "a new session must get a new sid");
        await echoText(second.socket, second.inbox, "second session");
      } finally {
        second.socket.close();
      }
    });
  }

  test("websocket: client sees 'close' when the server drops the session (invalid packet)", T, async (t) => {
    const { socket, inbox } = await connect({ transports: [NodeWebSocket], upgrade: false });
    try {
      const raw = socket.transport?.ws;
      if (!raw || typeof raw.send !== "function") {
        t.skip("engine.io-client internals changed: no raw WebSocket to inject into");
        return;
      }
      const closed = once(socket, "close");
      // "abc" is not an Engine.IO packet; the server must end the session.
      raw.send("abc");
      const [reason] = await closed;
      assert.equal(reason, "transport close");
      assert.match(inbox.closedWith, /transport close/);
    } finally {
      socket.close();
    }
  });

  test("polling: client sees 'close' when the session is closed by a close packet", T, async () => {
    const { socket } = await connect({ transports: [NodeXHR], upgrade: false });
    try {
      const closed = once(socket, "close");
      // A CLOSE packet posted for this sid (as another tab of the same session could) ends it:
      // the pending GET is answered, and the client's next request is refused.
      const res = await within(
        TIMEOUT,
        fetch(`${URL}${PATH}?EIO=4&transport=polling&sid=${encodeURIComponent(socket.id)}`, {
          method: "POST",
          body: "1",
          headers: { "content-type": "text/plain;charset=UTF-8" },
        }),
        "POST of a close packet",
      );
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "ok");
      await closed;
    } finally {
      socket.close();
    }
  });
});
