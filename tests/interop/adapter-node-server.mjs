// A plain Node socket.io 4.8 server on `@socket.io/redis-adapter` 8.3 (node-redis v4 clients):
// the Node side of a mixed cluster in which a tidings interop node (`SIO_ADAPTER_URL`) joins the
// Node nodes (tests/interop/adapter.test.mjs starts one of each on its own redis-server).
//
// Run alone: `cd tests/interop && PORT=3100 REDIS_URL=redis://127.0.0.1:6379/ node adapter-node-server.mjs`
// Environment: PORT (default 3100; it listens on 127.0.0.1), REDIS_URL (default
// redis://127.0.0.1:6379/), KEY (the adapter's channel prefix, default "socket.io"),
// REQUESTS_TIMEOUT (the adapter's requestsTimeout in ms, default 3000). It prints
// `adapter-node-server listening on http://127.0.0.1:<port> (...)` once it listens.
//
// Namespaces `/` and `/custom` are the cluster's. A socket connected with `auth: {user, tenant}`
// (tenant "" when missing) gets `socket.data = {user, tenant}` and, in `/` only, joins the rooms
// by which tidings names its users and tenants: `tidings:user:` + JSON.stringify([tenant, user])
// and `tidings:tenant:` + JSON.stringify(tenant), so that tidings' to_user / to_tenant reach it.
// Its events: `join` (a room name, or `{room}`; acks true) joins a room; `broadcast {rooms,
// event, args}` is `socket.broadcast.emit` (or `socket.to(rooms).emit` when `rooms` is not empty),
// acked after the emit.
//
// What another server (the tidings node) sends with `serverSideEmit`, to `ping-node` and
// `ping-node-silent` in either namespace, is recorded as `{nsp, event, args, withAck}` for
// `ctl:server-side-log`; with an ack, `ping-node` answers `{from: "node", args}` and
// `ping-node-silent` never answers.
//
// Control events, on namespace `/ctl` (so that the control socket is in nobody's audience), each
// acked with its result, or `{error}` when the call threw. `nsp` defaults to "/", `rooms` and
// `except` to [] (everyone):
//   ctl:emit {nsp, rooms, except, event, args, volatile}       → {ok: true} (Buffers in args stay binary)
//   ctl:fetch {nsp, rooms, except}                              → [{id, rooms, data, handshake, local}]
//                                                                 (`handshake`: whether it is an object)
//   ctl:sockets-join {nsp, rooms, except, room}                 → {ok: true}
//   ctl:sockets-leave {nsp, rooms, except, room}                → {ok: true}
//   ctl:disconnect {nsp, rooms, except, close}                  → {ok: true}
//   ctl:all-rooms {nsp}                                         → [room, ...]
//   ctl:server-side-emit {nsp, event, args}                     → {ok: true}
//   ctl:server-side-emit-ack {nsp, event, args}                 → {responses} or {error, responses}
//   ctl:emit-with-ack {nsp, rooms, except, event, args, timeout} → {responses} or {error, responses}
//   ctl:local {}                                                → this server's own socket ids, by namespace
//   ctl:server-side-log {}                                      → what serverSideEmit brought, in order
// The join/leave/disconnect calls also act on this server's own sockets right away (the adapter
// itself applies them only when its request comes back from Redis), so that an emit that follows
// the ack finds them done here; on the other nodes they act when the request arrives.
import http from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const PORT = Number(process.env.PORT ?? 3100);
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379/";
const KEY = process.env.KEY ?? "socket.io";
const REQUESTS_TIMEOUT = Number(process.env.REQUESTS_TIMEOUT ?? 3000);
const NAMESPACES = ["/", "/custom"];

/** The rooms by which tidings names a user and a tenant (its "reserved rooms"). */
const userRoom = (tenant, user) => "tidings:user:" + JSON.stringify([tenant, user]);
const tenantRoom = (tenant) => "tidings:tenant:" + JSON.stringify(tenant);

const pub = createClient({ url: REDIS_URL });
const sub = pub.duplicate();
for (const [name, client] of [["pub", pub], ["sub", sub]]) {
  client.on("error", (e) => console.error(`adapter-node-server: redis ${name} client: ${e.message}`));
}
await Promise.all([pub.connect(), sub.connect()]);

const httpServer = http.createServer();
const io = new Server(httpServer, {
  adapter: createAdapter(pub, sub, { key: KEY, requestsTimeout: REQUESTS_TIMEOUT }),
  pingInterval: 1000,
  pingTimeout: 1000,
});

/** What the other servers' `serverSideEmit`s brought here (`ctl:server-side-log`). */
const serverSideLog = [];

const list = (v) => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);

for (const name of NAMESPACES) {
  io.of(name).on("connection", (socket) => {
    const auth = socket.handshake.auth ?? {};
    if (typeof auth.user === "string") {
      const tenant = typeof auth.tenant === "string" ? auth.tenant : "";
      socket.data = { user: auth.user, tenant };
      if (name === "/") socket.join([userRoom(tenant, auth.user), tenantRoom(tenant)]);
    }
    socket.on("join", (req, ack) => {
      socket.join(typeof req === "string" ? req : req?.room);
      if (typeof ack === "function") ack(true);
    });
    socket.on("broadcast", (req, ack) => {
      const rooms = list(req?.rooms);
      const op = rooms.length ? socket.to(rooms) : socket.broadcast;
      op.emit(req?.event, ...list(req?.args));
      if (typeof ack === "function") ack(true);
    });
  });
  // Another server's serverSideEmit (with an ack: the adapter passes a callback last).
  for (const event of ["ping-node", "ping-node-silent"]) {
    io.of(name).on(event, (...args) => {
      const ack = typeof args.at(-1) === "function" ? args.pop() : null;
      serverSideLog.push({ nsp: name, event, args, withAck: ack !== null });
      if (ack && event === "ping-node") ack({ from: "node", args });
    });
  }
}

/** `io.of(nsp)` narrowed to `rooms` and `except` (everyone when both are empty). */
function target(req, { local = false } = {}) {
  let op = io.of(req?.nsp ?? "/");
  if (local) op = op.local;
  const rooms = list(req?.rooms);
  const except = list(req?.except);
  if (rooms.length) op = op.to(rooms);
  if (except.length) op = op.except(except);
  return op;
}

const handlers = {
  "ctl:emit": (req) => {
    let op = target(req);
    if (req?.volatile) op = op.volatile;
    op.emit(req.event, ...list(req.args));
    return { ok: true };
  },
  "ctl:fetch": async (req) => {
    const sockets = await target(req).fetchSockets();
    const here = io.of(req?.nsp ?? "/").sockets;
    return sockets.map((s) => ({
      id: s.id,
      rooms: [...s.rooms],
      data: s.data,
      handshake: s.handshake !== null && typeof s.handshake === "object",
      local: here.has(s.id),
    }));
  },
  "ctl:sockets-join": (req) => {
    target(req, { local: true }).socketsJoin(req.room);
    target(req).socketsJoin(req.room);
    return { ok: true };
  },
  "ctl:sockets-leave": (req) => {
    target(req, { local: true }).socketsLeave(req.room);
    target(req).socketsLeave(req.room);
    return { ok: true };
  },
  "ctl:disconnect": (req) => {
    target(req, { local: true }).disconnectSockets(!!req?.close);
    target(req).disconnectSockets(!!req?.close);
    return { ok: true };
  },
  "ctl:all-rooms": async (req) => [...(await io.of(req?.nsp ?? "/").adapter.allRooms())],
  "ctl:server-side-emit": (req) => {
    io.of(req?.nsp ?? "/").serverSideEmit(req.event, ...list(req.args));
    return { ok: true };
  },
  "ctl:server-side-emit-ack": async (req) => {
    try {
      return { responses: await io.of(req?.nsp ?? "/").serverSideEmitWithAck(req.event, ...list(req.args)) };
    } catch (e) {
      return { error: e.message, responses: e.responses ?? null };
    }
  },
  "ctl:emit-with-ack": async (req) => {
    try {
      return { responses: await target(req).timeout(req?.timeout ?? 3000).emitWithAck(req.event, ...list(req.args)) };
    } catch (e) {
      return { error: e.message, responses: e.responses ?? null };
    }
  },
  "ctl:local": () => Object.fromEntries(NAMESPACES.map((n) => [n, [...io.of(n).sockets.keys()]])),
  "ctl:server-side-log": () => serverSideLog,
};

io.of("/ctl").on("connection", (socket) => {
  for (const [event, handler] of Object.entries(handlers)) {
    socket.on(event, async (req, ack) => {
      let result;
      try {
        result = await handler(req ?? {});
      } catch (e) {
        result = { error: e?.message ?? String(e) };
      }
      if (typeof ack === "function") ack(result);
    });
  }
});

httpServer.listen(PORT, "127.0.0.1", () => {
  console.log(`adapter-node-server listening on http://127.0.0.1:${PORT} (redis ${REDIS_URL}, key ${KEY})`);
});

const stop = () => {
  io.close();
  Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
