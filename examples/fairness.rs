//! Load generator for `benches/fairness.py`: heavy clients that pipeline
//! large GETs, and one normal client doing small session GETs one at a time
//! beside them, whose latency is what is measured.
//!
//! ```text
//! cargo run --release --example fairness -- --port 6380 --heavy 8 --pipeline 256 --value-bytes 102400 --seconds 10 [--read 0]
//! ```
//! With `--read 0` the heavy clients never read their replies. Prints one
//! JSON line: {"requests", "p50_ms", "p99_ms", "max_ms", "timeouts",
//! "heavy_mb_s", "late_at_s"} (when, in seconds into the run, requests took
//! longer than the client timeout). A normal request counts as a timeout after 100 ms (the
//! socket timeout django-redis-sessions uses), and its connection is re-made.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_TIMEOUT: Duration = Duration::from_millis(100);

struct Args {
    port: u16,
    heavy: usize,
    pipeline: usize,
    value_bytes: usize,
    seconds: u64,
    read: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 6380,
        heavy: 8,
        pipeline: 256,
        value_bytes: 100 * 1024,
        seconds: 10,
        read: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = value
            .parse::<u64>()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--port" => args.port = u16::try_from(number).map_err(|_| "bad port".to_string())?,
            "--heavy" => args.heavy = number as usize,
            "--pipeline" => args.pipeline = (number as usize).max(1),
            "--value-bytes" => args.value_bytes = number as usize,
            "--seconds" => args.seconds = number.clamp(1, 600),
            "--read" => args.read = number != 0,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    session_proxy::protocol::encode_args(args)
}

fn connect(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    Ok(stream)
}

/// Reads one reply of exactly `len` bytes.
fn read_exact(stream: &mut TcpStream, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("fairness: {e}");
            std::process::exit(64);
        }
    };
    let port = args.port;
    // The sessions: a big one for the heavy clients, a small one for the normal client.
    let mut setup = connect(port, Duration::from_secs(10)).expect("connect");
    let big = vec![b'x'; args.value_bytes];
    setup
        .write_all(&command(&[b"SET", b"session:fair:big", &big]))
        .and_then(|_| setup.write_all(&command(&[b"SET", b"session:fair:user", b"user"])))
        .expect("write");
    read_exact(&mut setup, 10).expect("two +OK");

    let stop = Arc::new(AtomicBool::new(false));
    let heavy_bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let heavy: Vec<_> = (0..args.heavy)
        .map(|_| {
            let (stop, heavy_bytes) = (stop.clone(), heavy_bytes.clone());
            let (pipeline, value_bytes, read) = (args.pipeline, args.value_bytes, args.read);
            std::thread::spawn(move || {
                let Ok(mut stream) = connect(port, Duration::from_secs(10)) else {
                    return;
                };
                let burst = command(&[b"GET", b"session:fair:big"]).repeat(pipeline);
                let reply = format!("${value_bytes}\r\n").len() + value_bytes + 2;
                let mut replies = vec![0u8; reply * pipeline];
                while !stop.load(Ordering::Relaxed) {
                    if stream.write_all(&burst).is_err() {
                        break;
                    }
                    if read {
                        if stream.read_exact(&mut replies).is_err() {
                            break;
                        }
                        heavy_bytes.fetch_add(replies.len() as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // The normal client, one GET at a time until the time is up.
    let get = command(&[b"GET", b"session:fair:user"]);
    let expected = b"$4\r\nuser\r\n";
    let mut normal = connect(port, CLIENT_TIMEOUT).expect("connect");
    let mut latencies = Vec::new();
    let mut timeouts = 0u64;
    // When (seconds into the run) requests took over the client timeout.
    let mut late_at = Vec::new();
    let deadline = started + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        let t = Instant::now();
        let ok = normal.write_all(&get).is_ok()
            && read_exact(&mut normal, expected.len()).is_ok_and(|r| r == expected);
        if !ok {
            timeouts += 1;
            // A late reply may still come on the old connection: start afresh.
            normal = connect(port, CLIENT_TIMEOUT).expect("reconnect");
        }
        let took = t.elapsed();
        if took > CLIENT_TIMEOUT || !ok {
            late_at.push(format!("{:.2}", (t - started).as_secs_f64()));
        }
        latencies.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for thread in heavy {
        let _ = thread.join();
    }
    latencies.sort();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{{\"requests\": {}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"timeouts\": {}, \"heavy_mb_s\": {:.1}, \"late_at_s\": [{}]}}",
        latencies.len(),
        pick(0.50),
        pick(0.99),
        pick(1.0),
        timeouts,
        heavy_bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
        late_at.join(", ")
    );
}
