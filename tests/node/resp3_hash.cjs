// node-redis 5 with RESP: 3 on a session kept as a hash: hSet/hGetAll (an
// object), zAdd/zRangeWithScores ({ value, score } with number scores),
// zScore (a number), sMembers, a MULTI, DEL. Prints what it saw as JSON;
// tests/node_stores.rs runs it through the proxy and directly on Redis and
// compares the two.
// Usage: node resp3_hash.cjs PORT
const { createClient } = require("redis5");

const [port] = process.argv.slice(2);

async function main() {
  const c = createClient({ url: `redis://127.0.0.1:${port}`, RESP: 3 });
  await c.connect();
  const key = "spring:session:sessions:n1";
  const scores = "session:scores:n1";
  const index = "spring:session:index:bob";
  await c.del([key, scores, index]);
  const seen = {};
  await c.hSet(key, { creationTime: "1764700000000", maxInactiveInterval: "1800", "sessionAttr:user": "bob" });
  const hash = await c.hGetAll(key);
  seen.hGetAll = Object.keys(hash).sort().map((k) => `${k}=${hash[k]}`);
  seen.hGetAllIsObject = hash !== null && !Array.isArray(hash) && typeof hash === "object";
  await c.zAdd(scores, [{ score: 1.5, value: "page:a" }, { score: 2.25, value: "page:b" }]);
  seen.zRangeWithScores = (await c.zRangeWithScores(scores, 0, -1)).map((e) => [e.value, e.score, typeof e.score]);
  const score = await c.zScore(scores, "page:b");
  seen.zScore = [score, typeof score];
  await c.sAdd(index, ["n1", "n2"]);
  const members = await c.sMembers(index);
  seen.sMembers = [...members].sort();
  const done = await c.multi().hSet(key, "lastAccessedTime", "1764700060000").hGetAll(key).exec();
  seen.multi = [done[0], Object.keys(done[1]).sort()];
  seen.deleted = await c.del([key, scores, index]);
  await c.quit();
  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
