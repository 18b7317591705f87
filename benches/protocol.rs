//! Micro-benchmarks of the per-request work: framing typical session commands,
//! encoding replies, and routing a key over 3, 16 and 64 weighted backends.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use session_proxy::protocol::{Proto, Reply, ReplyEncoder, RequestDecoder};
use session_proxy::router::Router;
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

fn command(args: &[&[u8]]) -> Vec<u8> {
    session_proxy::protocol::encode_args(args)
}

fn decode(c: &mut Criterion) {
    let key = b"session:8f14e45fceea167a5a36dedd4bea2543";
    let value = vec![b'x'; 2048];
    let cases = [
        ("get", command(&[b"GET", key])),
        ("setex_2k", command(&[b"SETEX", key, b"1209600", &value])),
        ("exists", command(&[b"EXISTS", key])),
        ("del", command(&[b"DEL", key])),
    ];
    let mut group = c.benchmark_group("decode");
    for (name, bytes) in &cases {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*name, |b| {
            let mut decoder = RequestDecoder::new(64 << 20, true);
            b.iter(|| {
                let mut buf = BytesMut::from(&bytes[..]);
                black_box(decoder.decode(&mut buf).ok().flatten())
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let value = Bytes::from(vec![b'x'; 2048]);
    let mut group = c.benchmark_group("encode");
    for proto in [Proto::Resp2, Proto::Resp3] {
        let mut encoder = ReplyEncoder { proto };
        group.bench_function(format!("bulk_2k_{proto:?}"), |b| {
            let mut buf = BytesMut::with_capacity(4096);
            b.iter(|| {
                buf.clear();
                let _ = encoder.encode(Reply::Bulk(value.clone()), &mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function(format!("null_{proto:?}"), |b| {
            let mut buf = BytesMut::with_capacity(64);
            b.iter(|| {
                buf.clear();
                let _ = encoder.encode(Reply::Null, &mut buf);
                black_box(buf.len())
            })
        });
    }
    group.finish();
}

fn route(c: &mut Criterion) {
    // Weights 1, 2, 3, 1, ... ("route"), and all 1 ("route_equal", where the
    // router compares hashes without taking logarithms).
    for (name, weight) in [
        (
            "route",
            (|i: usize| 1.0 + (i % 3) as f64) as fn(usize) -> f64,
        ),
        ("route_equal", |_| 1.0),
    ] {
        let mut group = c.benchmark_group(name);
        for n in [3usize, 16, 64] {
            let ids: Vec<String> = (0..n).map(|i| format!("backend-{i}")).collect();
            let router = Router::new(
                ids.iter()
                    .enumerate()
                    .map(|(i, id)| (id.as_str(), weight(i))),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let key = b"session:8f14e45fceea167a5a36dedd4bea2543";
            group.bench_with_input(BenchmarkId::from_parameter(n), &router, |b, r| {
                b.iter(|| black_box(r.owner(black_box(key))))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, decode, encode, route);
criterion_main!(benches);
