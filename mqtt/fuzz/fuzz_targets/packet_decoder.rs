//! The MQTT packet decoder (the shared `mqtt` crate's codec, which every byte from a
//! device goes through first). The first input byte picks the state: a fresh codec
//! (the input must start with CONNECT), or one that has seen a valid 3.1.1 or 5 CONNECT.
//! The rest is fed in chunks whose sizes come from the input too. Every outcome is fine
//! except a panic, an endless loop, or a frame larger than the maximum packet size.
//! The proptest cousin that runs in CI is `mqtt/tests/decoder.rs`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt::codec::Codec;
use tokio_util::codec::Decoder;

const CONNECT_V311: &[u8] = &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 1, b'f'];
const CONNECT_V5: &[u8] = &[0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0, 0, 1, b'f'];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut codec = Codec::new(4096);
    let mut buf = BytesMut::new();
    match mode % 3 {
        1 => buf.extend_from_slice(CONNECT_V311),
        2 => buf.extend_from_slice(CONNECT_V5),
        _ => {}
    }
    let chunk = usize::from(mode / 3).max(1);
    for piece in std::iter::once(&[][..]).chain(rest.chunks(chunk)) {
        buf.extend_from_slice(piece);
        // Each successful decode consumes bytes, so this loop ends.
        for _ in 0..=buf.len() {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return, // the connection would close here
            }
        }
    }
});
