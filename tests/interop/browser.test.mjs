// Browser checks: Debian's Chromium, driven by playwright-core, against
//   (a) the demo (`examples/demo.rs` + `examples/demo/index.html`): both panels of the page (SSE
//       and the page's own tiny Socket.IO client) receive what is sent to their user, a room
//       message reaches only the member's page, each send says how many connections it reached
//       (per transport; "nobody is in this room" for an empty room), and the live presence follows
//       connections as they come and go; each panel's "go offline" / "back online" shows recovery
//       (Socket.IO: the session recovered, the missed events replayed once, in order, and no
//       offset shown as data) and resume (SSE: after its last id);
//   (b) the `interop` example: a real EventSource survives a server-side drop (`ctl:drop-sse`) and
//       resumes with Last-Event-ID, without gaps or duplicates.
//
// The test starts its own servers on free 127.0.0.1 ports from the binaries that
// `cargo build --examples` builds (scripts/interop.sh does that first), and kills them at the end;
// TIDINGS_URL is not used. By hand:
//   cargo build --examples && node --test tests/interop/browser.test.mjs
// Environment: CARGO_TARGET_DIR (where the binaries are), CHROMIUM (default /usr/bin/chromium),
//   DEMO_SCREENSHOT=path.png: also stage the demo (two tenants, a few sends, a room send to
//   nobody) and save a 1280×900 screenshot there (examples/demo/screenshot.png in the README).
//   Without it nothing is written.
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
// Chromium's first start on a machine (cold caches) under a loaded CI can take longer than WAIT.
const LAUNCH_WAIT = 60000;
const T = { timeout: 60000 };
const SKIP = existsSync(CHROMIUM)
  ? false
  : `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM): browser tests skipped`;
if (SKIP) console.warn(`# ${SKIP}`);

function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: LAUNCH_WAIT,
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

/**
 * Starts `target/debug/examples/<name>` on a free port, or with `name` "gateway" the gateway
 * binary with `--demo` (`cargo build --features gateway --bin tidings-gateway`); resolves once it
 * accepts connections.
 */
async function startServer(name) {
  const gateway = name === "gateway";
  const bin = gateway ? path.join(TARGET, "debug", "tidings-gateway") : path.join(TARGET, "debug", "examples", name);
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run scripts/interop.sh (it builds the examples and the gateway)`);
  }
  const port = await freePort();
  const args = gateway ? ["--demo", "--bind", `127.0.0.1:${port}`, "--api-bind", "off"] : [];
  const child = spawn(bin, args, {
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

/** A panel's log: [{event, data (parsed), id, replayed}] in arrival order. */
async function logOf(page, panel) {
  const items = await page.$$eval(`#${panel}-log li`, (lis) =>
    lis.map((li) => ({
      event: li.dataset.event,
      data: li.dataset.data,
      id: li.dataset.id ?? null,
      replayed: "replayed" in li.dataset,
    })),
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

/**
 * Fills the control form, clicks `button` and returns the result line: {ok, text, tone (ok |
 * none | error)} plus, after a send, the connections it reached {total, sse, socketio}, and after
 * join / leave / rooms, the user's `rooms`.
 */
async function control(page, button, fields = {}) {
  for (const [id, value] of Object.entries(fields)) await page.fill(`#ctl-${id}`, value);
  await page.$eval("#result", (el) => {
    delete el.dataset.ok;
    el.textContent = "";
  });
  await page.click(`#${button}`);
  await page.waitForSelector("#result[data-ok]", { timeout: WAIT });
  const r = await page.$eval("#result", (el) => ({ text: el.textContent, ...el.dataset }));
  const num = (v) => (v === undefined ? undefined : Number(v));
  return {
    ...r,
    ok: r.ok === "true",
    total: num(r.total),
    sse: num(r.sse),
    socketio: num(r.socketio),
    rooms: r.rooms === undefined ? undefined : JSON.parse(r.rooms),
  };
}

/** Asserts a send worked and reached exactly `sse` SSE streams and `socketio` sockets. */
function assertReached(r, sse, socketio) {
  assert.ok(r.ok, r.text);
  assert.deepEqual({ total: r.total, sse: r.sse, socketio: r.socketio }, { total: sse + socketio, sse, socketio }, r.text);
  const parts = [sse && `${sse} SSE`, socketio && `${socketio} Socket.IO`].filter(Boolean).join(", ");
  const n = sse + socketio;
  assert.ok(r.text.includes(`reached ${n} connection${n === 1 ? "" : "s"}: ${parts}`), r.text);
  assert.equal(r.tone, "ok", r.text);
}

/** Waits until the page's live presence shows these counts. */
function waitPresence(page, sse, socketio) {
  return page.waitForSelector(`#presence[data-sse="${sse}"][data-socketio="${socketio}"]`, { timeout: WAIT });
}

const pairs = (log) => log.map((e) => [e.event, e.data]);

// The same page and checks twice: from `examples/demo.rs`, and from the gateway's `--demo`.
for (const [title, serverName] of [
  ["browser: the demo page", "demo"],
  ["browser: the demo page served by tidings-gateway --demo", "gateway"],
]) describe(title, { skip: SKIP }, () => {
  let server;
  let browser;
  const errors = [];

  before(async () => {
    server = await startServer(serverName);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function open(query, viewport = null) {
    const page = await browser.newPage(viewport ? { viewport } : {});
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
    // The suggested second tab is another user in another tenant.
    assert.equal(await alice.getAttribute("#second-tab", "href"), "/?user=bob&tenant=globex");
    // Live presence: both pages, each with one SSE stream and one Socket.IO socket.
    await waitPresence(alice, 2, 2);
    await waitPresence(bob, 2, 2);

    // To a user, from either page's controls (they go over that page's Socket.IO panel); each
    // reaches that user's two connections: the page's SSE panel and its Socket.IO panel.
    let r = await control(alice, "to-user", { user: "alice", tenant: "acme", event: "notification", data: '{"to":"alice"}' });
    assertReached(r, 1, 1);
    r = await control(bob, "to-user", { user: "bob", tenant: "acme", event: "notification", data: '{"to":"bob"}' });
    assertReached(r, 1, 1);
    for (const panel of ["sse", "sio"]) {
      await waitLog(alice, panel, "notification", { to: "alice" });
      await waitLog(bob, panel, "notification", { to: "bob" });
    }

    // Bob joins a room (membership belongs to the user: all his connections, both transports).
    r = await control(alice, "join", { user: "bob", tenant: "acme", room: "support-chat" });
    assert.ok(r.ok, r.text);
    assert.ok(r.text.includes("bob@acme joined support-chat"), r.text);
    assert.deepEqual(r.rooms, ["support-chat"], r.text);
    r = await control(alice, "rooms");
    assert.ok(r.ok, r.text);
    assert.deepEqual(r.rooms, ["support-chat"], r.text);
    assert.ok(r.text.includes("bob@acme is in: support-chat"), r.text);
    r = await control(alice, "to-room", { event: "message", data: '{"text":"hi room"}' });
    assertReached(r, 1, 1);
    // A room nobody is in, and a tenant nobody is connected in: sent, reached nobody, and the page
    // says so differently from a send that reached someone.
    r = await control(alice, "to-room", { room: "nobody-here", event: "message", data: '{"text":"anyone?"}' });
    assert.ok(r.ok && r.tone === "none" && r.total === 0, r.text);
    assert.ok(r.text.includes("nobody is in this room"), r.text);
    r = await control(alice, "to-tenant", { tenant: "initech", event: "message", data: '{"text":"anyone?"}' });
    assert.ok(r.ok && r.tone === "none" && r.total === 0, r.text);
    assert.ok(r.text.includes("nobody received it"), r.text);
    // One transport only: just the SSE streams of tenant acme.
    await alice.selectOption("#ctl-transport", "sse");
    r = await control(alice, "to-tenant", { tenant: "acme", event: "message", data: '{"sse":"only"}' });
    assertReached(r, 2, 0);
    await alice.selectOption("#ctl-transport", "both");
    // A marker to everyone after the room message: once it has arrived, anything addressed to a
    // panel earlier has arrived too (one connection keeps order), so the logs below are final.
    r = await control(alice, "to-all", { event: "notification", data: '{"marker":true}' });
    assertReached(r, 2, 2);
    for (const page of [alice, bob]) {
      for (const panel of ["sse", "sio"]) await waitLog(page, panel, "notification", { marker: true });
    }

    const marker = ["notification", { marker: true }];
    const sseOnly = ["message", { sse: "only" }];
    for (const panel of ["sse", "sio"]) {
      const only = panel === "sse" ? [sseOnly] : [];
      assert.deepEqual(pairs(await logOf(alice, panel)), [["notification", { to: "alice" }], ...only, marker], `alice ${panel}`);
      assert.deepEqual(
        pairs(await logOf(bob, panel)),
        [["notification", { to: "bob" }], ["message", { text: "hi room" }], ...only, marker],
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
    // Every log line has a time stamp; the SSE id is not part of the visible text; JSON wraps at
    // word boundaries (never mid-word).
    const look = await alice.evaluate(() => {
      const lis = [...document.querySelectorAll("#sse-log li, #sio-log li, #activity-log li")];
      const pre = document.querySelector("#sse-log pre.json");
      return {
        lines: lis.length,
        stamped: lis.filter((li) => /^\d\d:\d\d:\d\d\.\d{3}$/.test(li.querySelector("time")?.textContent ?? "")).length,
        idShown: [...document.querySelectorAll("#sse-log li")].some((li) => li.innerText.includes(li.dataset.id)),
        wordBreak: getComputedStyle(pre).wordBreak,
        whiteSpace: getComputedStyle(pre).whiteSpace,
      };
    });
    assert.ok(look.lines > 0);
    assert.equal(look.stamped, look.lines, "every log line has a time stamp");
    assert.equal(look.idShown, false, "SSE ids are not shown in the text");
    assert.notEqual(look.wordBreak, "break-all");
    assert.equal(look.whiteSpace, "pre-wrap");

    // An ack request to bob: his Socket.IO panel answers; the outcome shows on alice's page.
    r = await control(alice, "ask", { user: "bob", event: "notification", data: '{"q":1}' });
    assert.ok(r.ok && r.text.includes('"seen":true'), r.text);

    // Typed errors reach the page; nothing is sent.
    r = await control(alice, "to-room", { room: "", event: "message", data: "{}" });
    assert.ok(!r.ok && r.tone === "error" && r.text.includes("InvalidRoom"), r.text);
    r = await control(alice, "to-user", { user: "bob", event: "connect", data: "{}" });
    assert.ok(!r.ok && r.text.includes("InvalidEvent"), r.text);
    r = await control(alice, "to-user", { event: "notification", data: "{not json" });
    assert.ok(!r.ok && r.text.includes("not valid JSON"), r.text);

    // Leaving works, and read-your-writes: the next `rooms` no longer lists it.
    r = await control(alice, "leave", { user: "bob", room: "support-chat" });
    assert.ok(r.ok, r.text);
    assert.ok(r.text.includes("bob@acme left support-chat"), r.text);
    assert.deepEqual(r.rooms, [], r.text);
    r = await control(alice, "rooms");
    assert.ok(r.ok, r.text);
    assert.deepEqual(r.rooms, [], r.text);
    assert.ok(r.text.includes("bob@acme is in no rooms"), r.text);

    // Clear empties a log.
    await alice.click("button[data-clear=sse-log]");
    assert.equal(await alice.$$eval("#sse-log li", (lis) => lis.length), 0);

    // Bob's tab closes: alice's presence follows.
    await bob.close();
    await waitPresence(alice, 1, 1);
    await alice.close();

    assert.deepEqual(errors, [], "no page errors");
  });

  test("offline and back: Socket.IO recovers the session and replays what it missed; SSE resumes", T, async () => {
    const page = await open("?user=dave&tenant=acme");
    await waitPresence(page, 1, 1);
    const to = (n) => control(page, "to-user", { user: "dave", tenant: "acme", event: "notification", data: JSON.stringify({ n }) });
    const increasing = (ids) => {
      for (const id of ids) assert.match(id, /^\d+:\d+$/);
      const seqs = ids.map((id) => BigInt(id.split(":")[1]));
      assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `ids increase: ${ids}`);
    };
    // One event first, so the panel has an offset to come back with.
    assertReached(await to(0), 1, 1);
    await waitLog(page, "sio", "notification", { n: 0 });

    // The Socket.IO panel goes offline; the Send form keeps working (over a stand-in connection)
    // and the panel's socket, waiting on the server, is not reached.
    await page.click("#sio-network");
    await page.waitForSelector("#sio-state[data-state=offline]");
    assert.equal(await page.textContent("#sio-network"), "back online");
    assert.match(await page.textContent("#sio-recovery"), /offline: the server keeps this session 60 s/);
    for (const n of [1, 2, 3]) assertReached(await to(n), 1, 0);
    await waitLog(page, "sse", "notification", { n: 3 });
    assert.equal((await logOf(page, "sio")).length, 1, "nothing reaches the panel while it is offline");

    // Back online: the same session, and the three missed events, marked as replayed.
    await page.click("#sio-network");
    await page.waitForSelector("#sio-recovery[data-recovered=true]");
    assert.equal(await page.textContent("#sio-recovery"), "recovered ✓ (3 missed events replayed)");
    assert.equal(await page.textContent("#sio-network"), "go offline");
    assertReached(await to(4), 1, 1);
    await waitLog(page, "sio", "notification", { n: 4 });
    let log = await logOf(page, "sio");
    assert.deepEqual(log.map((e) => e.data), [0, 1, 2, 3, 4].map((n) => ({ n })), "each once, in order");
    assert.deepEqual(log.map((e) => e.replayed), [false, true, true, true, false]);
    // Every event came with its offset, which the page keeps but never shows as data.
    increasing(log.map((e) => e.id));
    const offsetShown = await page.$$eval("#sio-log li", (lis) =>
      lis.some((li) => li.innerText.includes(li.dataset.id) || li.dataset.data.includes(li.dataset.id)),
    );
    assert.equal(offsetShown, false, "no offset shown as data");
    // The stand-in connection has left.
    await waitPresence(page, 1, 1);

    // The SSE panel goes offline and back: a new EventSource after the last id seen.
    await page.click("#sse-network");
    await page.waitForSelector("#sse-state[data-state=offline]");
    await waitPresence(page, 0, 1);
    for (const n of [5, 6]) assertReached(await to(n), 0, 1);
    await page.click("#sse-network");
    await page.waitForSelector("#sse-recovery[data-resumed=true]");
    assert.equal(await page.textContent("#sse-recovery"), "resumed ✓ (2 missed events)");
    assertReached(await to(7), 1, 1);
    await waitLog(page, "sse", "notification", { n: 7 });
    log = await logOf(page, "sse");
    assert.deepEqual(log.map((e) => e.data), [0, 1, 2, 3, 4, 5, 6, 7].map((n) => ({ n })), "each once, in order");
    assert.deepEqual(log.map((e) => e.replayed), [false, false, false, false, false, true, true, false]);
    increasing(log.map((e) => e.id));

    // A session the server does not know (here: a pid it never gave out) comes back fresh.
    await page.evaluate(() => (sio.pid = "not-a-session"));
    await page.click("#sio-network");
    await page.waitForSelector("#sio-state[data-state=offline]");
    await page.click("#sio-network");
    await page.waitForSelector("#sio-recovery[data-recovered=false]");
    assert.match(await page.textContent("#sio-recovery"), /^fresh session/);
    await page.waitForSelector("#sio-state[data-state=connected]");
    await waitPresence(page, 1, 1);
    await page.close();
    assert.deepEqual(errors, [], "no page errors");
  });

  const SHOT = serverName === "demo" ? process.env.DEMO_SCREENSHOT : undefined;
  test("screenshot of the demo", { ...T, skip: SHOT ? false : "set DEMO_SCREENSHOT=path.png to write one (examples/demo only)" }, async () => {
    const viewport = { width: 1280, height: 900 };
    const alice = await open("", viewport);
    const bob = await open("?user=bob&tenant=globex", viewport);
    await waitPresence(alice, 2, 2);
    const steps = [
      ["to-user", { user: "alice", tenant: "acme", event: "notification", data: '{"subject": "Welcome back", "unread": 3}' }],
      ["to-tenant", { event: "announcement", data: '{"text": "Release 2.4 goes out at 17:00, please wrap up your reviews before then"}' }],
      ["join", { room: "support-chat" }],
      ["to-room", { event: "message", data: '{"from": "carol", "text": "Can someone look at ticket 4521?"}' }],
      // The Socket.IO panel misses the alert while offline, and gets it back with its session.
      ["offline", "#sio-state[data-state=offline]"],
      ["to-all", { event: "system:alert", data: '{"level": "info", "text": "Maintenance tonight, 22:00 to 23:00 UTC"}' }],
      ["online", "#sio-recovery[data-recovered=true]"],
      ["to-room", { room: "billing", event: "message", data: '{"text": "anyone here?"}' }],
    ];
    for (const [button, fields] of steps) {
      if (typeof fields === "string") {
        await alice.click("#sio-network");
        await alice.waitForSelector(fields);
        continue;
      }
      const r = await control(alice, button, fields);
      assert.ok(r.ok, r.text);
    }
    for (const panel of ["sse", "sio"]) {
      await waitLog(alice, panel, "system:alert", { level: "info", text: "Maintenance tonight, 22:00 to 23:00 UTC" });
    }
    await alice.fill("#ctl-room", "support-chat");
    await alice.fill("#ctl-data", '{"subject": "Hello", "body": "World"}');
    await alice.fill("#ctl-event", "notification");
    await alice.evaluate(() => document.activeElement?.blur());
    await alice.mouse.move(0, 0);
    await alice.waitForTimeout(700); // the arrival highlight fades
    await alice.screenshot({ path: path.resolve(SHOT), timeout: WAIT });
    await bob.close();
    await alice.close();
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
