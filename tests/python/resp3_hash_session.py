"""A session kept as a hash (Spring Session's and ASP.NET Core's layout),
with redis-py 8.1 in its default protocol (it opens with HELLO 3):
HSET/HGETALL (a dict), HINCRBYFLOAT, ZADD/ZRANGE WITHSCORES (pairs with
float scores), ZSCORE (a float), SMEMBERS (a set), EXPIRE, a pipeline in a
transaction, DEL. Prints what it saw as JSON; tests/python_stores.rs runs it
through the proxy and directly on Redis and compares the two, and checks the
types are the ones redis-py gives for RESP3 replies."""

import argparse
import json

import redis

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()

r = redis.Redis(host="127.0.0.1", port=args.port)
assert r.connection_pool.connection_kwargs.get("protocol") in (None, 3)
seen = {"protocol": r.connection_pool.get_connection().protocol}
key = "spring:session:sessions:py1"
index = "spring:session:index:alice"
scores = "session:scores:py1"
r.delete(key, index, scores)
r.hset(key, mapping={"creationTime": "1764700000000", "maxInactiveInterval": "1800", "sessionAttr:user": "alice"})
hash_ = r.hgetall(key)
seen["hgetall_type"] = type(hash_).__name__
seen["hgetall"] = {k.decode(): v.decode() for k, v in sorted(hash_.items())}
seen["hincrbyfloat"] = r.hincrbyfloat(key, "visits", 1.5)
r.zadd(scores, {"page:a": 1.5, "page:b": 2.25})
ranged = r.zrange(scores, 0, -1, withscores=True)
seen["zrange_withscores"] = [[m.decode(), s, type(s).__name__] for m, s in ranged]
score = r.zscore(scores, "page:b")
seen["zscore"] = [score, type(score).__name__]
r.sadd(index, "py1", "py2")
members = r.smembers(index)
seen["smembers"] = [type(members).__name__, sorted(m.decode() for m in members)]
r.expire(key, 1800)
pipe = r.pipeline(transaction=True)
pipe.hset(key, "lastAccessedTime", "1764700060000")
pipe.hgetall(key)
pipe.hincrbyfloat(key, "visits", 0.25)
done = pipe.execute()
seen["transaction"] = [done[0], sorted(k.decode() for k in done[1]), done[2]]
seen["deleted"] = r.delete(key, index, scores)
seen["after"] = r.hgetall(key)
print(json.dumps(seen, sort_keys=True))
