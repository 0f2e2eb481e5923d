// Interop: the npm `eventsource` 4.x client (WHATWG EventSource for Node) and raw `fetch` against
// the SSE endpoint (/events) of `examples/interop.rs`. Broadcasts go through the unified API by
// `ctl:*` events on a Socket.IO control socket. Run through scripts/interop.sh, or by hand against
// a running example:
//   TIDINGS_URL=http://127.0.0.1:3000 node --test tests/interop/sse.test.mjs
//
// Every wait is bounded (at most 5 s) so a hung server fails fast; every client and stream is
// closed in `finally`; every test uses its own user/tenant/room ids.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { EventSource } from "eventsource";
import {
  URL,
  TIMEOUT,
  T,
  QUIET_MS,
  within,
  sleep,
  uid,
  waitUntil,
  ctl,
  closeControl,
  broadcast as broadcastVia,
  join,
} from "./helpers.mjs";

const SSE = `${URL}/events`;
const ID_RE = /^(\d+):(\d+)$/;

// --- control socket (see helpers.mjs) -------------------------------------------------------------
after(closeControl);

const broadcast = (target, event, data, transport = "sse") => broadcastVia(transport, target, event, data);
const toUser = (user, tenant, event, data, transport) =>
  broadcast({ kind: "user", user, tenant }, event, data, transport);

// --- EventSource client ---------------------------------------------------------------------------
/** An EventSource with a log of its requests' headers and of every event of the given names. */
class Stream {
  constructor(query, names) {
    this.requests = [];
    this.events = [];
    this.errors = [];
    this.opens = 0;
    this.waiters = [];
    const url = `${SSE}?${new URLSearchParams(query)}`;
    this.es = new EventSource(url, {
      fetch: (input, init) => {
        this.requests.push({ ...(init?.headers ?? {}) });
        return fetch(input, init);
      },
    });
    const wake = () => {
      for (const w of this.waiters.splice(0)) w();
    };
    for (const name of names) {
      this.es.addEventListener(name, (e) => {
        this.events.push({ type: e.type, data: e.data, id: e.lastEventId });
        wake();
      });
    }
    this.es.addEventListener("open", () => {
      this.opens++;
      wake();
    });
    this.es.addEventListener("error", (e) => {
      this.errors.push({ code: e.code, message: e.message, readyState: this.es.readyState });
      wake();
    });
  }

  /** Waits (bounded) until `pred()` holds. */
  until(pred, what, ms = TIMEOUT) {
    return waitUntil(pred, this.waiters, what, ms, () => {
      const seen = `events: ${JSON.stringify(this.events)}; errors: ${JSON.stringify(this.errors)}`;
      return `timed out after ${ms} ms waiting for ${what}; ${seen}`;
    });
  }

  opened(n = 1) {
    return this.until(() => this.opens >= n, `open #${n}`);
  }

  count(n) {
    return this.until(() => this.events.length >= n, `${n} events`).then(() => this.events);
  }

  close() {
    this.es.close();
  }
}

async function openStream(query, names) {
  const s = new Stream(query, names);
  try {
    await s.opened();
  } catch (e) {
    s.close();
    throw e;
  }
  return s;
}

function parseId(id) {
  const m = ID_RE.exec(id);
  assert.ok(m, `event id '${id}' is not <epoch>:<seq>`);
  return { epoch: m[1], seq: BigInt(m[2]) };
}

/** Ids share one epoch and their sequence numbers strictly increase. */
function assertIdsIncrease(events) {
  const ids = events.map((e) => parseId(e.id));
  for (let i = 1; i < ids.length; i++) {
    assert.equal(ids[i].epoch, ids[0].epoch, "epoch changed within one server run");
    assert.ok(ids[i].seq > ids[i - 1].seq, `ids not increasing: ${events[i - 1].id} then ${events[i].id}`);
  }
}

// --- raw fetch --------------------------------------------------------------------------------------
/** A raw GET of the SSE endpoint whose body text can be awaited piecewise. */
async function rawStream(query, headers = {}) {
  const controller = new AbortController();
  const res = await within(
    TIMEOUT,
    fetch(`${SSE}?${new URLSearchParams(query)}`, { headers, signal: controller.signal }),
    "SSE response head",
  );
  let text = "";
  const reader = res.body?.getReader();
  const decoder = new TextDecoder();
  return {
    res,
    get text() {
      return text;
    },
    /** Reads until `pred(text)` holds, at most `ms`. */
    async readUntil(pred, what, ms = TIMEOUT) {
      const deadline = Date.now() + ms;
      while (!pred(text)) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}; body so far: ${JSON.stringify(text)}`);
        const { value, done } = await within(left, reader.read(), what);
        if (done) throw new Error(`stream ended while waiting for ${what}; body: ${JSON.stringify(text)}`);
        text += decoder.decode(value, { stream: true });
      }
      return text;
    },
    close() {
      controller.abort();
    },
  };
}

/** Dispatchable SSE events (field lists) in `text`, per the WHATWG parsing rules we need here. */
function parseSse(text) {
  const out = [];
  for (const block of text.split(/\r\n\r\n|\n\n|\r\r/)) {
    const ev = {};
    let any = false;
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (line === "" || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      ev[field] = field === "data" && ev.data !== undefined ? `${ev.data}\n${value}` : value;
      any = true;
    }
    if (any) out.push(ev);
  }
  return out;
}

describe("SSE with the eventsource client", () => {
  test("named events with <epoch>:<seq> ids, data exact, in order", T, async () => {
    const user = uid("alice");
    const s = await openStream({ user, tenant: "acme" }, ["news", "other"]);
    try {
      // serde_json writes object keys sorted; these are, so the wire text equals JSON.stringify.
      const sent = [
        { a: 1, b: "héllo \"quoted\" ✓ 🚀", c: [true, null, 2.5] },
        "plain string",
        42,
        [],
        { multi: "line1\nline2\r\nline3" },
      ];
      for (const d of sent) await toUser(user, "acme", "news", d);
      await toUser(user, "acme", "other", { last: true });
      const got = await s.count(sent.length + 1);
      assert.deepEqual(
        got.map((e) => [e.type, e.data]),
        [...sent.map((d) => ["news", JSON.stringify(d)]), ["other", JSON.stringify({ last: true })]],
      );
      assertIdsIncrease(got);
      assert.equal(s.errors.length, 0, JSON.stringify(s.errors));
    } finally {
      s.close();
    }
  });

  test("rejected auth: an error and no events; raw status 401 (bad) and 403 (forbidden)", T, async () => {
    const user = uid("mallory");
    const s = new Stream({ user, tenant: "acme", token: "bad" }, ["news"]);
    try {
      await s.until(() => s.errors.length > 0, "error event");
      assert.equal(s.errors[0].code, 401);
      assert.equal(s.es.readyState, EventSource.CLOSED, "a 401 must not be retried");
      await toUser(user, "acme", "news", "must not arrive");
      await sleep(QUIET_MS);
      assert.deepEqual(s.events, []);
      assert.equal(s.opens, 0);
    } finally {
      s.close();
    }
    for (const [token, status] of [["bad", 401], ["forbidden", 403]]) {
      const res = await within(TIMEOUT, fetch(`${SSE}?${new URLSearchParams({ user, token })}`), `GET token=${token}`);
      assert.equal(res.status, status, `token=${token}`);
      assert.doesNotMatch(res.headers.get("content-type") ?? "", /event-stream/);
      await res.text();
    }
  });

  test("reconnect with Last-Event-ID after a server drop: N+M events exactly once, in order", T, async () => {
    const user = uid("carol");
    const tenant = "acme";
    const N = 5;
    const M = 7;
    const s = await openStream({ user, tenant }, ["tick"]);
    try {
      for (let i = 0; i < N; i++) await toUser(user, tenant, "tick", { i });
      await s.count(N);
      const lastBeforeDrop = s.events[N - 1].id;
      const errorsBefore = s.errors.length;
      const dropped = await ctl("ctl:drop-sse", { user, tenant });
      assert.deepEqual(dropped, { dropped: 1 });
      await s.until(() => s.errors.length > errorsBefore, "the client noticing the drop");
      assert.equal(s.es.readyState, EventSource.CONNECTING, "the client must be reconnecting");
      // Sent while the client waits out its retry delay (>= 200 ms): only the resume can deliver them.
      for (let i = N; i < N + M; i++) await toUser(user, tenant, "tick", { i });
      assert.equal(s.opens, 1, "the client reconnected before the events were sent; test proves less");
      await s.opened(2);
      await s.count(N + M);
      await toUser(user, tenant, "tick", { i: "sentinel" });
      await s.count(N + M + 1);
      await sleep(QUIET_MS);
      const data = s.events.map((e) => JSON.parse(e.data).i);
      assert.deepEqual(data, [...Array.from({ length: N + M }, (_, i) => i), "sentinel"]);
      assertIdsIncrease(s.events);
      assert.equal(s.requests.length, 2);
      assert.equal(s.requests[0]["Last-Event-ID"], undefined);
      assert.equal(s.requests[1]["Last-Event-ID"], lastBeforeDrop);
    } finally {
      s.close();
    }
  });

  test("events for other users, tenants and rooms never arrive", T, async () => {
    const tenant = uid("acme");
    const otherTenant = uid("globex");
    const alice = uid("alice");
    const bob = uid("bob");
    const room = uid("room");
    const myRoom = uid("my-room");
    // to_all reaches every stream of every test: a name nobody else listens for.
    const allEvent = uid("everyone");
    const names = ["leak", "ok", "done", allEvent];
    const s = await openStream({ user: alice, tenant }, names);
    const bobStream = await openStream({ user: bob, tenant }, names);
    try {
      await join(bob, tenant, room);
      await join(alice, tenant, myRoom);
      await toUser(bob, tenant, "leak", "to bob");
      await toUser(alice, otherTenant, "leak", "same user id, other tenant");
      await broadcast({ kind: "tenant", tenant: otherTenant }, "leak", "other tenant");
      await broadcast({ kind: "room", room }, "leak", "room alice is not in");
      await toUser(alice, tenant, "leak", "socket transport only", "socket");
      await broadcast({ kind: "tenant", tenant }, "ok", "my tenant");
      await broadcast({ kind: "room", room: myRoom }, "ok", "my room");
      await broadcast({ kind: "all" }, allEvent, "everyone");
      await toUser(alice, tenant, "done", "sentinel");
      await s.until(() => s.events.some((e) => e.type === "done"), "sentinel");
      await sleep(QUIET_MS);
      assert.deepEqual(
        s.events.map((e) => [e.type, JSON.parse(e.data)]),
        [
          ["ok", "my tenant"],
          ["ok", "my room"],
          [allEvent, "everyone"],
          ["done", "sentinel"],
        ],
      );
      // Bob did get what was his (the room and the user event), so the leaks were real sends.
      await bobStream.until(() => bobStream.events.filter((e) => e.type === "leak").length >= 2, "bob's events");
      assert.deepEqual(
        bobStream.events.filter((e) => e.type === "leak").map((e) => JSON.parse(e.data)),
        ["to bob", "room alice is not in"],
      );
    } finally {
      s.close();
      bobStream.close();
    }
  });
});

describe("SSE with raw fetch", () => {
  test("heartbeat comments arrive on an idle stream", T, async () => {
    const r = await rawStream({ user: uid("idle"), tenant: "acme" });
    try {
      assert.equal(r.res.status, 200);
      assert.match(r.res.headers.get("content-type") ?? "", /^text\/event-stream/);
      await r.readUntil((t) => /(^|\n\n):\n\n/.test(t), "a ':' heartbeat comment", 1500);
      assert.deepEqual(parseSse(r.text).filter((e) => e.event !== undefined || e.data !== undefined), []);
      assert.match(r.text, /^retry: \d+\n\n/, "retry comes first and only from the server");
    } finally {
      r.close();
    }
  });

  test("CORS: an allowed Origin gets Allow-Origin and credentials, a foreign one gets none", T, async () => {
    const allowed = [URL, URL.replace("127.0.0.1", "localhost")];
    for (const origin of allowed) {
      const r = await rawStream({ user: uid("cors"), tenant: "acme" }, { Origin: origin });
      try {
        assert.equal(r.res.status, 200);
        assert.equal(r.res.headers.get("access-control-allow-origin"), origin);
        assert.equal(r.res.headers.get("access-control-allow-credentials"), "true");
        assert.match(r.res.headers.get("vary") ?? "", /origin/i);
      } finally {
        r.close();
      }
    }
    for (const origin of ["http://evil.example", `${URL}.evil.example`, "null"]) {
      const r = await rawStream({ user: uid("cors"), tenant: "acme" }, { Origin: origin });
      try {
        assert.equal(r.res.status, 200);
        for (const [name] of r.res.headers) {
          assert.ok(!name.startsWith("access-control-"), `foreign origin ${origin} got ${name}`);
        }
      } finally {
        r.close();
      }
    }
    // The preflight a browser sends before a cross-origin request with Last-Event-ID.
    const pre = await within(
      TIMEOUT,
      fetch(SSE, {
        method: "OPTIONS",
        headers: {
          Origin: allowed[0],
          "Access-Control-Request-Method": "GET",
          "Access-Control-Request-Headers": "last-event-id",
        },
      }),
      "preflight",
    );
    assert.ok(pre.status === 200 || pre.status === 204, `preflight status ${pre.status}`);
    assert.equal(pre.headers.get("access-control-allow-origin"), allowed[0]);
    assert.match(pre.headers.get("access-control-allow-headers") ?? "", /last-event-id/i);
    await pre.text();
    const foreign = await within(
      TIMEOUT,
      fetch(SSE, { method: "OPTIONS", headers: { Origin: "http://evil.example", "Access-Control-Request-Method": "GET" } }),
      "foreign preflight",
    );
    assert.equal(foreign.headers.get("access-control-allow-origin"), null);
    await foreign.text();
  });

  test("Last-Event-ID from an unknown epoch (999:1) gets a tidings-reset event first", T, async () => {
    const user = uid("dave");
    const r = await rawStream({ user, tenant: "acme" }, { "Last-Event-ID": "999:1" });
    try {
      assert.equal(r.res.status, 200);
      await r.readUntil((t) => parseSse(t).some((e) => e.event !== undefined), "the first event");
      const [first] = parseSse(r.text).filter((e) => e.event !== undefined || e.data !== undefined);
      assert.equal(first.event, "tidings-reset");
      assert.match(first.id, ID_RE);
      assert.notEqual(parseId(first.id).epoch, "999");
      assert.deepEqual(JSON.parse(first.data), { reason: "unknown-epoch" });
      // The stream is live after the reset.
      await toUser(user, "acme", "news", "after reset");
      await r.readUntil((t) => parseSse(t).some((e) => e.event === "news"), "a live event");
      const news = parseSse(r.text).find((e) => e.event === "news");
      assert.equal(news.data, JSON.stringify("after reset"));
    } finally {
      r.close();
    }
  });

  test("a garbage or hostile Last-Event-ID gets a reset, never an echo of it", T, async () => {
    for (const last of ["garbage", "1:2:3", "x".repeat(2000)]) {
      const r = await rawStream({ user: uid("erin"), tenant: "acme" }, { "Last-Event-ID": last });
      try {
        assert.equal(r.res.status, 200);
        await r.readUntil((t) => parseSse(t).some((e) => e.event !== undefined), `the reset for '${last.slice(0, 20)}'`);
        const [first] = parseSse(r.text).filter((e) => e.event !== undefined);
        assert.equal(first.event, "tidings-reset");
        assert.ok(!r.text.includes(last), "the client's id was reflected");
      } finally {
        r.close();
      }
    }
  });
});
