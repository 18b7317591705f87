//! TLS on both sides, with certificates the test makes (openssl): redis-py
//! with `ssl=True` to the proxy's TLS listener, the proxy to a
//! `redis-server --tls-port` backend over `rediss://` with the test's CA,
//! client certificates required by `client_ca`, and a bad CA refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{free_port, python, Proxy, Redis, Running, SentinelProc};

/// A CA, and a server and a client certificate it signed (for 127.0.0.1).
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        // One openssl command, its words split on spaces.
        let run = |command: &str| {
            let status = Command::new("openssl")
                .args(command.split_whitespace())
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl");
            assert!(status.success(), "openssl {command}");
        };
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:sessions.redis.test\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        for ca in ["ca", "other-ca"] {
            run(&format!(
                "req -x509 -newkey rsa:2048 -nodes -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN={ca}"
            ));
        }
        // server2 is signed by the other CA: a renewed certificate.
        for (name, ca) in [("server", "ca"), ("client", "ca"), ("server2", "other-ca")] {
            run(&format!(
                "req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"
            ));
            run(&format!(
                "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial \
                 -out {name}.crt -days 2 -extfile ext.cnf"
            ));
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A redis-server with TLS on `tls_port` (and its plain port for checks).
fn tls_redis(certs: &Certs, tls_port: u16) -> Redis {
    let args = tls_args(certs, tls_port);
    Redis::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// redis-server's arguments for TLS on `tls_port` with the test's
/// certificates, clients not asked for one.
fn tls_args(certs: &Certs, tls_port: u16) -> Vec<String> {
    [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &certs.s("server.crt"),
        "--tls-key-file",
        &certs.s("server.key"),
        "--tls-ca-cert-file",
        &certs.s("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]
    .map(String::from)
    .to_vec()
}

fn redis_py(port: u16, certs: &Certs, client_cert: bool) -> (bool, String) {
    redis_py_trusting(port, certs, "ca.crt", client_cert)
}

/// redis-py over TLS, trusting the CA in file `ca`.
fn redis_py_trusting(port: u16, certs: &Certs, ca: &str, client_cert: bool) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = python("venv-redis8");
    command.arg(root.join("tests/python/tls_client.py")).args([
        "--port",
        &port.to_string(),
        "--ca",
        &certs.s(ca),
    ]);
    if client_cert {
        command.args([
            "--cert",
            &certs.s("client.crt"),
            "--key",
            &certs.s("client.key"),
        ]);
    }
    let output = command.output().expect("python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn tls_proxy(
    certs: &Certs,
    tls_port: u16,
    backend_port: u16,
    extra_listen: &str,
    ca: &str,
) -> Proxy {
    Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ address = \"127.0.0.1:{tls_port}\", cert = \"{}\", key = \"{}\"{extra_listen} }}\n\
         [[backends]]\nid = \"a\"\nurl = \"rediss://127.0.0.1:{backend_port}\"\n\
         tls = {{ ca = \"{}\" }}\n",
        certs.s("server.crt"),
        certs.s("server.key"),
        certs.s(ca),
    ))
}

#[test]
fn tls_from_clients_and_to_backends() {
    let certs = Certs::make();
    let backend_tls = free_port();
    let redis = tls_redis(&certs, backend_tls);
    // Plain clients and TLS clients, the backend over TLS.
    let listen_tls = free_port();
    let proxy = tls_proxy(&certs, listen_tls, backend_tls, "", "ca.crt");
    assert_eq!(
        proxy.client().text(&["SET", "session:plain", "v"]),
        "+OK\r\n"
    );
    let (ok, out) = redis_py(listen_tls, &certs, false);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "over-tls");
    // The data is on the backend that only the TLS port led to.
    assert_eq!(
        redis.client().text(&["GET", "session:tls"]),
        "$8\r\nover-tls\r\n"
    );
    drop(proxy);

    // Client certificates required: without one the handshake fails; with
    // one signed by the CA it works.
    let listen_tls = free_port();
    let ca = format!(", client_ca = \"{}\"", certs.s("ca.crt"));
    let proxy_mtls = proxy_with(&certs, listen_tls, backend_tls, &ca);
    let (ok, out) = redis_py(listen_tls, &certs, false);
    assert!(!ok, "a client without a certificate got through: {out}");
    let (ok, out) = redis_py(listen_tls, &certs, true);
    assert!(ok, "{out}");
    drop(proxy_mtls);

    // A backend whose certificate the configured CA did not sign: refused.
    let proxy_bad = tls_proxy(&certs, free_port(), backend_tls, "", "other-ca.crt");
    let reply = proxy_bad.client().text(&["GET", "session:tls"]);
    assert!(reply.starts_with("-ERR backend 'a'"), "{reply}");
}

fn proxy_with(certs: &Certs, tls_port: u16, backend_port: u16, extra: &str) -> Proxy {
    tls_proxy(certs, tls_port, backend_port, extra, "ca.crt")
}

#[test]
fn a_reload_picks_up_a_renewed_certificate() {
    let certs = Certs::make();
    let redis = Redis::start();
    let listen_tls = free_port();
    let body = |cert: &str| {
        format!(
            "[listen.tls]\naddress = \"127.0.0.1:{listen_tls}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [[backends]]\nid = \"a\"\naddress = \"{}\"\n",
            certs.s(&format!("{cert}.crt")),
            certs.s(&format!("{cert}.key")),
            redis.address()
        )
    };
    let proxy = Running::start(&body("server"));
    let (ok, out) = redis_py_trusting(listen_tls, &certs, "ca.crt", false);
    assert!(ok, "{out}");
    // The certificate is renewed, by another CA, and the proxy reloaded.
    proxy.rewrite(&body("server2"));
    let (status, answer) = proxy.http("POST", "/reload");
    assert_eq!(status, 200, "{answer}");
    let (ok, out) = redis_py_trusting(listen_tls, &certs, "ca.crt", false);
    assert!(!ok, "the old CA still verified the listener: {out}");
    let (ok, out) = redis_py_trusting(listen_tls, &certs, "other-ca.crt", false);
    assert!(ok, "{out}");
}

#[test]
fn sentinels_and_masters_over_tls() {
    let certs = Certs::make();
    let master_tls = free_port();
    let master = tls_redis(&certs, master_tls);
    // The sentinel monitors the master's TLS port (tls-replication: it
    // speaks TLS to it) and listens on a TLS port of its own; the proxy
    // asks it over TLS and reaches the master it names over TLS.
    let sentinel_tls = free_port();
    let _sentinel = SentinelProc::start_with(
        "tls-group",
        master_tls,
        5000,
        &format!(
            "tls-port {sentinel_tls}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes",
            certs.s("server.crt"),
            certs.s("server.key"),
            certs.s("ca.crt")
        ),
    );
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [[backends]]\nid = \"a\"\ntls = {{ ca = \"{ca}\" }}\n\
         sentinel = {{ master = \"tls-group\", addresses = [\"127.0.0.1:{sentinel_tls}\"], tls = {{ ca = \"{ca}\" }} }}\n",
        ca = certs.s("ca.crt"),
    ));
    let mut client = proxy.client();
    crate::common::wait_until(
        crate::common::READY_LIMIT,
        std::time::Duration::from_millis(20),
        "the master over TLS, learnt from the sentinel over TLS",
        || client.text(&["SET", "session:s", "v"]) == "+OK\r\n",
    );
    assert_eq!(master.client().text(&["GET", "session:s"]), "$1\r\nv\r\n");
}

/// A TLS backend given by host name whose address moves (a managed
/// service's endpoint): the certificate is checked against the name, not
/// the address it led to. The certificate names sessions.redis.test and
/// 127.0.0.1 only, so the server on 127.0.0.2 is accepted by its name
/// alone; the name, pinned by `[pool] hosts_file`, moves from 127.0.0.1 to
/// 127.0.0.2 and the periodic lookup follows it.
#[test]
fn a_tls_backend_is_checked_by_its_name_wherever_it_leads() {
    let certs = Certs::make();
    let (port, tls_port) = (free_port(), free_port());
    let args = tls_args(&certs, tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, b) = (
        Redis::start_at("127.0.0.1", port, &args),
        Redis::start_at("127.0.0.2", port, &args),
    );
    let hosts = certs.path("hosts");
    let point = |ip: &str| {
        let next = certs.path("hosts.next");
        std::fs::write(&next, format!("{ip} sessions.redis.test\n")).unwrap();
        std::fs::rename(&next, &hosts).unwrap();
    };
    point("127.0.0.1");
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [pool]\ndns_refresh_s = 1\nhosts_file = \"{}\"\n\
         [[backends]]\nid = \"named\"\nurl = \"rediss://sessions.redis.test:{tls_port}\"\n\
         tls = {{ ca = \"{}\" }}\n",
        hosts.display(),
        certs.s("ca.crt"),
    ));
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "session:tls", "a"]), "+OK\r\n");
    assert_eq!(a.client().text(&["GET", "session:tls"]), "$1\r\na\r\n");
    point("127.0.0.2");
    crate::common::wait_until(
        crate::common::READY_LIMIT,
        std::time::Duration::from_millis(50),
        "the name followed to 127.0.0.2",
        || {
            let report = session_proxy::report::BackendReport::all(&proxy.shared.topology());
            report[0].resolved == Some(format!("127.0.0.2:{tls_port}"))
        },
    );
    assert_eq!(client.text(&["SET", "session:tls", "b"]), "+OK\r\n");
    assert_eq!(b.client().text(&["GET", "session:tls"]), "$1\r\nb\r\n");
}

/// A blocking TLS client of the proxy's TLS listener (rustls), trusting
/// the test's CA.
fn tls_client(
    certs: &Certs,
    port: u16,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(certs.path("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one RESP reply (a status or a bulk string) from a buffered reader.
fn read_reply(reader: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).unwrap();
    if line.first() != Some(&b'$') {
        return line;
    }
    let len: usize = std::str::from_utf8(&line[1..line.len() - 2])
        .unwrap()
        .parse()
        .unwrap();
    let mut value = vec![0; len + 2];
    reader.read_exact(&mut value).unwrap();
    value.truncate(len);
    value
}

/// TLS on both sides carried by the connections' own sockets: large values
/// pipelined in both directions (many TLS records per reply, writes the
/// socket takes only in part, records that wait for it) come back whole
/// and in order, for several clients at once.
#[test]
fn large_pipelined_values_cross_tls_on_both_sides_whole() {
    use std::io::{BufReader, Write};
    let certs = Certs::make();
    let backend_tls = free_port();
    let _redis = tls_redis(&certs, backend_tls);
    let listen_tls = free_port();
    let proxy = tls_proxy(&certs, listen_tls, backend_tls, "", "ca.crt");
    std::thread::scope(|scope| {
        for client in 0..3 {
            let certs = &certs;
            scope.spawn(move || {
                let mut stream = tls_client(certs, listen_tls);
                let values: Vec<Vec<u8>> = (0..40)
                    .map(|i| {
                        (0..150_000 + i * 1000)
                            .map(|j| (j * 7 + i * 13 + client) as u8)
                            .collect()
                    })
                    .collect();
                let mut pipeline = Vec::new();
                for (i, value) in values.iter().enumerate() {
                    let key = format!("session:big:{client}:{i}");
                    pipeline.extend_from_slice(
                        format!(
                            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                            key.len(),
                            value.len()
                        )
                        .as_bytes(),
                    );
                    pipeline.extend_from_slice(value);
                    pipeline.extend_from_slice(b"\r\n");
                }
                for i in 0..values.len() {
                    let key = format!("session:big:{client}:{i}");
                    pipeline.extend_from_slice(
                        format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
                    );
                }
                stream.write_all(&pipeline).unwrap();
                stream.flush().unwrap();
                let mut reader = BufReader::new(stream);
                for _ in 0..values.len() {
                    assert_eq!(read_reply(&mut reader), b"+OK\r\n");
                }
                for (i, value) in values.iter().enumerate() {
                    let got = read_reply(&mut reader);
                    assert!(
                        got == *value,
                        "client {client}: value {i} differs ({} bytes)",
                        got.len()
                    );
                }
            });
        }
    });
    assert_eq!(proxy.client().text(&["DBSIZE"]), ":120\r\n");
}

/// Records already in a socket are taken by one read of the TLS stream, as
/// many as its `chunk` holds (rustls alone asks the socket for 4 KiB at a
/// time, and a read used to stop at the first record), and no more.
#[test]
fn one_read_takes_every_record_the_socket_holds_up_to_the_chunk() {
    use session_proxy::config::{ListenTls, TlsClient};
    use session_proxy::tls_stream::TlsStream;
    use tokio::io::AsyncWriteExt;
    const RECORD: usize = 8 * 1024;
    // TLS 1.3's framing of a record: header, content type and tag.
    const FRAMING: usize = 5 + 1 + 16;
    let certs = Certs::make();
    let acceptor = session_proxy::tls::acceptor(&ListenTls {
        address: String::new(),
        cert: certs.path("server.crt"),
        key: certs.path("server.key"),
        client_ca: None,
    })
    .unwrap();
    let connector = session_proxy::tls::connector(&TlsClient {
        ca: Some(certs.path("ca.crt")),
        server_name: None,
        cert: None,
        key: None,
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (accepted, accepted_rx) = tokio::sync::oneshot::channel::<()>();
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            // Written once the server holds the session, so that nothing
            // came with the end of the handshake.
            accepted_rx.await.unwrap();
            for byte in b"abcd" {
                tls.write_all(&[*byte; RECORD]).await.unwrap();
            }
            tls.flush().await.unwrap();
            tls
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let (tcp, session) = acceptor.accept(tcp).await.unwrap().into_inner();
        let stream = TlsStream::new(tcp, session);
        accepted.send(()).unwrap();
        let _client = client.await.unwrap();
        // The four records are all in the socket.
        let mut peeked = vec![0; 8 * RECORD];
        while stream.tcp().peek(&mut peeked).await.unwrap() < 4 * (RECORD + FRAMING) {
            tokio::task::yield_now().await;
        }
        let mut buf = bytes::BytesMut::new();
        stream.tcp().readable().await.unwrap();
        // A chunk that holds one record takes one.
        let n = stream
            .try_read_buf(&mut buf, RECORD + FRAMING, false)
            .unwrap();
        assert_eq!(n, RECORD);
        // A bigger one takes the three others, in one read.
        stream.tcp().readable().await.unwrap();
        let n = stream.try_read_buf(&mut buf, 128 * 1024, false).unwrap();
        assert_eq!(n, 3 * RECORD);
        let expected: Vec<u8> = b"abcd".iter().flat_map(|b| [*b; RECORD]).collect();
        assert!(buf[..] == expected[..]);
    });
}
