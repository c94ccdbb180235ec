//! The packet decoder on random input (the CI-run cousin of the `packet_decoder` fuzz
//! target in mqtt/fuzz): after no CONNECT, a 3.1.1 CONNECT or a 5 CONNECT, random bytes
//! fed in random chunks end in packets, "need more", or an error; never a panic, and the
//! decode loop always terminates.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use bytes::BytesMut;
use mqtt::codec::Codec;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

const CONNECT_V311: &[u8] = &[
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 1, b'f',
];
const CONNECT_V5: &[u8] = &[
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0, 0, 1, b'f',
];

fn decode_all(mode: u8, rest: &[u8]) -> usize {
    let mut codec = Codec::new(4096);
    let mut buf = BytesMut::new();
    match mode % 3 {
        1 => buf.extend_from_slice(CONNECT_V311),
        2 => buf.extend_from_slice(CONNECT_V5),
        _ => {}
    }
    let mut packets = 0;
    let pieces = std::iter::once(&[][..]).chain(rest.chunks(usize::from(mode / 3).max(1)));
    for piece in pieces {
        buf.extend_from_slice(piece);
        for _ in 0..=buf.len() {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => packets += 1,
                Ok(None) => break,
                Err(_) => return packets,
            }
        }
    }
    packets
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(mode: u8, rest in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(mode, &rest);
    }

    /// Valid-looking fixed headers with random bodies reach deeper into the decoders.
    #[test]
    fn random_packets_after_connect_never_panic(
        mode in 1u8..3,
        kind in 1u8..16,
        flags in 0u8..16,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut p = vec![(kind << 4) | flags];
        let mut n = body.len();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 { b |= 0x80; }
            p.push(b);
            if n == 0 { break; }
        }
        p.extend(body);
        decode_all(mode, &p);
    }
}

#[test]
fn valid_connects_decode() {
    assert_eq!(decode_all(1, &[]), 1);
    assert_eq!(decode_all(2, &[0xC0, 0]), 2, "CONNECT then PINGREQ");
}
