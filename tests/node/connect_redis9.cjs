// connect-redis 9 behind express-session 1.19, with node-redis 5 speaking
// RESP2 or RESP3, pointed at 127.0.0.1:PORT: a small HTTP site on loopback
// (express-session as its middleware, a cookie carried from response to
// request) logs a user in, counts page views, regenerates the session id,
// reads a session from the store's own list (all, length, ids), logs out;
// prints what each request saw as JSON. tests/it/node_stores.rs runs it
// through the proxy and directly on Redis and compares the two.
// Usage: node connect_redis9.cjs PORT 2|3
const http = require("node:http");
const session = require("express-session");
const { RedisStore } = require("connect-redis9");
const { createClient } = require("redis5");

const [port, resp] = process.argv.slice(2);

function promised(store, method, ...args) {
  return new Promise((resolve, reject) =>
    store[method](...args, (err, value) => (err ? reject(err) : resolve(value))),
  );
}

async function main() {
  const client = createClient({ url: `redis://127.0.0.1:${port}`, RESP: Number(resp) });
  await client.connect();
  const store = new RedisStore({ client, prefix: "sess9:", scanCount: 5 });
  const middleware = session({
    store,
    secret: "a secret of the test",
    resave: false,
    saveUninitialized: false,
    name: "sid",
  });
  const server = http.createServer((req, res) => {
    middleware(req, res, () => {
      const path = req.url;
      const done = (body) => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify(body));
      };
      if (path === "/login") {
        req.session.user = "alice";
        req.session.views = 0;
        return done({ user: req.session.user });
      }
      if (path === "/view") {
        if (req.session.user) req.session.views += 1;
        return done({ user: req.session.user ?? null, views: req.session.views ?? null });
      }
      if (path === "/regenerate") {
        const user = req.session.user;
        const views = req.session.views;
        return req.session.regenerate((err) => {
          if (err) return done({ error: String(err) });
          req.session.user = user;
          req.session.views = views;
          done({ regenerated: true });
        });
      }
      if (path === "/logout") {
        return req.session.destroy((err) => done({ destroyed: !err }));
      }
      done({ unknown: path });
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  let cookie = "";
  const ids = new Map();
  const label = (id) => {
    if (!ids.has(id)) ids.set(id, `#${ids.size}`);
    return ids.get(id);
  };
  const seen = [];
  let sid = null;
  const visit = async (path) => {
    const res = await fetch(base + path, { headers: cookie ? { cookie } : {} });
    const set = res.headers.get("set-cookie");
    if (set) cookie = set.split(";")[0];
    sid = cookie ? decodeURIComponent(cookie.slice(4)).slice(2).split(".")[0] : null;
    seen.push([path, await res.json(), sid ? label(sid) : null]);
  };
  await visit("/view");
  await visit("/login");
  await visit("/view");
  await visit("/view");
  const before = sid;
  await visit("/regenerate");
  await visit("/view");
  seen.push({
    oldStored: (await promised(store, "get", before)) ?? null,
    newStored: (await promised(store, "get", sid))?.views ?? null,
    ttl: (await client.ttl(`sess9:${sid}`)) > 0,
  });
  // A second user, then the store's listing calls an admin page would use.
  const first = cookie;
  cookie = "";
  await visit("/login");
  seen.push({
    length: await promised(store, "length"),
    ids: (await promised(store, "ids")).map(label).sort(),
    all: (await promised(store, "all")).map((s) => `${s.user}:${s.views}`).sort(),
  });
  cookie = first;
  await visit("/logout");
  cookie = first;
  await visit("/view");
  seen.push({ afterLogout: await promised(store, "length") });
  await promised(store, "clear");
  seen.push({ afterClear: await promised(store, "length") });
  console.log(JSON.stringify(seen));
  server.close();
  await client.quit();
}

main().catch((err) => {
  console.error(`FAIL (RESP${resp}): ${err.stack || err}`);
  process.exit(1);
});
