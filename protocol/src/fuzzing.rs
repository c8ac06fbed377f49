//! Entry points for the fuzz targets in `fuzz/`: each feeds arbitrary bytes
//! to the decoder and checks what must hold for whatever it accepts.

use bytes::BytesMut;

use crate::codec::Decoder;
use crate::packet::Packet;
use crate::types::ProtocolVersion;

/// Feeds `data` to a server-side decoder and to 3.1.1 and v5 client-side
/// decoders. Every packet accepted must re-encode to bytes that decode to
/// the same packet and re-encode to the same bytes.
pub fn decode(data: &[u8]) {
    for version in [None, Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)] {
        let mut decoder = match version {
            None => Decoder::new(usize::MAX),
            Some(v) => Decoder::with_version(v, usize::MAX),
        };
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decoder.decode(&mut buf) {
            let v = decoder.version().unwrap_or(ProtocolVersion::V5);
            round_trip(&packet, v);
        }
    }
}

/// Checks that `packet` survives encode → decode → encode unchanged.
fn round_trip(packet: &Packet, v: ProtocolVersion) {
    let mut first = BytesMut::new();
    if packet.encode(v, &mut first).is_err() {
        return;
    }
    let bytes = first.clone();
    let mut decoder = Decoder::with_version(v, usize::MAX);
    let again = match decoder.decode(&mut first) {
        Ok(Some(p)) => p,
        other => panic!("re-encoded {packet:?} as {bytes:?} which decodes to {other:?}"),
    };
    assert_eq!(&again, packet, "decode(encode(p)) != p");
    assert!(first.is_empty(), "re-encoded packet has trailing bytes");
    let mut second = BytesMut::new();
    let encoded = again.encode(v, &mut second);
    assert!(encoded.is_ok(), "second encode failed: {encoded:?}");
    assert_eq!(bytes, second, "encoding is not stable");
}
