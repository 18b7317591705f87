//! Client bytes through the request framer, authenticated and not: it
//! returns requests or a protocol error, never panics, and every request it
//! frames from a multibulk array frames again to the same request; fed in
//! two pieces, it frames what it frames from the whole.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use session_proxy::protocol::{Request, RequestDecoder};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    for authenticated in [true, false] {
        let mut decoder = RequestDecoder::new(1 << 20, authenticated);
        let mut buf = BytesMut::from(data);
        // Each successful decode consumes bytes, so this ends.
        while let Ok(Some(request)) = decoder.decode(&mut buf) {
            if let Some(raw) = request.raw() {
                assert_eq!(Request::from_raw(raw).as_ref(), Some(&request));
            }
            for i in 0..request.len() {
                assert!(request.arg(i).is_some());
            }
        }
    }
    // Fed in two pieces, the framer takes a request up where it stopped:
    // the same requests come out as from the whole.
    let whole = frame_all(data, data.len());
    let at = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    assert_eq!(frame_all(data, at), whole);
    let _ = session_proxy::protocol::request::split_args(data);
});

/// Every request framed from `data` given in two reads, split at `at`,
/// until the first error.
fn frame_all(data: &[u8], at: usize) -> Vec<Request> {
    let mut decoder = RequestDecoder::new(1 << 20, true);
    let mut buf = BytesMut::from(&data[..at]);
    let mut out = Vec::new();
    let mut fed = false;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(request)) => out.push(request),
            Ok(None) if !fed => {
                buf.extend_from_slice(&data[at..]);
                fed = true;
            }
            _ => return out,
        }
    }
}
