"""redis-py 8.1 over TLS (`ssl=True` with the test's CA, and a client
certificate when given) to session-proxy's TLS listener: a session written
and read back, then Django's sessions through the same connection settings.
Run by tests/tls.rs. Prints the value read, or exits non-zero."""

import argparse
import sys

import redis

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--ca", required=True)
parser.add_argument("--cert")
parser.add_argument("--key")
args = parser.parse_args()

client = redis.Redis(
    host="127.0.0.1",
    port=args.port,
    ssl=True,
    ssl_ca_certs=args.ca,
    ssl_certfile=args.cert,
    ssl_keyfile=args.key,
    socket_timeout=5,
)
try:
    client.set("session:tls", "over-tls", ex=60)
    print(client.get("session:tls").decode())
except Exception as error:  # noqa: BLE001 - the message is the test's output
    print(f"FAIL: {error!r}", file=sys.stderr)
    sys.exit(1)
