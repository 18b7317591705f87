#!/usr/bin/env bash
# A certificate authority and a server certificate for 127.0.0.1 signed by
# it, for the benchmarks' TLS runs: writes ca.crt, server.crt and
# server.key into DIR (rustls refuses a self-signed certificate that is
# its own CA).
#   benches/certs.sh DIR
set -euo pipefail
cd "${1:?usage: benches/certs.sh DIR}"
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > ext.cnf
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=server 2>/dev/null
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
  -days 2 -extfile ext.cnf 2>/dev/null
