//! Argument lists for every keyed command through the key lookup: never a
//! panic; the keys it names are arguments of the request (never the
//! command name, never past the end); a request framed from its RESP bytes
//! has the same keys as the one built from its arguments. That the keys
//! are Redis's own is the differential test's part
//! (`tests/keys_differential.rs`, against a real server).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use session_proxy::protocol::command::TABLE;
use session_proxy::protocol::keys::positions;
use session_proxy::protocol::{encode_args, Request, RequestDecoder};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let spec = TABLE[which as usize % TABLE.len()];
    let mut args: Vec<&[u8]> = vec![spec.name.as_bytes()];
    args.extend(rest.split(|&b| b == b' ').take(64));
    if !spec.arity_ok(args.len()) {
        return;
    }
    let inline = Request::Inline(args.iter().map(|a| Bytes::copy_from_slice(a)).collect());
    let found = positions(spec, &inline).map(|p| p.collect::<Vec<_>>());
    if let Ok(keys) = &found {
        for &key in keys {
            assert!(key > 0 && key < args.len(), "{keys:?} of {} arguments", args.len());
        }
    }
    let mut buf = BytesMut::from(&encode_args(&args)[..]);
    let framed = RequestDecoder::new(1 << 20, true)
        .decode(&mut buf)
        .ok()
        .flatten()
        .expect("a request's own encoding frames");
    let again = positions(spec, &framed).map(|p| p.collect::<Vec<_>>());
    assert_eq!(found, again);
});
