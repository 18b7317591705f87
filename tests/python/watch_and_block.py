"""redis-py 8.1's optimistic transaction helper (`Redis.transaction`: WATCH,
a read, MULTI/EXEC, again on a WatchError) on a session counter that
another client changes during the first try, and BLPOP woken by a push
and timing out, in RESP2 and RESP3. Prints what it saw as JSON;
tests/it/cluster.rs runs it through the proxy over a Redis Cluster
backend and directly on the keys' master, and compares the two."""

import argparse
import json
import threading

import redis

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()

seen = {}
for protocol in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=args.port, protocol=protocol)
    other = redis.Redis(host="127.0.0.1", port=args.port, protocol=protocol)
    key, queue = "{py}session:visits", "{py}session:queue"
    r.delete(key, queue)
    r.set(key, 10)
    tries = []

    def add_one(pipe):
        value = int(pipe.get(key))
        tries.append(value)
        if len(tries) == 1:
            # Another request of the same user gets there first.
            other.incrby(key, 5)
        pipe.multi()
        pipe.set(key, value + 1)
        pipe.expire(key, 600)

    result = r.transaction(add_one, key)
    pushed = threading.Timer(0.2, lambda: other.rpush(queue, "job"))
    pushed.start()
    woken = r.blpop([queue], timeout=10)
    pushed.join()
    seen[f"resp{protocol}"] = {
        "exec": result,
        "tries": tries,
        "final": r.get(key).decode(),
        "ttl_set": r.ttl(key) > 0,
        "woken": [part.decode() for part in woken],
        "timed_out": r.blpop([queue], timeout=0.05),
    }
print(json.dumps(seen, sort_keys=True))
