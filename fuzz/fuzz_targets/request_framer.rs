//! Client bytes through the request framer, authenticated and not: it
//! returns requests or a protocol error, never panics, and every request it
//! frames from a multibulk array frames again to the same request.
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
    let _ = session_proxy::protocol::request::split_args(data);
});
