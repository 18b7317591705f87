// connect-redis 7 (express-session's Redis store) with node-redis 4 or
// ioredis 5, pointed at 127.0.0.1:PORT: sets, reads, touches, lists
// (all, length, ids: SCAN and MGET), destroys and clears sessions, and
// prints what each step saw as JSON. tests/node_stores.rs runs it through
// the proxy and directly on Redis and compares the two.
// Usage: node connect_redis.cjs PORT redis|ioredis
const { default: RedisStore } = require("connect-redis");

const [port, kind] = process.argv.slice(2);

function promised(store, method, ...args) {
  return new Promise((resolve, reject) =>
    store[method](...args, (err, value) => (err ? reject(err) : resolve(value))),
  );
}

async function client() {
  if (kind === "ioredis") {
    const Redis = require("ioredis");
    const c = new Redis({ host: "127.0.0.1", port: Number(port), lazyConnect: true });
    await c.connect();
    return c;
  }
  const { createClient } = require("redis");
  const c = createClient({ url: `redis://127.0.0.1:${port}` });
  await c.connect();
  return c;
}

async function main() {
  const c = await client();
  const store = new RedisStore({ client: c, prefix: "sess:", scanCount: 7 });
  const seen = {};
  // A fixed expiry, so both runs print the same.
  const cookie = { originalMaxAge: 60000, maxAge: 60000, expires: new Date("2099-01-01T00:00:00Z") };
  for (let i = 0; i < 40; i++) {
    await promised(store, "set", `id${i}`, { cookie, user: `user${i}`, n: i });
  }
  seen.get = await promised(store, "get", "id7");
  seen.missing = (await promised(store, "get", "nope")) ?? null;
  await promised(store, "touch", "id7", { cookie: { ...cookie, maxAge: 120000 } });
  seen.length = await promised(store, "length");
  seen.ids = (await promised(store, "ids")).sort();
  seen.all = (await promised(store, "all"))
    .map((s) => `${s.id}:${s.user}:${s.n}`)
    .sort();
  for (let i = 0; i < 5; i++) {
    await promised(store, "destroy", `id${i}`);
  }
  seen.afterDestroy = await promised(store, "length");
  await promised(store, "clear");
  seen.afterClear = await promised(store, "length");
  console.log(JSON.stringify(seen));
  if (kind === "ioredis") {
    c.disconnect();
  } else {
    await c.quit();
  }
}

main().catch((err) => {
  console.error(`FAIL (${kind}): ${err.stack || err}`);
  process.exit(1);
});
