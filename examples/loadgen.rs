//! Load generator for `benches/load.py`: a Django-like session mix over many
//! connections, with latency percentiles, and optionally thousands of idle
//! connections held open meanwhile.
//!
//! ```text
//! cargo run --release --example loadgen -- --port 6380 --connections 50 --requests 200000 [--idle 10000]
//! ```
//! Prints one JSON line: {"requests", "seconds", "rps", "p50_ms", "p99_ms", "errors"}.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    port: u16,
    connections: usize,
    requests: usize,
    idle: usize,
    value_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 6380,
        connections: 50,
        requests: 100_000,
        idle: 0,
        value_bytes: 2048,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = value
            .parse::<usize>()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--port" => args.port = u16::try_from(number).map_err(|_| "bad port".to_string())?,
            "--connections" => args.connections = number.max(1),
            "--requests" => args.requests = number,
            "--idle" => args.idle = number,
            "--value-bytes" => args.value_bytes = number,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    session_proxy::protocol::encode_args(args)
}

/// Reads one reply (the mix only gets simple, integer and bulk replies);
/// returns whether it was an error.
async fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    loop {
        if let Some(end) = reply_len(buf) {
            let error = buf.first() == Some(&b'-');
            buf.drain(..end);
            return Ok(error);
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reply_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    match buf.first()? {
        b'$' => {
            let len: i64 = std::str::from_utf8(&buf[1..line_end]).ok()?.parse().ok()?;
            if len < 0 {
                return Some(line_end + 2);
            }
            let total = line_end + 2 + len as usize + 2;
            (buf.len() >= total).then_some(total)
        }
        _ => Some(line_end + 2),
    }
}

/// One connection's share: a session's life is SETEX, then GETs, an EXISTS,
/// sometimes a DEL (about 60% GET, 25% SETEX, 10% EXISTS, 5% DEL).
async fn worker(
    port: u16,
    id: usize,
    requests: usize,
    value: Vec<u8>,
) -> std::io::Result<(Vec<u32>, usize)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut latencies = Vec::with_capacity(requests);
    let mut errors = 0;
    let mut n = 0usize;
    let mut session = 0usize;
    while latencies.len() < requests {
        let key = format!("session:{id}:{session}");
        let step = n % 20;
        let request = match step {
            0..=4 => command(&[b"SETEX", key.as_bytes(), b"1209600", &value]),
            5..=16 => command(&[b"GET", key.as_bytes()]),
            17 | 18 => command(&[b"EXISTS", key.as_bytes()]),
            _ => {
                session += 1;
                command(&[b"DEL", key.as_bytes()])
            }
        };
        n += 1;
        let started = Instant::now();
        stream.write_all(&request).await?;
        if read_reply(&mut stream, &mut buf).await? {
            errors += 1;
        }
        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    Ok((latencies, errors))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(64);
        }
    };
    // Idle connections first: each is accepted (one PING) and then held open.
    let mut idle = Vec::with_capacity(args.idle);
    for _ in 0..args.idle {
        match TcpStream::connect(("127.0.0.1", args.port)).await {
            Ok(mut stream) => {
                let mut buf = Vec::new();
                if stream.write_all(b"PING\r\n").await.is_ok()
                    && read_reply(&mut stream, &mut buf).await.is_ok()
                {
                    idle.push(stream);
                }
            }
            Err(e) => {
                eprintln!("loadgen: idle connection failed: {e}");
                break;
            }
        }
    }
    if args.idle > 0 {
        eprintln!("loadgen: {} idle connections open", idle.len());
        // Give the orchestrator a moment to read the proxy's RSS with them open.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let value = vec![b'x'; args.value_bytes];
    let per = args.requests / args.connections;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|id| tokio::spawn(worker(args.port, id, per, value.clone())))
        .collect();
    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok(Ok((l, e))) => {
                latencies.extend(l);
                errors += e;
            }
            Ok(Err(e)) => {
                eprintln!("loadgen: connection failed: {e}");
                errors += per;
            }
            Err(e) => eprintln!("loadgen: task failed: {e}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "{{\"requests\": {}, \"seconds\": {:.3}, \"rps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"errors\": {}, \"idle\": {}}}",
        latencies.len(),
        seconds,
        latencies.len() as f64 / seconds,
        pct(0.50),
        pct(0.99),
        errors,
        idle.len()
    );
    drop(idle);
}
