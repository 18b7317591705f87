// ioredis 5 on what session code uses beyond get/set, pointed at
// 127.0.0.1:PORT: a session kept as a hash (hset/hgetall/hincrby/expire), a
// Lua command of its own by defineCommand (EVALSHA, falling back to EVAL the
// first time), a pipeline and a MULTI on one user's hash-tagged keys, and
// scanStream over every session key; prints what each step saw as JSON.
// tests/it/node_stores.rs runs it through the proxy and directly on Redis
// and compares the two. Usage: node ioredis_features.cjs PORT
const Redis = require("ioredis");

const [port] = process.argv.slice(2);

async function main() {
  const redis = new Redis({ host: "127.0.0.1", port: Number(port), lazyConnect: true });
  await redis.connect();
  const seen = {};
  await redis.del("iosess:h1");
  seen.hset = await redis.hset("iosess:h1", { user: "alice", views: 0, theme: "dark" });
  seen.hincrby = await redis.hincrby("iosess:h1", "views", 1);
  seen.expire = await redis.expire("iosess:h1", 600);
  seen.hgetall = await redis.hgetall("iosess:h1");
  seen.hmget = await redis.hmget("iosess:h1", "user", "missing");
  seen.hdel = await redis.hdel("iosess:h1", "theme");
  seen.hlen = await redis.hlen("iosess:h1");
  // A session "touch" as one script: refresh the expiry, count the view.
  redis.defineCommand("touchSession", {
    numberOfKeys: 1,
    lua: "redis.call('expire', KEYS[1], ARGV[1]) return redis.call('hincrby', KEYS[1], 'views', 1)",
  });
  seen.touch = [await redis.touchSession("iosess:h1", 900), await redis.touchSession("iosess:h1", 900)];
  seen.ttlAfterTouch = (await redis.ttl("iosess:h1")) > 600;
  seen.pipeline = await redis
    .pipeline()
    .set("iosess:p1", "a", "EX", 600)
    .get("iosess:p1")
    .hget("iosess:h1", "views")
    .exec();
  seen.multi = await redis
    .multi()
    .hset("iosess:{bob}:data", "user", "bob")
    .sadd("iosess:{bob}:devices", "laptop", "phone")
    .expire("iosess:{bob}:data", 600)
    .exec();
  for (let i = 0; i < 60; i++) {
    await redis.set(`iosess:scan${String(i).padStart(2, "0")}`, i, "EX", 600);
  }
  const found = new Set();
  await new Promise((resolve, reject) => {
    const stream = redis.scanStream({ match: "iosess:scan*", count: 7 });
    stream.on("data", (keys) => keys.forEach((k) => found.add(k)));
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  seen.scanStream = found.size;
  seen.unlinked = await redis.unlink(...found);
  console.log(JSON.stringify(seen));
  redis.disconnect();
}

main().catch((err) => {
  console.error(`FAIL: ${err.stack || err}`);
  process.exit(1);
});
