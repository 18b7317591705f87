// node-redis 5's client-side cache (RESP: 3, clientSideCache) on a session:
// the second read of a key is served from the client's memory (the
// backends' INFO commandstats count one GET, one HGETALL), and a write by
// each writer (ports of a proxy or a Redis that write the same key) is seen
// by the next read within a bounded time. Prints what it saw as JSON;
// tests/it/tracking.rs runs it through the proxy and directly on Redis.
// Usage: node client_side_cache.cjs PORT BACKEND_PORTS WRITER_PORTS KEY
const { createClient, BasicClientSideCache } = require("redis5");

const [port, backendPorts, writerPorts, key] = process.argv.slice(2);

async function connect(p, options = {}) {
  const c = createClient({ url: `redis://127.0.0.1:${p}`, ...options });
  await c.connect();
  return c;
}

async function calls(backends, command) {
  let total = 0;
  for (const b of backends) {
    const info = await b.info("commandstats");
    const m = info.match(new RegExp(`cmdstat_${command}:calls=(\\d+)`));
    total += m ? Number(m[1]) : 0;
  }
  return total;
}

async function eventually(read, want, limit = 5000) {
  const until = Date.now() + limit;
  while (Date.now() < until) {
    if ((await read()) === want) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return (await read()) === want;
}

async function main() {
  const backends = await Promise.all(backendPorts.split(",").map((p) => connect(p)));
  const writers = await Promise.all(writerPorts.split(",").map((p) => connect(p)));
  const cache = new BasicClientSideCache();
  const c = await connect(port, { RESP: 3, clientSideCache: cache });
  const hkey = `${key}:hash`;
  await writers[0].set(key, "v0");
  await writers[0].del(hkey);
  await writers[0].hSet(hkey, { user: "bob", seen: "1" });
  const seen = {};
  let before = await calls(backends, "get");
  seen.reads = [await c.get(key), await c.get(key)];
  seen.get_calls_for_two_reads = (await calls(backends, "get")) - before;
  for (const [i, writer] of writers.entries()) {
    const value = `v${i + 1}`;
    await writer.set(key, value);
    seen[`writer_${i}_seen`] = await eventually(() => c.get(key), value);
    before = await calls(backends, "get");
    await c.get(key);
    await c.get(key);
    seen[`writer_${i}_then_cached`] = (await calls(backends, "get")) - before;
  }
  before = await calls(backends, "hgetall");
  const h1 = await c.hGetAll(hkey);
  const h2 = await c.hGetAll(hkey);
  seen.hash_reads_equal = JSON.stringify(h1) === JSON.stringify(h2);
  seen.hgetall_calls_for_two_reads = (await calls(backends, "hgetall")) - before;
  await writers[writers.length - 1].hSet(hkey, "seen", "2");
  seen.hash_change_seen = await eventually(async () => (await c.hGetAll(hkey)).seen, "2");
  const sorted = Object.fromEntries(Object.entries(seen).sort(([a], [b]) => (a < b ? -1 : 1)));
  console.log(JSON.stringify(sorted));
  for (const x of [...backends, ...writers, c]) await x.quit();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
