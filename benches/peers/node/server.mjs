// The official socket.io 4.8 server, as a peer of scripts/bench-peers.sh (fan-out, latency and
// memory of tidings next to its peers): the same contract as examples/bench_server.rs.
// Socket.IO on /socket.io/ (defaults: pingInterval 25 s, polling and websocket), 127.0.0.1:$PORT.
//
// Client event `bench:burst {count, size, rate}`: broadcast `count` `tick` events to every socket
// with `{i, t, pad}` — `t` the send time in µs since the UNIX epoch, `pad` "x" × size. rate 0:
// back to back in one synchronous loop (what `io.emit` in a loop does in an application; ws writes
// to the sockets as it goes); otherwise `rate` broadcasts per second on timers, aimed at
// start + i/rate so late timers do not add drift. The ack answers {ok: true} at once.
//
// Client event `bench:ack ...args` with an ack: the handler answers at once with the same args.
// Single-threaded: scripts/bench-peers.sh pins it to one core.

import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 3000);
const MAX_COUNT = 10_000_000;
const MAX_RATE = 1_000_000;
const MAX_SIZE = 1_000_000;

const httpServer = createServer();
const io = new Server(httpServer, { serveClient: false });

// Microseconds since the epoch with sub-millisecond resolution (Date.now() has only ms).
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

const num = (v, max) => (Number.isInteger(v) && v > 0 ? Math.min(v, max) : 0);

function burst({ count, size, rate }) {
  const pad = "x".repeat(size);
  if (rate === 0) {
    for (let i = 0; i < count; i++) io.emit("tick", { i, t: nowUs(), pad });
    return;
  }
  const start = performance.now();
  let i = 0;
  const step = () => {
    while (i < count && performance.now() >= start + (i * 1000) / rate) {
      io.emit("tick", { i, t: nowUs(), pad });
      i++;
    }
    if (i < count) setTimeout(step, Math.max(0, start + (i * 1000) / rate - performance.now()));
  };
  step();
}

// Bursts run one after another, like the other peers' burst thread / task.
let queue = Promise.resolve();

io.on("connection", (socket) => {
  socket.on("bench:ack", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack(...args);
  });
  socket.on("bench:burst", (req, ack) => {
    const job = {
      count: num(req?.count, MAX_COUNT),
      size: num(req?.size, MAX_SIZE),
      rate: num(req?.rate, MAX_RATE),
    };
    if (typeof ack === "function") ack({ ok: true });
    queue = queue.then(
      () =>
        new Promise((resolve) => {
          burst(job);
          // A paced burst ends after count/rate seconds; wait for it before the next one.
          const span = job.rate ? (job.count * 1000) / job.rate : 0;
          setTimeout(resolve, span);
        }),
    );
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`node socket.io server listening on 127.0.0.1:${port}`);
});

process.on("SIGTERM", () => process.exit(0));
