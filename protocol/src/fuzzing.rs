//! Entry points for the fuzz targets in `fuzz/`: each feeds arbitrary bytes
//! to the decoder and checks what must hold for whatever it accepts.

use bytes::BytesMut;

use crate::codec::Decoder;
use crate::error::DecodeError;
use crate::packet::{Packet, PublishRef};
use crate::types::ProtocolVersion;

/// Feeds `data` to a server-side decoder and to 3.1.1 and v5 client-side
/// decoders. Every packet accepted must re-encode to bytes that decode to
/// the same packet and re-encode to the same bytes; and `peek` must agree
/// with `decode` on every PUBLISH, accepted or refused.
pub fn decode(data: &[u8]) {
    for version in [None, Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)] {
        let mut decoder = match version {
            None => Decoder::new(usize::MAX),
            Some(v) => Decoder::with_version(v, usize::MAX),
        };
        let mut buf = BytesMut::from(data);
        loop {
            let snapshot = buf.clone();
            let peeked = decoder
                .peek(&snapshot)
                .map(|p| p.map(|p| (p.len, p.publish)));
            let before = buf.len();
            let decoded = decoder.decode(&mut buf);
            check_peek_agrees(&peeked, &decoded, before - buf.len());
            let Ok(Some(packet)) = decoded else {
                break;
            };
            let v = decoder.version().unwrap_or(ProtocolVersion::V5);
            round_trip(&packet, v);
        }
    }
}

type PeekResult<'a> = Result<Option<(usize, Option<PublishRef<'a>>)>, DecodeError>;

/// `peek` and `decode` of the same bytes: the same refusal, the same need
/// for more bytes, and for a PUBLISH the same packet and length.
fn check_peek_agrees(
    peeked: &PeekResult<'_>,
    decoded: &Result<Option<Packet>, DecodeError>,
    used: usize,
) {
    match (peeked, decoded) {
        (Err(e), Err(d)) => assert_eq!(e, d, "peek and decode refuse differently"),
        (Err(e), Ok(p)) => panic!("peek refuses ({e}) what decode accepts: {p:?}"),
        (Ok(None), d) => assert_eq!(d, &Ok(None), "peek wants more bytes, decode does not"),
        (Ok(Some((len, Some(r)))), Ok(Some(Packet::Publish(p)))) => {
            assert_eq!(*len, used, "peek and decode disagree on the length");
            assert_eq!(r.topic(), p.topic.as_str());
            assert_eq!((r.qos(), r.dup(), r.retain()), (p.qos, p.dup, p.retain));
            assert_eq!(r.packet_id(), p.packet_id);
            assert_eq!(r.payload(), &p.payload[..]);
            assert_eq!(&r.properties(), p.properties());
        }
        (Ok(Some((_, Some(r)))), d) => panic!("peek accepts {r:?}, decode gives {d:?}"),
        (Ok(Some((_, None))), _) => {}
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
