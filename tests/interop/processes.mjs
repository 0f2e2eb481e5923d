// Child processes of the interop tests that start their own servers (cluster.test.mjs,
// adapter.test.mjs): finding redis-server, free loopback ports, starting a process and seeing it
// listen, killing it. Every process started here is SIGKILLed when the test file's process exits.

import { spawn } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { within, sleep } from "./helpers.mjs";

/** Starting a process (redis-server, a node) and seeing it listen. */
export const START_WAIT = 10000;

const children = new Set();
// A last resort if the run is cut short before `after()`: no process outlives the file.
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** The redis-server binary: REDIS_SERVER, or `redis-server` on the PATH; null when there is none. */
export function findRedis() {
  if (process.env.REDIS_SERVER) return existsSync(process.env.REDIS_SERVER) ? process.env.REDIS_SERVER : null;
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/bin", "/usr/sbin", "/usr/local/bin"];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, "redis-server");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return null;
}

/** `n` distinct free loopback ports (all bound at once, then released). */
export async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise((resolve, reject) => {
        s.once("error", reject);
        s.listen(0, "127.0.0.1", resolve);
      });
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

export function portOpen(port) {
  return new Promise((resolve) => {
    const c = net.connect({ host: "127.0.0.1", port });
    c.once("connect", () => (c.destroy(), resolve(true)));
    c.once("error", () => resolve(false));
  });
}

/** Spawns `bin`, keeps the tail of its output; resolves once 127.0.0.1:`port` accepts connections. */
export async function startProcess(name, bin, args, env, port) {
  const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  const keep = (d) => (output = (output + d).slice(-4000));
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = null;
  const exit = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      exited = `exited (${code ?? signal})`;
      children.delete(child);
      resolve();
    }),
  );
  child.once("error", (e) => (exited = `failed to start: ${e.message}`));
  const deadline = Date.now() + START_WAIT;
  while (!(await portOpen(port))) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${name} ${exited ?? `did not listen on 127.0.0.1:${port} within ${START_WAIT} ms`}; output:\n${output}`);
    }
    await sleep(50);
  }
  return {
    name,
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    output: () => output,
    get exited() {
      return exited;
    },
    /** SIGKILL, then waits (bounded) for the exit. */
    async kill() {
      if (exited) return;
      child.kill("SIGKILL");
      await within(START_WAIT, exit, `${name} to exit`);
    },
  };
}
