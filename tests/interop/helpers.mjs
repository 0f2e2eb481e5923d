// Helpers shared by the interop tests (tests/interop/*.test.mjs): bounded waits, unique ids, the
// Socket.IO connect wait, and the `ctl:*` control socket of `examples/interop.rs`.
//
// Every wait here is bounded, so a hung server fails a test fast instead of stalling the run.
// A file that calls `ctl` must also register `after(closeControl)`.
import assert from "node:assert/strict";
import { io } from "socket.io-client";

export const URL = process.env.TIDINGS_URL ?? "http://127.0.0.1:3000";
/** The bound of every single wait. */
export const TIMEOUT = 5000;
/** Per-test guard on top of the per-wait TIMEOUT. */
export const T = { timeout: 20000 };
/** How long "nothing arrives" is watched after the sentinel that proves delivery is done. */
export const QUIET_MS = 150;

/** socket.io-client options of the tests' sockets: a new connection, quick and steady reconnects. */
export const SOCKET_OPTS = {
  forceNew: true,
  reconnectionDelay: 100,
  reconnectionDelayMax: 300,
  randomizationFactor: 0,
  timeout: TIMEOUT,
};

/** Rejects with a readable message when `promise` does not settle within `ms`. */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let seq = 0;
/** An id no other test (or earlier run against the same server) uses. */
export const uid = (name) => `${name}-${process.pid}-${Date.now().toString(36)}-${seq++}`;

/**
 * Waits until `pred()` holds, re-checking whenever the caller's event handlers wake the functions
 * pushed onto `waiters`. After `ms` it throws `new Error(failure())`.
 */
export async function waitUntil(pred, waiters, what, ms, failure) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(failure());
    await within(left, new Promise((r) => waiters.push(r)), what).catch(() => {});
  }
}

/** Waits (at most `ms`) for a socket.io-client socket's `connect`; rejects on `connect_error`. */
export function awaitConnect(socket, what = "connect", label = "connect_error", ms = TIMEOUT) {
  return within(
    ms,
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (e) => reject(new Error(`${label}: ${e.message}`)));
    }),
    what,
  );
}

// --- control socket -------------------------------------------------------------------------------
/**
 * An anonymous control socket on the server at `url`, opened on first use: `ctl(event, payload)`
 * sends a `ctl:*` event and awaits its ack; `emit(event, ...args)` sends a plain event (ordered
 * with the `ctl` calls); `close()` closes it (register with `after`).
 */
export function controlSocket(url) {
  let opened = null;
  const open = async () => {
    const socket = io(url, { forceNew: true, transports: ["websocket"], timeout: TIMEOUT });
    try {
      await awaitConnect(socket, `control socket on ${url}`, "control connect_error");
    } catch (e) {
      socket.close();
      throw e;
    }
    return socket;
  };
  // A failed open is retried by the next call.
  const socket = () => (opened ??= open().catch((e) => ((opened = null), Promise.reject(e))));
  return {
    async ctl(event, payload) {
      const s = await socket();
      return within(TIMEOUT, s.timeout(TIMEOUT).emitWithAck(event, payload), event);
    },
    async emit(event, ...args) {
      (await socket()).emit(event, ...args);
    },
    close() {
      opened?.then((s) => s.close(), () => {});
    },
  };
}

const control = controlSocket(URL);

/** Sends a `ctl:*` event on the anonymous control socket (opened on first use) and awaits its ack. */
export const ctl = (event, payload) => control.ctl(event, payload);

/** Closes the control socket, if one was opened (register with `after`). */
export const closeControl = () => control.close();

/** A broadcast through the unified API (`transport`: "sse", "socket" or "both"); must succeed. */
export async function broadcast(transport, target, event, data) {
  const r = await ctl("ctl:broadcast", { transport, target, event, data });
  assert.deepEqual(r, { ok: true }, `broadcast ${event} to ${JSON.stringify(target)} over ${transport}`);
}

/** The user `user` of `tenant` joins `room`; must succeed. */
export async function join(user, tenant, room) {
  assert.deepEqual(await ctl("ctl:join", { user, tenant, room }), { ok: true });
}

/** Waits (bounded) until the server reports no pending server→client acks. */
export async function expectNoPendingAcks(ms = 3000) {
  const deadline = Date.now() + ms;
  let stats;
  for (;;) {
    stats = await ctl("ctl:stats", {});
    if (stats?.pendingAcks === 0) return stats;
    if (Date.now() > deadline) break;
    await sleep(50);
  }
  assert.equal(stats?.pendingAcks, 0, `pending acks left: ${JSON.stringify(stats)}`);
}

/** The arguments of the next `event` on `emitter` (a socket, its manager or its engine). */
export function once(emitter, event, ms = TIMEOUT) {
  return within(ms, new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), `'${event}'`);
}

/** With polling→websocket, waits until the upgrade is done (so both transports served). */
export async function settled(socket, mode) {
  if (mode !== "polling→websocket") return;
  const engine = socket.io.engine;
  if (engine.transport.name !== "websocket") await once(engine, "upgrade");
  if (engine.transport.name !== "websocket") throw new Error("the upgrade did not happen");
}

/**
 * What a client received, as [event, ...args], with bounded waits; shared by sockets and SSE
 * streams. Negative checks end with a `sentinel` event sent on the same path after the events
 * that must not arrive: once the sentinel is in, a leak would be in too.
 */
export class Log {
  constructor(label) {
    this.label = label;
    this.items = [];
    this.waiters = [];
  }

  push(item) {
    this.items.push(item);
    this.wake();
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  clear() {
    this.items = [];
  }

  until(pred, what, ms = TIMEOUT) {
    return waitUntil(
      pred,
      this.waiters,
      what,
      ms,
      () => `${this.label}: timed out after ${ms} ms waiting for ${what}; got ${JSON.stringify(this.items)}`,
    );
  }

  /** Waits for the sentinel whose data is `tag`, then a quiet period; returns all but sentinels. */
  async settle(tag = null) {
    await this.until(() => this.items.some(([e, d]) => e === "sentinel" && d === tag), `sentinel ${tag}`);
    await sleep(QUIET_MS);
    return this.items.filter(([e]) => e !== "sentinel");
  }
}
