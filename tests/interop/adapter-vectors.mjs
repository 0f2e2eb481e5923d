// Prints the wire vectors of src/cluster/adapter_wire.rs: what the real @socket.io/redis-adapter
// 8.3.0 and @socket.io/redis-emitter 5.1.0 publish on Redis, one line per message:
// `name<TAB>channel<TAB>hex of the payload`.
//
// Regenerate (from the repository root, after `npm ci` in tests/interop):
//   node tests/interop/adapter-vectors.mjs > src/cluster/adapter_vectors.txt
//
// No Redis: the adapters get fake node-redis v4 clients on one in-memory bus that does what Redis
// pub/sub does for them (SUBSCRIBE, PSUBSCRIBE with a trailing `*`, PUBLISH to every matching
// subscriber, PUBSUB NUMSUB). Two socket.io servers, A and B, each with a real socket.io-client
// on loopback, so requests get real responses from B (fetchSockets, allRooms, serverSideEmit
// acks, broadcast acks). B publishes responses on the specific response channel
// (`publishOnSpecificResponseChannel`), A on the shared one.
//
// Kept stable between runs: uid2 (the adapters' uids and request ids) and the socket.io socket
// ids are counters; B's socket gets a fixed handshake time/issued/headers on connection (the
// rest of the handshake is real).
//
// Rows named `legacy_*` are requests that adapter 8.3.0 still answers but no longer sends (older
// adapters did): they are built here with JSON.stringify in the exact shape the adapter's
// `onrequest` reads (`{uid, requestId, type, rooms}` for SOCKETS, `{uid, requestId, type, sid,
// room}` / `{..., sid, close}` for the by-socket join/leave/disconnect); the responses to them
// are real.
import { createRequire } from "node:module";
import http from "node:http";
import path from "node:path";

const require = createRequire(import.meta.url);

// Deterministic ids, patched into the module caches before the adapter and socket.io load.
let uidCounter = 0;
const uid2Path = require.resolve("uid2", {
  paths: [path.dirname(require.resolve("@socket.io/redis-adapter"))],
});
require.cache[uid2Path] = {
  id: uid2Path,
  filename: uid2Path,
  loaded: true,
  exports: (len) => `u${String(++uidCounter).padStart(len - 1, "0")}`,
};
const sioDir = path.dirname(require.resolve("socket.io"));
const { base64id } = require(path.join(sioDir, "contrib", "base64id.js"));
let sidCounter = 0;
base64id.generateId = () => `sid${String(++sidCounter).padStart(17, "0")}`;

const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { Emitter } = require("@socket.io/redis-emitter");
const { io: connect } = require("socket.io-client");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the fake Redis --------------------------------------------------------------------------
const rows = [];
let label = "setup";
const counts = new Map();
const subs = []; // { channel } or { prefix } (pattern `prefix*`), with a listener
function publish(channel, msg) {
  const payload = Buffer.isBuffer(msg) ? msg : Buffer.from(msg, "utf8");
  const n = (counts.get(label) ?? 0) + 1;
  counts.set(label, n);
  rows.push(`${label}.${n}\t${channel}\t${payload.toString("hex")}`);
  let receivers = 0;
  for (const s of subs) {
    const hit = s.channel !== undefined ? s.channel === channel : channel.startsWith(s.prefix);
    if (hit) {
      receivers++;
      setImmediate(() => s.listener(Buffer.from(payload), channel));
    }
  }
  return Promise.resolve(receivers);
}
function fakeClient() {
  return {
    // node-redis v4 shape: the adapter checks pSubscribe (and sSubscribe for PUBSUB).
    pSubscribe(pattern, listener) {
      if (!pattern.endsWith("*")) throw new Error(`unexpected pattern ${pattern}`);
      subs.push({ prefix: pattern.slice(0, -1), listener });
    },
    subscribe(channels, listener) {
      for (const channel of [].concat(channels)) subs.push({ channel, listener });
    },
    sSubscribe() {},
    pUnsubscribe() {},
    unsubscribe() {},
    on() {},
    off() {},
    publish,
    sendCommand(args) {
      if (args[0] !== "PUBSUB" || args[1] !== "NUMSUB") throw new Error(`unexpected ${args}`);
      const n = subs.filter((s) => s.channel === args[2]).length;
      return Promise.resolve([args[2], String(n)]);
    },
  };
}

// ---- two servers, one client each ------------------------------------------------------------
async function server(opts) {
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(fakeClient(), fakeClient(), { requestsTimeout: 500, ...opts }),
  });
  io.of("/admin");
  await new Promise((r) => httpServer.listen(0, "127.0.0.1", r));
  return { io, httpServer, port: httpServer.address().port };
}
const A = await server({});
const B = await server({ publishOnSpecificResponseChannel: true });

let socketA;
A.io.on("connection", (s) => {
  socketA = s;
  s.join("room1");
});
let socketB;
B.io.on("connection", (s) => {
  socketB = s;
  s.handshake.time = "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)";
  s.handshake.issued = 0;
  s.handshake.headers = { host: "localhost" };
  s.data = { user: "bob" };
  s.join(["room1", "room2"]);
});
B.io.on("ping", () => {});
B.io.on("ask", (n, cb) => cb({ got: n }));

function client(port, auth) {
  const c = connect(`http://127.0.0.1:${port}`, { transports: ["websocket"], auth, forceNew: true });
  return new Promise((r) => c.on("connect", () => r(c)));
}
const clientA = await client(A.port, {});
const clientB = await client(B.port, { token: "t" });
clientB.on("ask", (n, cb) => cb(n + 1));
clientB.on("askbin", (cb) => cb(Buffer.from([0xde, 0xad])));
clientA.on("ask", (n, cb) => cb(n));
clientA.on("askbin", (cb) => cb(null));
await sleep(50);

/** Runs `op` under `name` and waits until the bus is quiet (responses included). */
async function row(name, op) {
  label = name;
  try {
    await op();
  } catch {
    // A request that times out (nobody answers) is still a vector.
  }
  await sleep(60);
}

const io = A.io;
const key = "socket.io";

// ---- the adapter: broadcasts -----------------------------------------------------------------
await row("emit_all", () => io.emit("hello", "world", 1));
await row("emit_room", () => io.to("room1").emit("hello", { a: 1 }));
await row("emit_two_rooms", () => io.to(["room1", "room2"]).emit("hello", [1, 2.5, -3]));
await row("emit_except", () => io.except("room3").emit("hello", null, true, false));
await row("emit_room_except", () => io.to("room1").except(["room2", "room3"]).emit("hello"));
await row("emit_volatile", () => io.volatile.emit("tick", 1));
await row("emit_compress_false", () => io.compress(false).emit("big", "x".repeat(40)));
await row("emit_volatile_compress", () => io.volatile.compress(true).emit("both"));
await row("emit_compress_volatile", () => io.compress(true).volatile.emit("both"));
await row("emit_binary", () =>
  io.emit("bin", Buffer.from([1, 2, 3]), { nested: Buffer.from("hi"), n: [Buffer.alloc(0)] }),
);
await row("emit_unicode", () => io.emit("ünï", "日本語 🎉", { "ключ": "\u0000\n\"" }));
await row("emit_numbers", () => io.emit("n", 0, 127, 128, 65536, 2 ** 32, -1, -33, -40000, 1.5, 2 ** 53));
await row("emit_nsp", () => io.of("/admin").emit("x", 1));
await row("emit_nsp_room", () => io.of("/admin").to("r").emit("x", 2));
await row("emit_numeric_room", () => io.to(42).emit("n"));
await row("emit_numeric_rooms", () => io.to([1, "two"]).except(3).emit("n"));
await row("emit_hash_room", () => io.to("a#b").emit("h"));
await row("socket_broadcast", () => socketA.broadcast.emit("b", 1));
await row("socket_to_room", () => socketA.to("room2").emit("b", 2));
await row("socket_volatile_broadcast", () => socketA.volatile.broadcast.emit("b", 3));

// ---- the adapter: requests and the responses B sends ---------------------------------------
await row("ack_all", () => io.timeout(300).emitWithAck("ask", 1));
await row("ack_room_binary", () => io.to("room1").timeout(300).emitWithAck("askbin"));
await row("fetch_all", () => io.fetchSockets());
await row("fetch_room_except", () => io.in("room1").except("room3").fetchSockets());
await row("join_all", () => io.socketsJoin("room9"));
await row("join_room", () => io.in("room1").socketsJoin(["r2", "r3"]));
await row("leave_all", () => io.socketsLeave("room9"));
await row("leave_except", () => io.except("x").socketsLeave(["r2", "r3"]));
await row("disconnect_room_close", () => io.in("nobody").disconnectSockets(true));
await row("disconnect_except", () => io.except(["room1", "room2"]).disconnectSockets());
await row("server_side_emit", () => io.serverSideEmit("ping", 1, "two"));
await row("server_side_emit_ack", () => io.serverSideEmitWithAck("ask", 2));
await row("all_rooms", () => io.of("/").adapter.allRooms());
await row("fetch_nsp", () => io.of("/admin").fetchSockets());

// ---- requests older adapters sent (built here, see the top), answered by A and B ------------
const legacy = (obj) => publish(`${key}-request#/#`, JSON.stringify(obj));
await row("legacy_sockets", () =>
  legacy({ uid: "legacy", requestId: "lreq01", type: 0, rooms: ["room1"] }),
);
await row("legacy_join_sid", () =>
  legacy({ uid: "legacy", requestId: "lreq02", type: 2, sid: socketB.id, room: "r7" }),
);
await row("legacy_leave_sid", () =>
  legacy({ uid: "legacy", requestId: "lreq03", type: 3, sid: socketB.id, room: "r7" }),
);

// ---- the emitter ----------------------------------------------------------------------------
const emitter = new Emitter(fakeClient());
await row("emitter_all", () => emitter.emit("e", 1, "two"));
await row("emitter_room", () => emitter.to("room1").emit("e"));
await row("emitter_rooms_except", () => emitter.to(["room1", "room2"]).except("room3").emit("e"));
await row("emitter_nsp", () => emitter.of("/admin").emit("e", { k: "v" }));
await row("emitter_nsp_no_slash", () => emitter.of("admin").to("r").emit("e"));
await row("emitter_volatile_compress", () => emitter.volatile.compress(false).emit("e"));
await row("emitter_binary", () => emitter.emit("e", Buffer.from("bytes")));
await row("emitter_date", () => emitter.emit("e", new Date(Date.UTC(2024, 1, 29, 12, 0, 0, 250))));
await row("emitter_join", () => emitter.socketsJoin("room9"));
await row("emitter_join_room", () => emitter.in("room1").socketsJoin(["r2"]));
await row("emitter_leave", () => emitter.except("room2").socketsLeave("room9"));
await row("emitter_server_side_emit", () => emitter.serverSideEmit("ping", { a: [1] }));

await row("emitter_disconnect_close", () => emitter.in("nobody").disconnectSockets(true));
// Last: these two disconnect B's socket, then every socket.
await row("legacy_disconnect_sid", () =>
  legacy({ uid: "legacy", requestId: "lreq04", type: 4, sid: socketB.id, close: false }),
);
await row("emitter_disconnect", () => emitter.disconnectSockets());

console.log(`# Generated by tests/interop/adapter-vectors.mjs (@socket.io/redis-adapter 8.3.0,`);
console.log(`# @socket.io/redis-emitter 5.1.0, socket.io 4.8.4); regenerate with`);
console.log(`#   node tests/interop/adapter-vectors.mjs > src/cluster/adapter_vectors.txt`);
console.log(`# name<TAB>channel<TAB>payload as hex`);
for (const r of rows) console.log(r);

clientA.close();
clientB.close();
A.io.close();
B.io.close();
process.exit(0);
