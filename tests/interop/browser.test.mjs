// Browser checks (DESIGN §6): Debian's Chromium, driven by playwright-core, against
//   (a) the demo (`examples/demo.rs` + `examples/demo/index.html`): both panels of the page (SSE
//       and the page's own tiny Socket.IO client) receive what is sent to their user, and a room
//       message reaches only the member's page;
//   (b) the `interop` example: a real EventSource survives a server-side drop (`ctl:drop-sse`) and
//       resumes with Last-Event-ID, without gaps or duplicates.
//
// The test starts its own servers on free 127.0.0.1 ports from the binaries that
// `cargo build --examples` builds (scripts/interop.sh does that first), and kills them at the end;
// TIDINGS_URL is not used. By hand:
//   cargo build --examples && node --test tests/interop/browser.test.mjs
// Environment: CARGO_TARGET_DIR (where the binaries are), CHROMIUM (default /usr/bin/chromium).
// Without Chromium the suite is skipped with a message; nothing ever downloads a browser.
//
// Every wait is bounded (at most 10 s) and every browser, client and server is closed in `after`.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import { awaitConnect } from "./helpers.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR)
  : path.join(ROOT, "target");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const WAIT = 10000;
const T = { timeout: 60000 };
const SKIP = existsSync(CHROMIUM)
  ? false
  : `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM): browser tests skipped`;
if (SKIP) console.warn(`# ${SKIP}`);

function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: WAIT,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A free loopback port (the kernel picks it; the server binds it a moment later). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const c = net.connect({ host: "127.0.0.1", port });
    c.once("connect", () => (c.destroy(), resolve(true)));
    c.once("error", () => resolve(false));
  });
}

/** Starts `target/debug/examples/<name>` on a free port; resolves once it accepts connections. */
async function startServer(name) {
  const bin = path.join(TARGET, "debug", "examples", name);
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run \`cargo build --examples\` first (scripts/interop.sh does)`);
  }
  const port = await freePort();
  const child = spawn(bin, [], {
    env: { ...process.env, PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (d) => (output = (output + d).slice(-4000));
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = null;
  child.once("exit", (code, signal) => (exited = `exited (${code ?? signal})`));
  const deadline = Date.now() + WAIT;
  while (!(await portOpen(port))) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${name} ${exited ?? "did not listen within 10 s"} on ${port}; output:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    output: () => output,
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// (a) The demo page
// ---------------------------------------------------------------------------------------------

/** Both panels of a demo page are connected. */
async function connected(page) {
  for (const panel of ["sse", "sio"]) {
    await page.waitForSelector(`#${panel}-state[data-state=connected]`, { timeout: WAIT });
  }
}

/** A panel's log: [{event, data (parsed), id}] in arrival order. */
async function logOf(page, panel) {
  const items = await page.$$eval(`#${panel}-log li`, (lis) =>
    lis.map((li) => ({ event: li.dataset.event, data: li.dataset.data, id: li.dataset.id ?? null })),
  );
  return items.map((i) => ({ ...i, data: JSON.parse(i.data) }));
}

/** Waits until a panel's log has an entry with this event name and exact data. */
function waitLog(page, panel, event, data) {
  return page.waitForFunction(
    ([panel, event, data]) =>
      [...document.querySelectorAll(`#${panel}-log li`)].some(
        (li) => li.dataset.event === event && li.dataset.data === data,
      ),
    [panel, event, JSON.stringify(data)],
    { timeout: WAIT },
  );
}

/** Fills the control form, clicks `button` and returns the result line {ok, text}. */
async function control(page, button, fields = {}) {
  for (const [id, value] of Object.entries(fields)) await page.fill(`#ctl-${id}`, value);
  await page.$eval("#result", (el) => {
    delete el.dataset.ok;
    el.textContent = "";
  });
  await page.click(`#${button}`);
  await page.waitForSelector("#result[data-ok]", { timeout: WAIT });
  return page.$eval("#result", (el) => ({ ok: el.dataset.ok === "true", text: el.textContent }));
}

const pairs = (log) => log.map((e) => [e.event, e.data]);

describe("browser: the demo page", { skip: SKIP }, () => {
  let server;
  let browser;
  const errors = [];

  before(async () => {
    server = await startServer("demo");
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function open(query) {
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT);
    page.on("pageerror", (e) => errors.push(`${query}: ${e.message}`));
    const response = await page.goto(`${server.url}/${query}`, { timeout: WAIT });
    assert.equal(response.status(), 200);
    await connected(page);
    return page;
  }

  test("both panels get their user's events; a room message reaches only the member", T, async () => {
    const alice = await open(""); // the defaults: alice@acme on both panels
    const bob = await open("?user=bob&tenant=acme");
    assert.match(await alice.textContent("#sse-state"), /alice@acme/);
    assert.match(await bob.textContent("#sio-state"), /bob@acme/);

    // To a user, from either page's controls (they go over that page's Socket.IO panel).
    let r = await control(alice, "to-user", { user: "alice", tenant: "acme", event: "notification", data: '{"to":"alice"}' });
    assert.ok(r.ok, r.text);
    r = await control(bob, "to-user", { user: "bob", tenant: "acme", event: "notification", data: '{"to":"bob"}' });
    assert.ok(r.ok, r.text);
    for (const panel of ["sse", "sio"]) {
      await waitLog(alice, panel, "notification", { to: "alice" });
      await waitLog(bob, panel, "notification", { to: "bob" });
    }

    // Bob joins a room (membership belongs to the user: all his connections, both transports).
    r = await control(alice, "join", { user: "bob", tenant: "acme", room: "support-chat" });
    assert.ok(r.ok, r.text);
    r = await control(alice, "rooms");
    assert.ok(r.ok && r.text.includes('["support-chat"]'), r.text);
    r = await control(alice, "to-room", { event: "message", data: '{"text":"hi room"}' });
    assert.ok(r.ok, r.text);
    // A marker to everyone after the room message: once it has arrived, anything addressed to a
    // panel earlier has arrived too (one connection keeps order), so the logs below are final.
    r = await control(alice, "to-all", { event: "notification", data: '{"marker":true}' });
    assert.ok(r.ok, r.text);
    for (const page of [alice, bob]) {
      for (const panel of ["sse", "sio"]) await waitLog(page, panel, "notification", { marker: true });
    }

    const marker = ["notification", { marker: true }];
    for (const panel of ["sse", "sio"]) {
      assert.deepEqual(pairs(await logOf(alice, panel)), [["notification", { to: "alice" }], marker], `alice ${panel}`);
      assert.deepEqual(
        pairs(await logOf(bob, panel)),
        [["notification", { to: "bob" }], ["message", { text: "hi room" }], marker],
        `bob ${panel}`,
      );
    }
    // SSE entries carry resumable ids `<epoch>:<seq>`, increasing.
    for (const page of [alice, bob]) {
      const ids = (await logOf(page, "sse")).map((e) => e.id);
      for (const id of ids) assert.match(id, /^\d+:\d+$/);
      const seqs = ids.map((id) => BigInt(id.split(":")[1]));
      assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `ids increase: ${ids}`);
    }

    // An ack request to bob: his Socket.IO panel answers; the outcome shows on alice's page.
    r = await control(alice, "ask", { user: "bob", event: "notification", data: '{"q":1}' });
    assert.ok(r.ok && r.text.includes('"seen":true'), r.text);

    // Typed errors reach the page; nothing is sent.
    r = await control(alice, "to-room", { room: "", event: "message", data: "{}" });
    assert.ok(!r.ok && r.text.includes("InvalidRoom"), r.text);
    r = await control(alice, "to-user", { user: "bob", event: "connect", data: "{}" });
    assert.ok(!r.ok && r.text.includes("InvalidEvent"), r.text);
    r = await control(alice, "to-user", { event: "notification", data: "{not json" });
    assert.ok(!r.ok && r.text.includes("not valid JSON"), r.text);

    // Leaving works, and read-your-writes: the next `rooms` no longer lists it.
    r = await control(alice, "leave", { user: "bob", room: "support-chat" });
    assert.ok(r.ok, r.text);
    r = await control(alice, "rooms");
    assert.ok(r.ok && r.text.includes("[]"), r.text);

    assert.deepEqual(errors, [], "no page errors");
  });
});

// ---------------------------------------------------------------------------------------------
// (b) A real EventSource against the interop example: drop, resume, no gaps
// ---------------------------------------------------------------------------------------------

describe("browser: EventSource resumes after a server-side drop", { skip: SKIP }, () => {
  let server;
  let browser;
  let ctl;

  before(async () => {
    server = await startServer("interop");
    browser = await launchBrowser();
    // The control client: the official socket.io-client, anonymous, WebSocket only.
    ctl = io(server.url, { transports: ["websocket"], reconnection: false, timeout: WAIT });
    await awaitConnect(ctl, "control socket", "control connect_error", WAIT);
  });

  after(async () => {
    ctl?.close();
    await browser?.close();
    await server?.stop();
  });

  const call = (event, req) => ctl.timeout(WAIT).emitWithAck(event, req);
  const tick = async (user, n) => {
    const r = await call("ctl:broadcast", {
      transport: "sse",
      target: { kind: "user", user, tenant: "acme" },
      event: "tick",
      data: { n },
    });
    assert.deepEqual(r, { ok: true });
  };

  test("all ids arrive once, in order, across the drop", T, async () => {
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT);
    // A blank page of the server's own origin (served by the test, not by the server), so the
    // EventSource is same-origin.
    await page.route(`${server.url}/blank`, (route) =>
      route.fulfill({ contentType: "text/html", body: "<!doctype html><title>sse</title>" }),
    );
    await page.goto(`${server.url}/blank`, { timeout: WAIT });
    await page.evaluate(() => {
      window.streams = {};
      for (const user of ["bob", "carol"]) {
        const s = { events: [], opens: 0, errors: 0 };
        window.streams[user] = s;
        const es = new EventSource(`/events?user=${user}&tenant=acme`);
        es.onopen = () => s.opens++;
        es.onerror = () => s.errors++;
        for (const name of ["tick", "tidings-reset"]) {
          es.addEventListener(name, (e) =>
            s.events.push({ type: e.type, n: JSON.parse(e.data).n, id: e.lastEventId, opens: s.opens }),
          );
        }
        s.es = es;
      }
    });
    const state = (user) =>
      page.evaluate((u) => {
        const s = window.streams[u];
        return { events: s.events, opens: s.opens, errors: s.errors, readyState: s.es.readyState };
      }, user);
    /** Waits until `user`'s stream has `n` events (and, if given, has opened `opens` times). */
    const until = (user, n, opens = null) =>
      page.waitForFunction(
        ([u, n, opens]) => {
          const s = window.streams[u];
          return s.events.length === n && (opens === null || s.opens === opens);
        },
        [user, n, opens],
        { timeout: WAIT },
      );

    await until("bob", 0, 1);
    await until("carol", 0, 1);
    for (const n of [1, 2, 3]) await tick("bob", n);
    await until("bob", 3);

    // The server closes bob's stream; ticks 4-6 are broadcast while it is down (the stream is
    // closed before they are handled: the loop applies commands in order).
    const dropped = await call("ctl:drop-sse", { user: "bob", tenant: "acme" });
    assert.deepEqual(dropped, { dropped: 1 });
    for (const n of [4, 5, 6]) await tick("bob", n);
    const down = await state("bob");
    assert.equal(down.opens, 1, "bob's EventSource had not reconnected yet (retry is at least 200 ms)");
    assert.equal(down.events.length, 3);

    // Chromium reconnects by itself with Last-Event-ID; the server replays 4-6, then live 7-9.
    await until("bob", 6, 2);
    for (const n of [7, 8, 9]) await tick("bob", n);
    await until("bob", 9);

    const bob = await state("bob");
    assert.ok(bob.errors >= 1, "the drop was seen by the browser");
    assert.deepEqual(bob.events.map((e) => e.type), Array(9).fill("tick"), "no reset event");
    assert.deepEqual(bob.events.map((e) => e.n), [1, 2, 3, 4, 5, 6, 7, 8, 9], "every tick once, in order");
    assert.deepEqual(bob.events.map((e) => e.opens), [1, 1, 1, 2, 2, 2, 2, 2, 2]);
    const ids = bob.events.map((e) => e.id);
    for (const id of ids) assert.match(id, /^\d+:\d+$/);
    assert.equal(new Set(ids.map((id) => id.split(":")[0])).size, 1, `one epoch: ${ids}`);
    const seqs = ids.map((id) => BigInt(id.split(":")[1]));
    assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `ids strictly increase: ${ids}`);

    // Carol (same tenant, other user) got none of bob's ticks and was never dropped.
    await tick("carol", 100);
    await until("carol", 1);
    const carol = await state("carol");
    assert.deepEqual(carol.events.map((e) => e.n), [100]);
    assert.equal(carol.opens, 1);
    await page.evaluate(() => Object.values(window.streams).forEach((s) => s.es.close()));
  });
});
