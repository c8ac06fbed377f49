//! Byte-level test vectors for every MQTT control packet, in 3.1.1 and 5.0.
//!
//! Each accepted vector is written out by hand from the specification (the
//! comment beside each group of bytes names the field) and checked three
//! ways: it decodes to a packet built by hand, the decoder consumes all of
//! it, and encoding the packet gives back the same bytes (where the vector is
//! the canonical encoding). Each rejected vector is checked for the exact
//! `DecodeError` and for the rule its message cites.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use ringmq_protocol::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use ringmq_protocol::{
    Auth, ConnAck, Connect, DecodeError, Decoder, Disconnect, ErrorKind, LastWill, MqttString,
    Packet, PacketId, PacketType, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionId, SubscriptionOptions,
    TopicFilter, TopicName, UnsubAck, Unsubscribe, UserProperty,
};

use ProtocolVersion::{V311, V5};

/// Packet size limit of the decoders below: larger than every vector.
const MAX: usize = 1024;

/// Which decoder a vector is fed to: `None` is a server-side decoder that has
/// not seen CONNECT yet, `Some(v)` one that speaks `v`.
type Side = Option<ProtocolVersion>;
const SERVER: Side = None;
const V3: Side = Some(V311);
const V5_: Side = Some(V5);

/// A rejected vector: name, decoder, bytes, the error, the rule its message cites.
type Rejected = (&'static str, Side, &'static str, DecodeError, &'static str);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The bytes of a hex vector; whitespace between bytes is ignored.
fn bytes_of(hex_str: &str) -> BytesMut {
    let digits: String = hex_str.split_whitespace().collect();
    BytesMut::from(&hex::decode(digits).expect("test vector is valid hex")[..])
}

fn decoder(side: Side) -> Decoder {
    match side {
        Some(v) => Decoder::with_version(v, MAX),
        None => Decoder::new(MAX),
    }
}

/// Decodes the one packet `hex_str` holds and checks that all of it was used.
fn decode_whole(decoder: &mut Decoder, hex_str: &str) -> Packet {
    let mut buf = bytes_of(hex_str);
    let packet = decoder
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{hex_str} is rejected: {e}"))
        .expect("the vector holds a whole packet");
    assert!(buf.is_empty(), "{} bytes left after {packet:?}", buf.len());
    packet
}

fn encode(packet: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    packet.encode(v, &mut out).expect("packet encodes");
    out
}

/// A canonical vector for a decoder that speaks `v`: decodes to `expected`
/// and encodes back to the same bytes.
fn assert_vector(v: ProtocolVersion, hex_str: &str, expected: Packet) {
    let packet = decode_whole(&mut Decoder::with_version(v, MAX), hex_str);
    assert_eq!(packet, expected, "decoding {hex_str}");
    assert_eq!(
        encode(&packet, v),
        bytes_of(hex_str),
        "re-encoding {packet:?}"
    );
}

/// A canonical CONNECT: decodes on a fresh server-side decoder, which then
/// speaks the CONNECT's version, and encodes back to the same bytes.
fn assert_connect_vector(hex_str: &str, expected: Connect) {
    let mut decoder = Decoder::new(MAX);
    let packet = decode_whole(&mut decoder, hex_str);
    assert_eq!(decoder.version(), Some(expected.protocol));
    assert_eq!(
        packet,
        Packet::Connect(Box::new(expected)),
        "decoding {hex_str}"
    );
    assert_eq!(
        encode(&packet, V5),
        bytes_of(hex_str),
        "re-encoding {packet:?}"
    );
}

/// A non-canonical vector: decodes to the same packet as `canonical` does.
fn assert_same_packet(v: ProtocolVersion, long_form: &str, canonical: &str) {
    let long = decode_whole(&mut Decoder::with_version(v, MAX), long_form);
    let short = decode_whole(&mut Decoder::with_version(v, MAX), canonical);
    assert_eq!(long, short, "{long_form} and {canonical} differ");
    assert_eq!(
        encode(&long, v),
        bytes_of(canonical),
        "{long_form} re-encodes"
    );
}

fn decode_error(side: Side, hex_str: &str) -> DecodeError {
    let mut buf = bytes_of(hex_str);
    match decoder(side).decode(&mut buf) {
        Err(e) => e,
        Ok(p) => panic!("{hex_str} is accepted as {p:?}"),
    }
}

fn assert_rejected(cases: &[Rejected]) {
    for (name, side, hex_str, expected, rule) in cases {
        let error = decode_error(*side, hex_str);
        assert_eq!(&error, expected, "{name}: {hex_str}");
        let bytes = bytes_of(hex_str);
        if bytes
            .first()
            .is_some_and(|b| b >> 4 == PacketType::Publish as u8)
        {
            let peeked = decoder(*side).peek(&bytes);
            assert_eq!(
                peeked.err().as_ref(),
                Some(expected),
                "{name}: peek of {hex_str}"
            );
        }
        let text = error.to_string();
        assert!(text.contains(rule), "{name}: {text:?} does not cite {rule}");
    }
}

fn s(v: &str) -> MqttString {
    MqttString::new(v.to_owned()).expect("valid string")
}

fn topic(v: &str) -> TopicName {
    TopicName::new(v.to_owned()).expect("valid topic name")
}

fn filter(v: &str) -> TopicFilter {
    TopicFilter::new(v.to_owned()).expect("valid topic filter")
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("non-zero packet identifier")
}

fn user(name: &str, value: &str) -> UserProperty {
    UserProperty {
        name: s(name),
        value: s(value),
    }
}

fn nz16(v: u16) -> NonZeroU16 {
    NonZeroU16::new(v).expect("non-zero")
}

fn nz32(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

fn sub_id(v: u32) -> SubscriptionId {
    SubscriptionId::new(v).expect("subscription identifier in range")
}

fn ack_props(reason: &str) -> AckProperties {
    AckProperties {
        reason_string: Some(s(reason)),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------

#[test]
fn connect_v311_minimal_decodes_on_server_decoder() {
    let hex_str = concat!(
        "10 0e",             // CONNECT, remaining length 14
        "00 04 4d 51 54 54", // protocol name "MQTT"
        "04",                // protocol level 4 (3.1.1)
        "02",                // flags: clean session
        "00 3c",             // keep alive 60 s
        "00 02 63 31",       // client identifier "c1"
    );
    assert_connect_vector(
        hex_str,
        Connect {
            protocol: V311,
            v31: false,
            clean_start: true,
            keep_alive: 60,
            properties: ConnectProperties::default(),
            client_id: s("c1"),
            will: None,
            username: None,
            password: None,
        },
    );
}

#[test]
fn connect_v311_with_will_username_and_password() {
    let hex_str = concat!(
        "10 20",             // CONNECT, remaining length 32
        "00 04 4d 51 54 54", // protocol name "MQTT"
        "04",                // protocol level 4
        "ee",    // flags: user name, password, will retain, will QoS 1, will, clean session
        "00 0a", // keep alive 10 s
        "00 03 63 6c 69", // client identifier "cli"
        "00 03 77 2f 74", // will topic "w/t"
        "00 03 62 79 65", // will payload "bye"
        "00 01 75", // user name "u"
        "00 02 01 02", // password 01 02
    );
    assert_connect_vector(
        hex_str,
        Connect {
            protocol: V311,
            v31: false,
            clean_start: true,
            keep_alive: 10,
            properties: ConnectProperties::default(),
            client_id: s("cli"),
            will: Some(LastWill {
                topic: topic("w/t"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: WillProperties::default(),
            }),
            username: Some(s("u")),
            password: Some(Bytes::from_static(&[1, 2])),
        },
    );
}

#[test]
fn connect_v5_with_properties() {
    let hex_str = concat!(
        "10 35",                // CONNECT, remaining length 53
        "00 04 4d 51 54 54",    // protocol name "MQTT"
        "05",                   // protocol level 5
        "c2",                   // flags: user name, password, clean start
        "00 1e",                // keep alive 30 s
        "1b",                   // property length 27
        "11 00 00 0e 10",       //   session expiry interval 3600 s
        "21 00 14",             //   receive maximum 20
        "27 00 00 10 00",       //   maximum packet size 4096
        "22 00 0a",             //   topic alias maximum 10
        "19 01",                //   request response information 1
        "17 00",                //   request problem information 0
        "26 00 01 6b 00 01 76", //   user property "k" = "v"
        "00 03 76 35 63",       // client identifier "v5c"
        "00 04 75 73 65 72",    // user name "user"
        "00 02 70 77",          // password "pw"
    );
    assert_connect_vector(
        hex_str,
        Connect {
            protocol: V5,
            v31: false,
            clean_start: true,
            keep_alive: 30,
            properties: ConnectProperties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(nz16(20)),
                maximum_packet_size: Some(nz32(4096)),
                topic_alias_maximum: Some(10),
                request_response_information: Some(true),
                request_problem_information: Some(false),
                user_properties: vec![user("k", "v")],
                ..Default::default()
            },
            client_id: s("v5c"),
            will: None,
            username: Some(s("user")),
            password: Some(Bytes::from_static(b"pw")),
        },
    );
}

#[test]
fn connect_v5_with_will_properties_and_empty_client_id() {
    let hex_str = concat!(
        "10 45",                                  // CONNECT, remaining length 69
        "00 04 4d 51 54 54",                      // protocol name "MQTT"
        "05",                                     // protocol level 5
        "16",                                     // flags: will QoS 2, will, clean start
        "00 00",                                  // keep alive off
        "00",                                     // property length 0
        "00 00",                                  // client identifier "" (server assigns one)
        "2b",                                     // will property length 43
        "18 00 00 00 05",                         //   will delay interval 5 s
        "01 01",                                  //   payload format indicator: UTF-8
        "02 00 00 00 3c",                         //   message expiry interval 60 s
        "03 00 0a 74 65 78 74 2f 70 6c 61 69 6e", //   content type "text/plain"
        "08 00 03 72 2f 74",                      //   response topic "r/t"
        "09 00 02 ab cd",                         //   correlation data ab cd
        "26 00 01 61 00 01 62",                   //   user property "a" = "b"
        "00 04 64 65 61 64",                      // will topic "dead"
        "00 04 67 6f 6e 65",                      // will payload "gone"
    );
    assert_connect_vector(
        hex_str,
        Connect {
            protocol: V5,
            v31: false,
            clean_start: true,
            keep_alive: 0,
            properties: ConnectProperties::default(),
            client_id: s(""),
            will: Some(LastWill {
                topic: topic("dead"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: WillProperties {
                    will_delay_interval: Some(5),
                    payload_format_indicator: Some(true),
                    message_expiry_interval: Some(60),
                    content_type: Some(s("text/plain")),
                    response_topic: Some(topic("r/t")),
                    correlation_data: Some(Bytes::from_static(&[0xab, 0xcd])),
                    user_properties: vec![user("a", "b")],
                },
            }),
            username: None,
            password: None,
        },
    );
}

#[test]
fn connect_v5_accepts_password_without_user_name() {
    let hex_str = concat!(
        "10 11",             // CONNECT, remaining length 17
        "00 04 4d 51 54 54", // protocol name "MQTT"
        "05",                // protocol level 5
        "42",                // flags: password, clean start (no user name)
        "00 00",             // keep alive off
        "00",                // property length 0
        "00 00",             // client identifier ""
        "00 02 70 77",       // password "pw"
    );
    assert_connect_vector(
        hex_str,
        Connect {
            protocol: V5,
            v31: false,
            clean_start: true,
            keep_alive: 0,
            properties: ConnectProperties::default(),
            client_id: s(""),
            will: None,
            username: None,
            password: Some(Bytes::from_static(b"pw")),
        },
    );
}

#[test]
fn server_decoder_adopts_the_version_of_connect() {
    // The same PUBACK with a reason code is v5-valid and 3.1.1-invalid.
    let puback = "40 03 00 01 10"; // PUBACK, id 1, reason 0x10 No matching subscribers
    let connect_v311 = "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31";
    let connect_v5 = "10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 63 31";

    let mut server = Decoder::new(MAX);
    let mut buf = bytes_of(&format!("{connect_v5} {puback}"));
    let first = server.decode(&mut buf).expect("CONNECT decodes");
    assert!(matches!(first, Some(Packet::Connect(c)) if c.protocol == V5));
    assert_eq!(server.version(), Some(V5));
    let second = server.decode(&mut buf).expect("v5 PUBACK decodes");
    assert_eq!(
        second,
        Some(Packet::PubAck(PubAck {
            reason_code: ReasonCode::NoMatchingSubscribers,
            ..PubAck::new(pid(1))
        }))
    );
    assert!(buf.is_empty());

    let mut server = Decoder::new(MAX);
    let mut buf = bytes_of(&format!("{connect_v311} {puback}"));
    server.decode(&mut buf).expect("CONNECT decodes");
    assert_eq!(server.version(), Some(V311));
    let error = server
        .decode(&mut buf)
        .expect_err("3.1.1 PUBACK has no reason code");
    assert_eq!(error, DecodeError::TrailingBytes(1, PacketType::PubAck));
    assert!(error.to_string().contains("[MQTT §2.1.4]"));
}

// ---------------------------------------------------------------------------
// CONNACK
// ---------------------------------------------------------------------------

#[test]
fn connack_v311_accepted_with_session_present() {
    let hex_str = concat!(
        "20 02", // CONNACK, remaining length 2
        "01",    // acknowledge flags: session present
        "00",    // return code 0: accepted
    );
    let expected = ConnAck {
        session_present: true,
        ..Default::default()
    };
    assert_vector(V311, hex_str, Packet::ConnAck(Box::new(expected)));
}

#[test]
fn connack_v311_refusal_return_codes_map_to_reason_codes() {
    let cases = [
        ("20 02 00 01", ReasonCode::UnsupportedProtocolVersion),
        ("20 02 00 02", ReasonCode::ClientIdentifierNotValid),
        ("20 02 00 03", ReasonCode::ServerUnavailable),
        ("20 02 00 04", ReasonCode::BadUserNameOrPassword),
        ("20 02 00 05", ReasonCode::NotAuthorized),
    ];
    for (hex_str, reason_code) in cases {
        let expected = ConnAck {
            reason_code,
            ..Default::default()
        };
        assert_vector(V311, hex_str, Packet::ConnAck(Box::new(expected)));
    }
}

#[test]
fn connack_v5_with_properties() {
    let hex_str = concat!(
        "20 49",                // CONNACK, remaining length 73
        "01",                   // acknowledge flags: session present
        "00",                   // reason code 0x00 Success
        "46",                   // property length 70
        "11 00 00 00 78",       //   session expiry interval 120 s
        "21 00 0a",             //   receive maximum 10
        "24 01",                //   maximum QoS 1
        "25 00",                //   retain available 0
        "27 00 01 00 00",       //   maximum packet size 65536
        "12 00 04 61 75 74 6f", //   assigned client identifier "auto"
        "22 00 05",             //   topic alias maximum 5
        "1f 00 02 6f 6b",       //   reason string "ok"
        "28 01",                //   wildcard subscription available 1
        "29 00",                //   subscription identifiers available 0
        "2a 01",                //   shared subscription available 1
        "13 00 3c",             //   server keep alive 60 s
        "1a 00 03 72 2f 69",    //   response information "r/i"
        "1c 00 03 73 72 76",    //   server reference "srv"
        "15 00 03 74 6f 6b",    //   authentication method "tok"
        "16 00 01 ff",          //   authentication data ff
        "26 00 01 6b 00 01 76", //   user property "k" = "v"
    );
    let expected = ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(nz16(10)),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(nz32(65536)),
            assigned_client_identifier: Some(s("auto")),
            topic_alias_maximum: Some(5),
            reason_string: Some(s("ok")),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(60),
            response_information: Some(s("r/i")),
            server_reference: Some(s("srv")),
            authentication_method: Some(s("tok")),
            authentication_data: Some(Bytes::from_static(&[0xff])),
            user_properties: vec![user("k", "v")],
        },
    };
    assert_vector(V5, hex_str, Packet::ConnAck(Box::new(expected)));
}

#[test]
fn connack_v5_refusal_without_properties() {
    let hex_str = concat!(
        "20 03", // CONNACK, remaining length 3
        "00",    // acknowledge flags: no session
        "87",    // reason code 0x87 Not authorized
        "00",    // property length 0
    );
    let expected = ConnAck {
        reason_code: ReasonCode::NotAuthorized,
        ..Default::default()
    };
    assert_vector(V5, hex_str, Packet::ConnAck(Box::new(expected)));
}

// ---------------------------------------------------------------------------
// PUBLISH
// ---------------------------------------------------------------------------

#[test]
fn publish_v311_qos0() {
    let hex_str = concat!(
        "30 0a",          // PUBLISH QoS 0, remaining length 10
        "00 03 61 2f 62", // topic "a/b"
        "68 65 6c 6c 6f", // payload "hello"
    );
    let expected = Publish::new(topic("a/b"), Bytes::from_static(b"hello"));
    assert_vector(V311, hex_str, Packet::Publish(expected));
}

#[test]
fn publish_v311_qos1_with_dup_and_retain() {
    let hex_str = concat!(
        "3b 08",    // PUBLISH DUP, QoS 1, RETAIN; remaining length 8
        "00 01 74", // topic "t"
        "00 0a",    // packet identifier 10
        "01 02 03", // payload
    );
    let expected = Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        packet_id: Some(pid(10)),
        ..Publish::new(topic("t"), Bytes::from_static(&[1, 2, 3]))
    };
    assert_vector(V311, hex_str, Packet::Publish(expected));
}

#[test]
fn publish_v311_qos2_with_utf8_topic_and_empty_payload() {
    let hex_str = concat!(
        "34 08",             // PUBLISH QoS 2, remaining length 8
        "00 04 63 61 c3 a9", // topic "caé" (U+00E9 is c3 a9)
        "ff ff",             // packet identifier 65535; no payload
    );
    let expected = Publish {
        qos: QoS::ExactlyOnce,
        packet_id: Some(pid(0xffff)),
        ..Publish::new(topic("ca\u{e9}"), Bytes::new())
    };
    assert_vector(V311, hex_str, Packet::Publish(expected));
}

#[test]
fn publish_v5_with_properties() {
    let hex_str = concat!(
        "32 45",                                           // PUBLISH QoS 1, remaining length 69
        "00 05 72 65 71 2f 31",                            // topic "req/1"
        "00 07",                                           // packet identifier 7
        "39",                                              // property length 57
        "01 01",                                           //   payload format indicator: UTF-8
        "02 00 00 01 2c",                                  //   message expiry interval 300 s
        "23 00 03",                                        //   topic alias 3
        "08 00 05 72 73 70 2f 31",                         //   response topic "rsp/1"
        "09 00 04 de ad be ef",                            //   correlation data de ad be ef
        "03 00 10",                                        //   content type, 16 bytes:
        "61 70 70 6c 69 63 61 74 69 6f 6e 2f 6a 73 6f 6e", // "application/json"
        "26 00 02 69 64 00 01 37",                         //   user property "id" = "7"
        "0b 01",                                           //   subscription identifier 1
        "0b 80 01", //   subscription identifier 128 (two-byte varint)
        "7b 7d",    // payload "{}"
    );
    let expected = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: Some(pid(7)),
        properties: Some(Box::new(PublishProperties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(300),
            topic_alias: Some(nz16(3)),
            response_topic: Some(topic("rsp/1")),
            correlation_data: Some(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef])),
            content_type: Some(s("application/json")),
            user_properties: vec![user("id", "7")],
            subscription_identifiers: vec![sub_id(1), sub_id(128)],
        })),
        ..Publish::new(topic("req/1"), Bytes::from_static(b"{}"))
    };
    assert_vector(V5, hex_str, Packet::Publish(expected));
}

#[test]
fn publish_v5_accepts_empty_topic_with_topic_alias() {
    let hex_str = concat!(
        "30 07",    // PUBLISH QoS 0, remaining length 7
        "00 00",    // topic "" (the alias stands for it)
        "03",       // property length 3
        "23 00 01", //   topic alias 1
        "78",       // payload "x"
    );
    let expected = Publish {
        properties: Some(Box::new(PublishProperties {
            topic_alias: Some(nz16(1)),
            ..Default::default()
        })),
        ..Publish::new(TopicName::empty_for_alias(), Bytes::from_static(b"x"))
    };
    assert_vector(V5, hex_str, Packet::Publish(expected));
}

#[test]
fn publish_v5_rejects_empty_topic_without_topic_alias() {
    let hex_str = concat!(
        "30 04", // PUBLISH QoS 0, remaining length 4
        "00 00", // topic ""
        "00",    // property length 0: no topic alias
        "78",    // payload "x"
    );
    let error = decode_error(V5_, hex_str);
    assert_eq!(error, DecodeError::EmptyTopicWithoutAlias);
    assert!(error.to_string().contains("[MQTT §3.3.2.1]"));
    assert_eq!(error.reason_code(), ReasonCode::TopicNameInvalid);
}

// ---------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP
// ---------------------------------------------------------------------------

#[test]
fn publish_acknowledgements_v311() {
    // Fixed header, remaining length 2, packet identifier.
    assert_vector(V311, "40 02 00 01", Packet::PubAck(PubAck::new(pid(1))));
    assert_vector(V311, "50 02 00 02", Packet::PubRec(PubRec::new(pid(2))));
    assert_vector(V311, "62 02 00 03", Packet::PubRel(PubRel::new(pid(3))));
    assert_vector(V311, "70 02 00 04", Packet::PubComp(PubComp::new(pid(4))));
}

#[test]
fn publish_acknowledgements_v5_short_forms() {
    // Remaining length 2: reason code and properties omitted, Success.
    assert_vector(V5, "40 02 00 01", Packet::PubAck(PubAck::new(pid(1))));
    assert_vector(V5, "50 02 00 02", Packet::PubRec(PubRec::new(pid(2))));
    assert_vector(V5, "62 02 00 03", Packet::PubRel(PubRel::new(pid(3))));
    assert_vector(V5, "70 02 00 04", Packet::PubComp(PubComp::new(pid(4))));
    // Remaining length 3: a reason code, property length omitted.
    let puback = PubAck {
        reason_code: ReasonCode::NoMatchingSubscribers,
        ..PubAck::new(pid(1))
    };
    assert_vector(V5, "40 03 00 01 10", Packet::PubAck(puback));
    let pubrel = PubRel {
        reason_code: ReasonCode::PacketIdentifierNotFound,
        ..PubRel::new(pid(3))
    };
    assert_vector(V5, "62 03 00 03 92", Packet::PubRel(pubrel));
    let pubcomp = PubComp {
        reason_code: ReasonCode::PacketIdentifierNotFound,
        ..PubComp::new(pid(4))
    };
    assert_vector(V5, "70 03 00 04 92", Packet::PubComp(pubcomp));
}

#[test]
fn publish_acknowledgements_v5_long_forms_equal_short_forms() {
    // Success spelled out with an empty property block = remaining length 2.
    assert_same_packet(V5, "40 04 00 01 00 00", "40 02 00 01");
    assert_same_packet(V5, "40 03 00 01 00", "40 02 00 01");
    assert_same_packet(V5, "50 04 00 02 00 00", "50 02 00 02");
    assert_same_packet(V5, "62 04 00 03 00 00", "62 02 00 03");
    assert_same_packet(V5, "70 03 00 04 00", "70 02 00 04");
    // A reason code with an empty property block = remaining length 3.
    assert_same_packet(V5, "40 04 00 01 10 00", "40 03 00 01 10");
}

#[test]
fn pubrec_v5_with_reason_code_and_properties() {
    let hex_str = concat!(
        "50 12",                // PUBREC, remaining length 18
        "00 05",                // packet identifier 5
        "80",                   // reason code 0x80 Unspecified error
        "0e",                   // property length 14
        "1f 00 04 66 75 6c 6c", //   reason string "full"
        "26 00 01 6b 00 01 76", //   user property "k" = "v"
    );
    let expected = PubRec {
        packet_id: pid(5),
        reason_code: ReasonCode::UnspecifiedError,
        properties: AckProperties {
            reason_string: Some(s("full")),
            user_properties: vec![user("k", "v")],
        },
    };
    assert_vector(V5, hex_str, Packet::PubRec(expected));
}

// ---------------------------------------------------------------------------
// SUBSCRIBE, SUBACK
// ---------------------------------------------------------------------------

#[test]
fn subscribe_v311_with_wildcard_filters() {
    let hex_str = concat!(
        "82 0e",          // SUBSCRIBE (flags 0010), remaining length 14
        "00 0a",          // packet identifier 10
        "00 03 61 2f 2b", // filter "a/+"
        "01",             //   requested QoS 1
        "00 03 62 2f 23", // filter "b/#"
        "02",             //   requested QoS 2
    );
    let expected = Subscribe {
        packet_id: pid(10),
        properties: SubscribeProperties::default(),
        filters: vec![
            (filter("a/+"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
            (filter("b/#"), SubscriptionOptions::qos(QoS::ExactlyOnce)),
        ],
    };
    assert_vector(V311, hex_str, Packet::Subscribe(expected));
}

#[test]
fn subscribe_v5_with_shared_filter_options_and_properties() {
    let hex_str = concat!(
        "82 23",                                     // SUBSCRIBE (flags 0010), remaining length 35
        "00 0b",                                     // packet identifier 11
        "09",                                        // property length 9
        "0b 05",                                     //   subscription identifier 5
        "26 00 01 6b 00 01 76",                      //   user property "k" = "v"
        "00 0e",                                     // filter, 14 bytes:
        "24 73 68 61 72 65 2f 67 72 70 2f 73 2f 2b", // "$share/grp/s/+"
        "29",             //   options: retain handling 2, retain as published, QoS 1
        "00 03 78 2f 23", // filter "x/#"
        "16",             //   options: retain handling 1, no local, QoS 2
    );
    let shared = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let local = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: false,
        retain_handling: RetainHandling::SendIfNew,
    };
    let expected = Subscribe {
        packet_id: pid(11),
        properties: SubscribeProperties {
            subscription_identifier: Some(sub_id(5)),
            user_properties: vec![user("k", "v")],
        },
        filters: vec![(filter("$share/grp/s/+"), shared), (filter("x/#"), local)],
    };
    let group = expected.filters[0].0.shared().expect("a shared filter");
    assert_eq!((group.group, group.filter), ("grp", "s/+"));
    assert_vector(V5, hex_str, Packet::Subscribe(expected));
}

#[test]
fn suback_v311_granted_qos_and_failure() {
    let hex_str = concat!(
        "90 06",       // SUBACK, remaining length 6
        "00 0a",       // packet identifier 10
        "00 01 02 80", // granted QoS 0, 1, 2, failure
    );
    let expected = SubAck {
        packet_id: pid(10),
        properties: AckProperties::default(),
        reason_codes: vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    };
    assert_vector(V311, hex_str, Packet::SubAck(expected));
}

#[test]
fn suback_v5_with_reason_string() {
    let hex_str = concat!(
        "90 0b",          // SUBACK, remaining length 11
        "00 0b",          // packet identifier 11
        "05",             // property length 5
        "1f 00 02 6e 6f", //   reason string "no"
        "01",             // granted QoS 1
        "97",             // 0x97 Quota exceeded
        "9e",             // 0x9E Shared subscriptions not supported
    );
    let expected = SubAck {
        packet_id: pid(11),
        properties: ack_props("no"),
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::QuotaExceeded,
            ReasonCode::SharedSubscriptionsNotSupported,
        ],
    };
    assert_vector(V5, hex_str, Packet::SubAck(expected));
}

// ---------------------------------------------------------------------------
// UNSUBSCRIBE, UNSUBACK
// ---------------------------------------------------------------------------

#[test]
fn unsubscribe_v311() {
    let hex_str = concat!(
        "a2 0c",          // UNSUBSCRIBE (flags 0010), remaining length 12
        "00 0c",          // packet identifier 12
        "00 03 61 2f 62", // filter "a/b"
        "00 03 63 2f 23", // filter "c/#"
    );
    let expected = Unsubscribe {
        packet_id: pid(12),
        properties: UnsubscribeProperties::default(),
        filters: vec![filter("a/b"), filter("c/#")],
    };
    assert_vector(V311, hex_str, Packet::Unsubscribe(expected));
}

#[test]
fn unsubscribe_v5_with_user_property_and_shared_filter() {
    let hex_str = concat!(
        "a2 16",                         // UNSUBSCRIBE (flags 0010), remaining length 22
        "00 0d",                         // packet identifier 13
        "07",                            // property length 7
        "26 00 01 6b 00 01 76",          //   user property "k" = "v"
        "00 0a",                         // filter, 10 bytes:
        "24 73 68 61 72 65 2f 67 2f 74", // "$share/g/t"
    );
    let expected = Unsubscribe {
        packet_id: pid(13),
        properties: UnsubscribeProperties {
            user_properties: vec![user("k", "v")],
        },
        filters: vec![filter("$share/g/t")],
    };
    assert_vector(V5, hex_str, Packet::Unsubscribe(expected));
}

#[test]
fn unsuback_v311_carries_only_the_packet_identifier() {
    let expected = UnsubAck {
        packet_id: pid(12),
        properties: AckProperties::default(),
        reason_codes: Vec::new(),
    };
    // UNSUBACK, remaining length 2, packet identifier 12.
    assert_vector(V311, "b0 02 00 0c", Packet::UnsubAck(expected));
}

#[test]
fn unsuback_v5_with_reason_codes() {
    let hex_str = concat!(
        "b0 06",    // UNSUBACK, remaining length 6
        "00 0d",    // packet identifier 13
        "00",       // property length 0
        "00 11 8f", // Success, No subscription existed, Topic filter invalid
    );
    let expected = UnsubAck {
        packet_id: pid(13),
        properties: AckProperties::default(),
        reason_codes: vec![
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted,
            ReasonCode::TopicFilterInvalid,
        ],
    };
    assert_vector(V5, hex_str, Packet::UnsubAck(expected));
}

// ---------------------------------------------------------------------------
// PINGREQ, PINGRESP, DISCONNECT, AUTH
// ---------------------------------------------------------------------------

#[test]
fn ping_in_both_versions() {
    for v in [V311, V5] {
        assert_vector(v, "c0 00", Packet::PingReq); // PINGREQ, remaining length 0
        assert_vector(v, "d0 00", Packet::PingResp); // PINGRESP, remaining length 0
    }
}

#[test]
fn disconnect_v311_and_v5_short_forms() {
    // Remaining length 0: Normal disconnection, in both versions.
    assert_vector(V311, "e0 00", Packet::Disconnect(Disconnect::default()));
    assert_vector(V5, "e0 00", Packet::Disconnect(Disconnect::default()));
    // Remaining length 1: reason code 0x04, property length omitted.
    let with_will = Disconnect::new(ReasonCode::DisconnectWithWill);
    assert_vector(V5, "e0 01 04", Packet::Disconnect(with_will));
}

#[test]
fn disconnect_v5_long_forms_equal_short_forms() {
    assert_same_packet(V5, "e0 01 00", "e0 00");
    assert_same_packet(V5, "e0 02 00 00", "e0 00");
    assert_same_packet(V5, "e0 02 04 00", "e0 01 04");
}

#[test]
fn disconnect_v5_with_properties() {
    let hex_str = concat!(
        "e0 13",             // DISCONNECT, remaining length 19
        "9c",                // reason code 0x9C Use another server
        "11",                // property length 17
        "11 00 00 00 00",    //   session expiry interval 0
        "1f 00 03 62 79 65", //   reason string "bye"
        "1c 00 03 73 72 76", //   server reference "srv"
    );
    let expected = Disconnect {
        reason_code: ReasonCode::UseAnotherServer,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some(s("bye")),
            server_reference: Some(s("srv")),
            user_properties: Vec::new(),
        },
    };
    assert_vector(V5, hex_str, Packet::Disconnect(expected));
}

#[test]
fn auth_v5_short_form_and_long_form() {
    // Remaining length 0: Success, no properties.
    assert_vector(V5, "f0 00", Packet::Auth(Box::default()));
    assert_same_packet(V5, "f0 02 00 00", "f0 00");
}

#[test]
fn auth_v5_continue_authentication_with_properties() {
    let hex_str = concat!(
        "f0 14",                   // AUTH, remaining length 20
        "18",                      // reason code 0x18 Continue authentication
        "12",                      // property length 18
        "15 00 05 53 43 52 41 4d", //   authentication method "SCRAM"
        "16 00 03 01 02 03",       //   authentication data 01 02 03
        "1f 00 01 63",             //   reason string "c"
    );
    let expected = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(Bytes::from_static(&[1, 2, 3])),
            reason_string: Some(s("c")),
            user_properties: Vec::new(),
        },
    };
    assert_vector(V5, hex_str, Packet::Auth(Box::new(expected)));
}

#[test]
fn rejects_second_connect_auth_without_property_length_and_orphan_auth_data() {
    use DecodeError::{AuthenticationDataWithoutMethod, InvalidProtocolName, Truncated};
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // "MQIsdp" is only MQTT 3.1's name: with level 4 it is a bad name.
        ("MQIsdp level 4", SERVER, "10 10 00 06 4d 51 49 73 64 70 04 02 00 3c 00 02 63 31", InvalidProtocolName, "[MQTT-3.1.2-1]"),
        // AUTH with a reason code but no property length (§3.15.2.2.1).
        ("AUTH remaining length 1", V5_, "f0 01 18", Truncated("property length"), "[MQTT §1.5]"),
        // v5 CONNECT, properties: authentication data 01 without a method.
        ("CONNECT auth data without method", SERVER, "10 13 00 04 4d 51 54 54 05 02 00 3c 04 16 00 01 01 00 02 63 31", AuthenticationDataWithoutMethod, "[MQTT §3.1.2.11.10]"),
        // AUTH 0x18, properties: authentication data 01 without a method.
        ("AUTH auth data without method", V5_, "f0 06 18 04 16 00 01 01", AuthenticationDataWithoutMethod, "[MQTT §3.1.2.11.10]"),
    ];
    assert_rejected(cases);

    let mut server = Decoder::new(MAX);
    let connect = "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31";
    decode_whole(&mut server, connect);
    let mut again = bytes_of(connect);
    let error = server
        .decode(&mut again)
        .expect_err("a second CONNECT is refused");
    assert_eq!(error, DecodeError::SecondConnect);
    assert!(error.to_string().contains("[MQTT-3.1.0-2]"));
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

#[test]
fn packet_split_across_two_reads_waits_without_consuming() {
    let whole = bytes_of("30 0a 00 03 61 2f 62 68 65 6c 6c 6f");
    for split in 0..whole.len() {
        let mut decoder = Decoder::with_version(V311, MAX);
        let mut buf = BytesMut::from(&whole[..split]);
        let first = decoder.decode(&mut buf).expect("a prefix is not an error");
        assert_eq!(first, None, "decoded from {split} bytes");
        assert_eq!(buf.len(), split, "a partial packet must not be consumed");
        buf.extend_from_slice(&whole[split..]);
        let packet = decoder.decode(&mut buf).expect("whole packet decodes");
        let expected = Publish::new(topic("a/b"), Bytes::from_static(b"hello"));
        assert_eq!(packet, Some(Packet::Publish(expected)));
        assert!(buf.is_empty());
    }
}

#[test]
fn packet_split_inside_a_two_byte_remaining_length() {
    // PUBLISH QoS 0, remaining length 130 (82 01), topic "t", 127-byte payload.
    let mut whole = bytes_of("30 82 01 00 01 74");
    whole.extend_from_slice(&[0x55; 127]);
    let mut decoder = Decoder::with_version(V311, MAX);
    let mut buf = BytesMut::from(&whole[..2]); // "30 82": the length is incomplete
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 2, "a partial fixed header must not be consumed");
    buf.extend_from_slice(&whole[2..]);
    let packet = decoder.decode(&mut buf).expect("whole packet decodes");
    let expected = Publish::new(topic("t"), Bytes::from(vec![0x55; 127]));
    assert_eq!(packet, Some(Packet::Publish(expected)));
    assert!(buf.is_empty());
}

#[test]
fn several_packets_in_one_read_decode_in_order() {
    let stream = concat!(
        "10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 63 31", // v5 CONNECT "c1"
        "c0 00",                                              // PINGREQ
        "e0 01 04",                                           // DISCONNECT with will
    );
    let mut decoder = Decoder::new(MAX);
    let mut buf = bytes_of(stream);
    let mut types = Vec::new();
    while let Some(packet) = decoder.decode(&mut buf).expect("stream decodes") {
        types.push(packet.packet_type());
    }
    assert_eq!(
        types,
        [
            PacketType::Connect,
            PacketType::PingReq,
            PacketType::Disconnect
        ]
    );
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------
// Rejected: encoding of the data representations
// ---------------------------------------------------------------------------

#[test]
fn rejects_malformed_utf8_and_null_characters() {
    use DecodeError::{InvalidUtf8, NullCharacter};
    let utf8 = "[MQTT-1.5.4-1]";
    let null = "[MQTT-1.5.4-2]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // PUBLISH QoS 0, remaining length 4, topic of 2 bytes: c3 28 (c3 needs a continuation byte).
        ("c3 28 in topic", V3, "30 04 00 02 c3 28", InvalidUtf8, utf8),
        // Topic of 3 bytes: ed a0 80 is U+D800, a UTF-16 surrogate.
        ("surrogate in topic", V5_, "30 06 00 03 ed a0 80 00", InvalidUtf8, utf8),
        // Overlong encoding of U+0000.
        ("overlong NUL in topic", V3, "30 04 00 02 c0 80", InvalidUtf8, utf8),
        // CONNECT whose client identifier (00 03 ed a0 80) is a surrogate.
        ("surrogate in client id", SERVER, "10 0f 00 04 4d 51 54 54 04 02 00 3c 00 03 ed a0 80", InvalidUtf8, utf8),
        // v5 SUBSCRIBE id 1, no properties, filter c3 28, options 0.
        ("c3 28 in filter", V5_, "82 08 00 01 00 00 02 c3 28 00", InvalidUtf8, utf8),
        // Topic "a\0b".
        ("NUL in topic", V3, "30 05 00 03 61 00 62", NullCharacter, null),
        // CONNECT whose client identifier is "\0".
        ("NUL in client id", SERVER, "10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 00", NullCharacter, null),
        // v5 PUBLISH "t", property length 7: user property "\0" = "v".
        ("NUL in user property", V5_, "30 0b 00 01 74 07 26 00 01 00 00 01 76", NullCharacter, null),
        // v3 UNSUBSCRIBE id 1, filter "\0".
        ("NUL in filter", V3, "a2 05 00 01 00 01 00", NullCharacter, null),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_bad_variable_byte_integers() {
    use DecodeError::{VarIntNotMinimal, VarIntTooLong};
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // Remaining length ff ff ff ff 7f: a fifth byte.
        ("five-byte remaining length", V3, "30 ff ff ff ff 7f", VarIntTooLong, "[MQTT §1.5.5]"),
        // Four continuation bytes are enough to know it is too long.
        ("four continuation bytes", V5_, "c0 80 80 80 80", VarIntTooLong, "[MQTT §1.5.5]"),
        // Remaining length 80 00 is 0 in two bytes.
        ("non-minimal remaining length", V3, "c0 80 00", VarIntNotMinimal, "[MQTT-1.5.5-1]"),
        // 0a as 8a 80 00.
        ("three-byte remaining length of 10", V3, "30 8a 80 00 00 03 61 2f 62 68 65 6c 6c 6f", VarIntNotMinimal, "[MQTT-1.5.5-1]"),
        // v5 PUBACK id 1, reason 0, property length 80 00.
        ("non-minimal property length", V5_, "40 05 00 01 00 80 00", VarIntNotMinimal, "[MQTT-1.5.5-1]"),
        // v5 PUBLISH "t", property length 3: subscription identifier 81 00 (1 in two bytes).
        ("non-minimal subscription identifier", V5_, "30 07 00 01 74 03 0b 81 00", VarIntNotMinimal, "[MQTT-1.5.5-1]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_truncated_fields() {
    use DecodeError::Truncated;
    let rule = "[MQTT §1.5]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // Topic length 5 with 1 byte left.
        ("topic past the end", V3, "30 03 00 05 61", Truncated("topic name"), rule),
        // QoS 1 PUBLISH ends after the topic.
        ("missing packet id", V3, "32 03 00 01 74", Truncated("packet identifier"), rule),
        // Property length 5 with 1 byte left.
        ("properties past the end", V5_, "30 05 00 01 74 05 01", Truncated("properties"), rule),
        // Property block of 5: user property "k" then a value length cut after one byte.
        ("property value past the end", V5_, "30 09 00 01 74 05 26 00 01 6b 00", Truncated("property"), rule),
        // CONNECT client identifier of length 5 with 2 bytes left.
        ("client id past the end", SERVER, "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 05 63 31", Truncated("client identifier"), rule),
        // CONNECT whose body ends inside the protocol name.
        ("protocol name past the end", SERVER, "10 03 00 04 4d", Truncated("protocol name"), rule),
        // PUBACK with a 1-byte body.
        ("half a packet id", V3, "40 01 00", Truncated("packet identifier"), rule),
        // CONNACK with an empty body.
        ("empty CONNACK", V5_, "20 00", Truncated("connack flags"), rule),
        // v5 CONNACK must carry a property length.
        ("v5 CONNACK without properties", V5_, "20 02 00 00", Truncated("property length"), rule),
        // SUBSCRIBE whose last filter has no options byte.
        ("missing options byte", V3, "82 05 00 01 00 01 61", Truncated("subscription options"), rule),
    ];
    assert_rejected(cases);
}

// ---------------------------------------------------------------------------
// Rejected: fixed header
// ---------------------------------------------------------------------------

#[test]
fn rejects_reserved_packet_types() {
    use DecodeError::ReservedPacketType;
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("type 0 in 3.1.1", V3, "00 00", ReservedPacketType(0), "[MQTT §2.1.2]"),
        ("type 0 in 5.0", V5_, "00 00", ReservedPacketType(0), "[MQTT §2.1.2]"),
        ("type 0 before CONNECT", SERVER, "00 00", ReservedPacketType(0), "[MQTT §2.1.2]"),
        // AUTH (type 15) does not exist in 3.1.1.
        ("AUTH in 3.1.1", V3, "f0 00", ReservedPacketType(15), "[MQTT §2.1.2]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_reserved_fixed_header_flags() {
    fn flags(packet: PacketType, flags: u8) -> DecodeError {
        DecodeError::InvalidHeaderFlags { packet, flags }
    }
    let rule = "[MQTT-2.1.3-1]";
    use PacketType as T;
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry 0010.
        ("PUBREL 0000", V3, "60 02 00 01", flags(T::PubRel, 0), rule),
        ("PUBREL 0011", V5_, "63 02 00 01", flags(T::PubRel, 3), rule),
        ("SUBSCRIBE 0000", V3, "80 06 00 01 00 01 61 00", flags(T::Subscribe, 0), rule),
        ("SUBSCRIBE 1010", V5_, "8a 07 00 01 00 00 01 61 00", flags(T::Subscribe, 0b1010), rule),
        ("UNSUBSCRIBE 0000", V3, "a0 05 00 01 00 01 61", flags(T::Unsubscribe, 0), rule),
        ("UNSUBSCRIBE 0110", V5_, "a6 06 00 01 00 00 01 61", flags(T::Unsubscribe, 0b0110), rule),
        // Every other packet but PUBLISH must carry 0000.
        ("CONNECT 0010", SERVER, "12 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31", flags(T::Connect, 2), rule),
        ("CONNACK 0001", V3, "21 02 00 00", flags(T::ConnAck, 1), rule),
        ("PUBACK 0010", V5_, "42 02 00 01", flags(T::PubAck, 2), rule),
        ("PUBREC 1000", V3, "58 02 00 01", flags(T::PubRec, 8), rule),
        ("PUBCOMP 0010", V5_, "72 02 00 01", flags(T::PubComp, 2), rule),
        ("SUBACK 0010", V3, "92 03 00 01 00", flags(T::SubAck, 2), rule),
        ("UNSUBACK 0010", V3, "b2 02 00 01", flags(T::UnsubAck, 2), rule),
        ("PINGREQ 0001", V3, "c1 00", flags(T::PingReq, 1), rule),
        ("PINGRESP 0100", V5_, "d4 00", flags(T::PingResp, 4), rule),
        ("DISCONNECT 1111", V5_, "ef 00", flags(T::Disconnect, 0xf), rule),
        ("AUTH 0010", V5_, "f2 00", flags(T::Auth, 2), rule),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_trailing_bytes() {
    use DecodeError::TrailingBytes;
    use PacketType as T;
    let rule = "[MQTT §2.1.4]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("PINGREQ with remaining length 1", V3, "c0 01 00", TrailingBytes(1, T::PingReq), rule),
        ("PINGRESP with remaining length 2", V5_, "d0 02 00 00", TrailingBytes(2, T::PingResp), rule),
        ("3.1.1 PUBACK with 3 bytes", V3, "40 03 00 01 00", TrailingBytes(1, T::PubAck), rule),
        ("3.1.1 PUBCOMP with 4 bytes", V3, "70 04 00 01 00 00", TrailingBytes(2, T::PubComp), rule),
        ("3.1.1 DISCONNECT with a body", V3, "e0 01 00", TrailingBytes(1, T::Disconnect), rule),
        ("3.1.1 UNSUBACK with a code", V3, "b0 03 00 01 00", TrailingBytes(1, T::UnsubAck), rule),
        ("3.1.1 CONNACK with 3 bytes", V3, "20 03 00 00 00", TrailingBytes(1, T::ConnAck), rule),
        // v5 PUBACK: id, reason, empty properties, then one more byte.
        ("v5 PUBACK after properties", V5_, "40 05 00 01 00 00 ff", TrailingBytes(1, T::PubAck), rule),
        // v5 DISCONNECT: reason, empty properties, then one more byte.
        ("v5 DISCONNECT after properties", V5_, "e0 03 00 00 00", TrailingBytes(1, T::Disconnect), rule),
        // CONNECT "c1" followed by a stray byte.
        ("CONNECT after the payload", SERVER, "10 0f 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31 00", TrailingBytes(1, T::Connect), rule),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_non_connect_first_packet_on_server_decoder() {
    use DecodeError::ExpectedConnect;
    use PacketType as T;
    let rule = "[MQTT-3.1.0-1]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("PUBLISH first", SERVER, "30 05 00 01 74 68 69", ExpectedConnect(T::Publish), rule),
        ("PINGREQ first", SERVER, "c0 00", ExpectedConnect(T::PingReq), rule),
        ("SUBSCRIBE first", SERVER, "82 06 00 01 00 01 61 00", ExpectedConnect(T::Subscribe), rule),
        ("DISCONNECT first", SERVER, "e0 00", ExpectedConnect(T::Disconnect), rule),
        ("AUTH first", SERVER, "f0 00", ExpectedConnect(T::Auth), rule),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_packet_over_max_from_fixed_header_alone() {
    // PUBLISH with remaining length 200 (c8 01): 203 bytes, only 3 of them here.
    let mut decoder = Decoder::with_version(V5, 64);
    let mut buf = bytes_of("30 c8 01");
    let error = decoder
        .decode(&mut buf)
        .expect_err("203 > 64 before the body arrives");
    assert_eq!(error, DecodeError::PacketTooLarge { size: 203, max: 64 });
    assert!(error.to_string().contains("[MQTT-3.2.2-15]"));
    assert_eq!(error.kind(), ErrorKind::TooLarge);
    assert_eq!(error.reason_code(), ReasonCode::PacketTooLarge);

    // The same on a server decoder, for a CONNECT of 131 bytes (remaining 80 01).
    let mut server = Decoder::new(16);
    let mut buf = bytes_of("10 80 01");
    let error = server
        .decode(&mut buf)
        .expect_err("131 > 16 before the body arrives");
    assert_eq!(error, DecodeError::PacketTooLarge { size: 131, max: 16 });
}

#[test]
fn packet_of_exactly_max_bytes_is_accepted() {
    let hex_str = "30 0a 00 03 61 2f 62 68 65 6c 6c 6f"; // 12 bytes
    let mut at_limit = Decoder::with_version(V311, 12);
    assert!(matches!(
        at_limit.decode(&mut bytes_of(hex_str)),
        Ok(Some(Packet::Publish(_)))
    ));
    let mut below = Decoder::with_version(V311, 11);
    assert_eq!(
        below.decode(&mut bytes_of(hex_str)),
        Err(DecodeError::PacketTooLarge { size: 12, max: 11 })
    );
}

// ---------------------------------------------------------------------------
// Rejected: PUBLISH
// ---------------------------------------------------------------------------

#[test]
fn rejects_invalid_publish_flags() {
    use DecodeError::{DupOnQoS0, InvalidQoS};
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // QoS bits 11.
        ("QoS 3", V3, "36 05 00 01 74 00 01", InvalidQoS, "[MQTT-3.3.1-4]"),
        ("QoS 3 with DUP", V5_, "3e 06 00 01 74 00 01 00", InvalidQoS, "[MQTT-3.3.1-4]"),
        // DUP with QoS 0.
        ("DUP on QoS 0", V3, "38 03 00 01 74", DupOnQoS0, "[MQTT-3.3.1-2]"),
        ("DUP on retained QoS 0", V5_, "39 04 00 01 74 00", DupOnQoS0, "[MQTT-3.3.1-2]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_wildcard_in_publish_topic() {
    use DecodeError::WildcardInTopicName;
    let rule = "[MQTT-3.3.2-2]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("'+' in topic", V3, "30 05 00 03 61 2f 2b", WildcardInTopicName, rule),
        ("'#' in topic", V3, "30 05 00 03 61 2f 23", WildcardInTopicName, rule),
        ("'+' inside a level", V5_, "30 06 00 03 61 2b 62 00", WildcardInTopicName, rule),
        ("'#' in v5 topic", V5_, "30 04 00 01 23 00", WildcardInTopicName, rule),
        // v5 PUBLISH "t", property length 6: response topic "a/#".
        ("'#' in response topic", V5_, "30 0a 00 01 74 06 08 00 03 61 2f 23", WildcardInTopicName, rule),
        // CONNECT "c1" with a will (flags 06) whose topic is "w/#".
        ("'#' in will topic", SERVER, "10 15 00 04 4d 51 54 54 04 06 00 3c 00 02 63 31 00 03 77 2f 23 00 00", WildcardInTopicName, rule),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_empty_topic() {
    use DecodeError::{EmptyTopic, EmptyTopicWithoutAlias};
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("empty 3.1.1 topic", V3, "30 02 00 00", EmptyTopic, "[MQTT-4.7.3-1]"),
        ("empty 3.1.1 topic with payload", V3, "30 03 00 00 78", EmptyTopic, "[MQTT-4.7.3-1]"),
        ("empty v5 topic, no alias", V5_, "30 03 00 00 00", EmptyTopicWithoutAlias, "[MQTT §3.3.2.1]"),
        // QoS 1, empty topic, id 1, property length 2: payload format indicator only.
        ("empty v5 topic, other property", V5_, "32 07 00 00 00 01 02 01 01", EmptyTopicWithoutAlias, "[MQTT §3.3.2.1]"),
        // CONNECT "c1" with a will whose topic is "".
        ("empty will topic", SERVER, "10 12 00 04 4d 51 54 54 04 06 00 3c 00 02 63 31 00 00 00 00", EmptyTopic, "[MQTT-4.7.3-1]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_zero_packet_identifier() {
    use DecodeError::ZeroPacketId;
    let rule = "[MQTT-2.2.1-3]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("PUBLISH QoS 1", V3, "32 05 00 01 74 00 00", ZeroPacketId, rule),
        ("PUBLISH QoS 2", V5_, "34 06 00 01 74 00 00 00", ZeroPacketId, rule),
        ("SUBSCRIBE", V3, "82 06 00 00 00 01 61 00", ZeroPacketId, rule),
        ("v5 SUBSCRIBE", V5_, "82 07 00 00 00 00 01 61 00", ZeroPacketId, rule),
        ("UNSUBSCRIBE", V3, "a2 05 00 00 00 01 61", ZeroPacketId, rule),
        ("PUBACK", V5_, "40 02 00 00", ZeroPacketId, rule),
        ("PUBACK 3.1.1", V3, "40 02 00 00", ZeroPacketId, rule),
        ("PUBREL", V3, "62 02 00 00", ZeroPacketId, rule),
        ("SUBACK", V3, "90 03 00 00 00", ZeroPacketId, rule),
        ("UNSUBACK", V3, "b0 02 00 00", ZeroPacketId, rule),
    ];
    assert_rejected(cases);
}

// ---------------------------------------------------------------------------
// Rejected: SUBSCRIBE and UNSUBSCRIBE
// ---------------------------------------------------------------------------

#[test]
fn rejects_misplaced_wildcards_in_filters() {
    use DecodeError::{EmptyTopic, MisplacedMultiLevelWildcard, MisplacedSingleLevelWildcard};
    let multi = "[MQTT-4.7.1-1]";
    let single = "[MQTT-4.7.1-2]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // SUBSCRIBE id 1, filter "a/b#", options 0.
        ("a/b#", V3, "82 09 00 01 00 04 61 2f 62 23 00", MisplacedMultiLevelWildcard, multi),
        // Filter "a/#/b".
        ("a/#/b", V3, "82 0a 00 01 00 05 61 2f 23 2f 62 00", MisplacedMultiLevelWildcard, multi),
        // Filter "#/": '#' then an empty level.
        ("#/", V5_, "82 08 00 01 00 00 02 23 2f 00", MisplacedMultiLevelWildcard, multi),
        // Filter "a+/b".
        ("a+/b", V3, "82 09 00 01 00 04 61 2b 2f 62 00", MisplacedSingleLevelWildcard, single),
        // Filter "a/+b".
        ("a/+b", V5_, "82 0a 00 01 00 00 04 61 2f 2b 62 00", MisplacedSingleLevelWildcard, single),
        // UNSUBSCRIBE id 1, filter "a/b#".
        ("UNSUBSCRIBE a/b#", V3, "a2 08 00 01 00 04 61 2f 62 23", MisplacedMultiLevelWildcard, multi),
        // UNSUBSCRIBE v5, filter "a+".
        ("UNSUBSCRIBE a+", V5_, "a2 07 00 01 00 00 02 61 2b", MisplacedSingleLevelWildcard, single),
        // An empty filter.
        ("empty filter", V3, "82 05 00 01 00 00 00", EmptyTopic, "[MQTT-4.7.3-1]"),
        ("empty UNSUBSCRIBE filter", V5_, "a2 05 00 01 00 00 00", EmptyTopic, "[MQTT-4.7.3-1]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_empty_subscribe_and_unsubscribe() {
    use DecodeError::{EmptySubscribe, EmptyUnsubscribe};
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("SUBSCRIBE 3.1.1", V3, "82 02 00 01", EmptySubscribe, "[MQTT-3.8.3-2]"),
        ("SUBSCRIBE v5", V5_, "82 03 00 01 00", EmptySubscribe, "[MQTT-3.8.3-2]"),
        // v5 SUBSCRIBE with properties (subscription identifier 1) but no filter.
        ("SUBSCRIBE v5 with properties", V5_, "82 05 00 01 02 0b 01", EmptySubscribe, "[MQTT-3.8.3-2]"),
        ("UNSUBSCRIBE 3.1.1", V3, "a2 02 00 01", EmptyUnsubscribe, "[MQTT-3.10.3-2]"),
        ("UNSUBSCRIBE v5", V5_, "a2 03 00 01 00", EmptyUnsubscribe, "[MQTT-3.10.3-2]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_invalid_subscription_options() {
    use DecodeError::{
        InvalidRetainHandling, InvalidSubscriptionOptions, NoLocalOnSharedSubscription,
    };
    let reserved = "[MQTT-3.8.3-5]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // 3.1.1 SUBSCRIBE id 1, filter "a", options byte as named.
        ("3.1.1 bit 2 (v5 No Local)", V3, "82 06 00 01 00 01 61 04", InvalidSubscriptionOptions, reserved),
        ("3.1.1 bit 7", V3, "82 06 00 01 00 01 61 80", InvalidSubscriptionOptions, reserved),
        ("3.1.1 QoS 3", V3, "82 06 00 01 00 01 61 03", InvalidSubscriptionOptions, reserved),
        // v5 SUBSCRIBE id 1, no properties, filter "a", options byte as named.
        ("v5 bit 6", V5_, "82 07 00 01 00 00 01 61 40", InvalidSubscriptionOptions, reserved),
        ("v5 bit 7", V5_, "82 07 00 01 00 00 01 61 81", InvalidSubscriptionOptions, reserved),
        ("v5 QoS 3", V5_, "82 07 00 01 00 00 01 61 03", InvalidSubscriptionOptions, reserved),
        ("v5 retain handling 3", V5_, "82 07 00 01 00 00 01 61 30", InvalidRetainHandling, "[MQTT §3.8.3.1]"),
        // Filter "$share/g/a" (24 73 68 61 72 65 2f 67 2f 61), options 04: No Local.
        ("No Local on a shared filter", V5_, "82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04", NoLocalOnSharedSubscription, "[MQTT-3.8.3-4]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_invalid_shared_subscription_filters() {
    use DecodeError::{InvalidSharedSubscription, MisplacedMultiLevelWildcard};
    let rule = "[MQTT-4.8.2-1]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // v5 SUBSCRIBE id 1, no properties, filter as named, options 0.
        // "$share//a": empty share name.
        ("$share//a", V5_, "82 0f 00 01 00 00 09 24 73 68 61 72 65 2f 2f 61 00", InvalidSharedSubscription, rule),
        // "$share/g": no filter after the share name.
        ("$share/g", V5_, "82 0e 00 01 00 00 08 24 73 68 61 72 65 2f 67 00", InvalidSharedSubscription, rule),
        // "$share/g/": empty filter.
        ("$share/g/", V5_, "82 0f 00 01 00 00 09 24 73 68 61 72 65 2f 67 2f 00", InvalidSharedSubscription, rule),
        // "$share/g+/a": wildcard in the share name.
        ("$share/g+/a", V5_, "82 11 00 01 00 00 0b 24 73 68 61 72 65 2f 67 2b 2f 61 00", InvalidSharedSubscription, rule),
        // "$share/#/a": '#' as the share name.
        ("$share/#/a", V5_, "82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 23 2f 61 00", InvalidSharedSubscription, rule),
        // "$share/g/a#": the filter part is checked too.
        ("$share/g/a#", V5_, "82 11 00 01 00 00 0b 24 73 68 61 72 65 2f 67 2f 61 23 00", MisplacedMultiLevelWildcard, "[MQTT-4.7.1-1]"),
        // UNSUBSCRIBE v5 id 1, no properties, "$share//a".
        ("UNSUBSCRIBE $share//a", V5_, "a2 0e 00 01 00 00 09 24 73 68 61 72 65 2f 2f 61", InvalidSharedSubscription, rule),
    ];
    assert_rejected(cases);
}

// ---------------------------------------------------------------------------
// Rejected: CONNECT
// ---------------------------------------------------------------------------

#[test]
fn rejects_invalid_connect_header() {
    use DecodeError::{
        ConnectReservedFlag, InvalidProtocolName, InvalidWillQoS, PasswordWithoutUsername,
        UnsupportedProtocolLevel, WillFlagsWithoutWill,
    };
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // Protocol name "MQTX".
        ("protocol name MQTX", SERVER, "10 0e 00 04 4d 51 54 58 04 02 00 3c 00 02 63 31", InvalidProtocolName, "[MQTT-3.1.2-1]"),
        // Protocol name "mqtt": case matters.
        ("protocol name mqtt", SERVER, "10 0e 00 04 6d 71 74 74 04 02 00 3c 00 02 63 31", InvalidProtocolName, "[MQTT-3.1.2-1]"),
        // "MQTT" with level 6.
        ("level 6", SERVER, "10 0e 00 04 4d 51 54 54 06 02 00 3c 00 02 63 31", UnsupportedProtocolLevel(6), "[MQTT-3.1.2-2]"),
        // Flags 03: clean session and the reserved bit.
        ("reserved flag", SERVER, "10 0e 00 04 4d 51 54 54 04 03 00 3c 00 02 63 31", ConnectReservedFlag, "[MQTT-3.1.2-3]"),
        ("reserved flag v5", SERVER, "10 0f 00 04 4d 51 54 54 05 01 00 3c 00 00 02 63 31", ConnectReservedFlag, "[MQTT-3.1.2-3]"),
        // Flags 0a: will QoS 1 without the will flag.
        ("will QoS without will", SERVER, "10 0e 00 04 4d 51 54 54 04 0a 00 3c 00 02 63 31", WillFlagsWithoutWill, "[MQTT-3.1.2-11]"),
        // Flags 22: will retain without the will flag.
        ("will retain without will", SERVER, "10 0f 00 04 4d 51 54 54 05 22 00 3c 00 00 02 63 31", WillFlagsWithoutWill, "[MQTT-3.1.2-11]"),
        // Flags 1e: will flag with will QoS 3.
        ("will QoS 3", SERVER, "10 12 00 04 4d 51 54 54 04 1e 00 3c 00 02 63 31 00 01 77 00 00", InvalidWillQoS, "[MQTT-3.1.2-12]"),
        // 3.1.1 flags 42: password without user name, then password "pw".
        ("3.1.1 password without user name", SERVER, "10 12 00 04 4d 51 54 54 04 42 00 3c 00 02 63 31 00 02 70 77", PasswordWithoutUsername, "[MQTT-3.1.2-22]"),
    ];
    assert_rejected(cases);
}

// ---------------------------------------------------------------------------
// Rejected: properties
// ---------------------------------------------------------------------------

#[test]
fn rejects_properties_not_allowed_in_the_packet() {
    fn not_allowed(id: u32, packet: &'static str) -> DecodeError {
        DecodeError::PropertyNotAllowed { id, packet }
    }
    let rule = "[MQTT §2.2.2.2]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // v5 CONNECT "c1", property length 3: topic alias 1.
        ("topic alias in CONNECT", SERVER, "10 12 00 04 4d 51 54 54 05 02 00 3c 03 23 00 01 00 02 63 31", not_allowed(0x23, "CONNECT"), rule),
        // v5 CONNECT "c1" with a will (flags 06) whose properties (length 5)
        // hold a session expiry interval; will topic "w", empty payload.
        ("session expiry in will properties", SERVER, "10 1a 00 04 4d 51 54 54 05 06 00 3c 00 00 02 63 31 05 11 00 00 00 01 00 01 77 00 00", not_allowed(0x11, "Will"), rule),
        // v5 PUBLISH "t", property length 5: session expiry interval 10.
        ("session expiry in PUBLISH", V5_, "30 09 00 01 74 05 11 00 00 00 0a", not_allowed(0x11, "PUBLISH"), rule),
        // v5 PUBLISH "t", property length 2: identifier 05 is not defined.
        ("unknown property", V5_, "30 06 00 01 74 02 05 00", not_allowed(0x05, "PUBLISH"), rule),
        // v5 PUBACK id 1, Success, property length 5: session expiry interval.
        ("session expiry in PUBACK", V5_, "40 09 00 01 00 05 11 00 00 00 01", not_allowed(0x11, "acknowledgement"), rule),
        // v5 SUBSCRIBE id 1, property length 3: topic alias.
        ("topic alias in SUBSCRIBE", V5_, "82 0a 00 01 03 23 00 01 00 01 61 00", not_allowed(0x23, "SUBSCRIBE"), rule),
        // v5 UNSUBSCRIBE id 1, property length 2: subscription identifier.
        ("subscription id in UNSUBSCRIBE", V5_, "a2 08 00 01 02 0b 01 00 01 61", not_allowed(0x0b, "UNSUBSCRIBE"), rule),
        // v5 CONNACK, property length 2: request problem information.
        ("CONNECT property in CONNACK", V5_, "20 05 00 00 02 17 01", not_allowed(0x17, "CONNACK"), rule),
        // v5 DISCONNECT, property length 3: receive maximum.
        ("receive maximum in DISCONNECT", V5_, "e0 05 00 03 21 00 01", not_allowed(0x21, "DISCONNECT"), rule),
        // v5 AUTH, Continue, property length 5: session expiry interval.
        ("session expiry in AUTH", V5_, "f0 07 18 05 11 00 00 00 01", not_allowed(0x11, "AUTH"), rule),
        // v5 PUBLISH "t", property length 3: identifier 80 01 (128, two bytes).
        ("two-byte property id", V5_, "30 07 00 01 74 03 80 01 00", not_allowed(0x80, "PUBLISH"), rule),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_duplicate_properties() {
    use DecodeError::DuplicateProperty;
    let rule = "[MQTT §2.2.2.2]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // v5 CONNECT "c1", property length 10: session expiry 1, session expiry 2.
        ("session expiry twice in CONNECT", SERVER, "10 19 00 04 4d 51 54 54 05 02 00 3c 0a 11 00 00 00 01 11 00 00 00 02 00 02 63 31", DuplicateProperty(0x11), rule),
        // v5 PUBLISH "t", property length 6: topic alias 1, topic alias 2.
        ("topic alias twice", V5_, "30 0a 00 01 74 06 23 00 01 23 00 02", DuplicateProperty(0x23), rule),
        // v5 SUBSCRIBE id 1, property length 4: subscription identifier 1 twice.
        ("subscription id twice in SUBSCRIBE", V5_, "82 0b 00 01 04 0b 01 0b 01 00 01 61 00", DuplicateProperty(0x0b), rule),
        // v5 PUBACK id 1, Success, property length 8: reason string "a" twice.
        ("reason string twice", V5_, "40 0c 00 01 00 08 1f 00 01 61 1f 00 01 61", DuplicateProperty(0x1f), rule),
    ];
    assert_rejected(cases);
}

#[test]
fn repeatable_properties_may_appear_more_than_once() {
    // v5 PUBACK id 1, Success, property length 14: user property "k" = "v" twice.
    let hex_str = "40 12 00 01 00 0e 26 00 01 6b 00 01 76 26 00 01 6b 00 01 76";
    let expected = PubAck {
        properties: AckProperties {
            reason_string: None,
            user_properties: vec![user("k", "v"), user("k", "v")],
        },
        ..PubAck::new(pid(1))
    };
    assert_vector(V5, hex_str, Packet::PubAck(expected));
}

#[test]
fn rejects_invalid_property_values() {
    use DecodeError::{InvalidPropertyValue, ZeroTopicAlias};
    let rule = "[MQTT §2.2.2.2]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // v5 PUBLISH "t", property length 2: payload format indicator 2.
        ("payload format indicator 2", V5_, "30 06 00 01 74 02 01 02", InvalidPropertyValue(0x01), rule),
        // v5 PUBLISH "t", property length 3: topic alias 0.
        ("topic alias 0", V5_, "30 07 00 01 74 03 23 00 00", ZeroTopicAlias, "[MQTT-3.3.2-8]"),
        // v5 PUBLISH "t", property length 2: subscription identifier 0.
        ("subscription id 0 in PUBLISH", V5_, "30 06 00 01 74 02 0b 00", InvalidPropertyValue(0x0b), rule),
        // v5 SUBSCRIBE id 1, property length 2: subscription identifier 0.
        ("subscription id 0 in SUBSCRIBE", V5_, "82 09 00 01 02 0b 00 00 01 61 00", InvalidPropertyValue(0x0b), rule),
        // v5 CONNECT "c1", property length 3: receive maximum 0.
        ("receive maximum 0 in CONNECT", SERVER, "10 12 00 04 4d 51 54 54 05 02 00 3c 03 21 00 00 00 02 63 31", InvalidPropertyValue(0x21), rule),
        // v5 CONNECT "c1", property length 5: maximum packet size 0.
        ("maximum packet size 0", SERVER, "10 14 00 04 4d 51 54 54 05 02 00 3c 05 27 00 00 00 00 00 02 63 31", InvalidPropertyValue(0x27), rule),
        // v5 CONNECT "c1", property length 2: request problem information 2.
        ("request problem information 2", SERVER, "10 11 00 04 4d 51 54 54 05 02 00 3c 02 17 02 00 02 63 31", InvalidPropertyValue(0x17), rule),
        // v5 CONNACK, property length 2: maximum QoS 2.
        ("maximum QoS 2", V5_, "20 05 00 00 02 24 02", InvalidPropertyValue(0x24), rule),
        // v5 CONNACK, property length 3: receive maximum 0.
        ("receive maximum 0 in CONNACK", V5_, "20 06 00 00 03 21 00 00", InvalidPropertyValue(0x21), rule),
        // v5 CONNACK, property length 2: retain available 2.
        ("retain available 2", V5_, "20 05 00 00 02 25 02", InvalidPropertyValue(0x25), rule),
    ];
    assert_rejected(cases);
}

// ---------------------------------------------------------------------------
// Rejected: reason codes and CONNACK flags
// ---------------------------------------------------------------------------

#[test]
fn rejects_reason_codes_not_valid_for_the_packet() {
    fn invalid(code: u8, packet: PacketType) -> DecodeError {
        DecodeError::InvalidReasonCode { code, packet }
    }
    use PacketType as T;
    let rule = "[MQTT §2.4]";
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        // PUBACK id 1 with 0x04 (Disconnect with Will, DISCONNECT only).
        ("0x04 in PUBACK", V5_, "40 03 00 01 04", invalid(0x04, T::PubAck), rule),
        ("0x92 in PUBACK", V5_, "40 03 00 01 92", invalid(0x92, T::PubAck), rule),
        ("0x10 in PUBREL", V5_, "62 03 00 01 10", invalid(0x10, T::PubRel), rule),
        ("0x80 in PUBCOMP", V5_, "70 03 00 01 80", invalid(0x80, T::PubComp), rule),
        // CONNACK with 0x8E (Session taken over, DISCONNECT only).
        ("0x8E in CONNACK", V5_, "20 03 00 8e 00", invalid(0x8e, T::ConnAck), rule),
        ("0x01 in CONNACK", V5_, "20 03 00 01 00", invalid(0x01, T::ConnAck), rule),
        // 3.1.1 CONNACK return codes stop at 5.
        ("3.1.1 CONNACK return code 6", V3, "20 02 00 06", invalid(0x06, T::ConnAck), rule),
        // 3.1.1 SUBACK allows 0, 1, 2 and 0x80 only.
        ("3.1.1 SUBACK 0x03", V3, "90 03 00 01 03", invalid(0x03, T::SubAck), rule),
        ("3.1.1 SUBACK 0x87", V3, "90 03 00 01 87", invalid(0x87, T::SubAck), rule),
        ("v5 SUBACK 0x11", V5_, "90 04 00 01 00 11", invalid(0x11, T::SubAck), rule),
        ("v5 UNSUBACK 0x01", V5_, "b0 04 00 01 00 01", invalid(0x01, T::UnsubAck), rule),
        ("DISCONNECT 0x18", V5_, "e0 01 18", invalid(0x18, T::Disconnect), rule),
        ("DISCONNECT undefined 0x05", V5_, "e0 01 05", invalid(0x05, T::Disconnect), rule),
        ("AUTH 0x8B", V5_, "f0 02 8b 00", invalid(0x8b, T::Auth), rule),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_empty_reason_code_lists() {
    use DecodeError::EmptyAck;
    use PacketType as T;
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("3.1.1 SUBACK", V3, "90 02 00 01", EmptyAck(T::SubAck), "[MQTT §3.9.3]"),
        ("v5 SUBACK", V5_, "90 03 00 01 00", EmptyAck(T::SubAck), "[MQTT §3.9.3]"),
        ("v5 UNSUBACK", V5_, "b0 03 00 01 00", EmptyAck(T::UnsubAck), "[MQTT §3.9.3]"),
    ];
    assert_rejected(cases);
}

#[test]
fn rejects_invalid_connack_flags() {
    use DecodeError::{ConnAckReservedFlags, SessionPresentOnRefusal};
    #[rustfmt::skip]
    let cases: &[Rejected] = &[
        ("3.1.1 reserved bit 1", V3, "20 02 02 00", ConnAckReservedFlags, "[MQTT §3.2.2.1]"),
        ("v5 reserved bit 7", V5_, "20 03 80 00 00", ConnAckReservedFlags, "[MQTT §3.2.2.1]"),
        // Session present with return code 5 (not authorized).
        ("3.1.1 session present on refusal", V3, "20 02 01 05", SessionPresentOnRefusal, "[MQTT-3.2.2-6]"),
        // Session present with reason code 0x87 (not authorized).
        ("v5 session present on refusal", V5_, "20 03 01 87 00", SessionPresentOnRefusal, "[MQTT-3.2.2-6]"),
    ];
    assert_rejected(cases);
}

// ---------------------------------------------------------------------------
// The reason code a server answers an error with
// ---------------------------------------------------------------------------

#[test]
fn errors_map_to_v5_reason_codes() {
    let cases = [
        // Wildcard in a topic name: Topic Name invalid.
        (
            V5_,
            "30 04 00 01 23 00",
            ReasonCode::TopicNameInvalid,
            ErrorKind::Malformed,
        ),
        // Empty topic without alias: Topic Name invalid.
        (
            V5_,
            "30 03 00 00 00",
            ReasonCode::TopicNameInvalid,
            ErrorKind::Protocol,
        ),
        // Topic alias 0: Topic Alias invalid.
        (
            V5_,
            "30 07 00 01 74 03 23 00 00",
            ReasonCode::TopicAliasInvalid,
            ErrorKind::Protocol,
        ),
        // Malformed UTF-8, non-minimal varint, reserved flags: Malformed Packet.
        (
            V5_,
            "30 04 00 02 c3 28",
            ReasonCode::MalformedPacket,
            ErrorKind::Malformed,
        ),
        (
            V5_,
            "c0 80 00",
            ReasonCode::MalformedPacket,
            ErrorKind::Malformed,
        ),
        (
            V5_,
            "60 02 00 01",
            ReasonCode::MalformedPacket,
            ErrorKind::Malformed,
        ),
        // Duplicate property, zero packet id, DUP on QoS 0: Protocol Error.
        (
            V5_,
            "30 0a 00 01 74 06 23 00 01 23 00 02",
            ReasonCode::ProtocolError,
            ErrorKind::Protocol,
        ),
        (
            V5_,
            "40 02 00 00",
            ReasonCode::ProtocolError,
            ErrorKind::Protocol,
        ),
        (
            V5_,
            "38 03 00 01 74",
            ReasonCode::ProtocolError,
            ErrorKind::Protocol,
        ),
        // Not CONNECT first: Protocol Error.
        (
            SERVER,
            "c0 00",
            ReasonCode::ProtocolError,
            ErrorKind::Protocol,
        ),
        // Protocol level 6: Unsupported Protocol Version.
        (
            SERVER,
            "10 0e 00 04 4d 51 54 54 06 02 00 3c 00 02 63 31",
            ReasonCode::UnsupportedProtocolVersion,
            ErrorKind::Unsupported,
        ),
    ];
    for (side, hex_str, reason_code, kind) in cases {
        let error = decode_error(side, hex_str);
        assert_eq!(error.reason_code(), reason_code, "{hex_str}: {error}");
        assert_eq!(error.kind(), kind, "{hex_str}: {error}");
    }
    let too_large = DecodeError::PacketTooLarge { size: 2, max: 1 };
    assert_eq!(too_large.reason_code(), ReasonCode::PacketTooLarge);
    assert_eq!(
        DecodeError::DuplicateProperty(0x11).reason_code(),
        ReasonCode::ProtocolError
    );
}

#[test]
fn connect_mqtt_3_1_decodes_as_3_1_1_flagged() {
    let hex_str = concat!(
        "10 10",                   // CONNECT, remaining length 16
        "00 06 4d 51 49 73 64 70", // protocol name "MQIsdp"
        "03",                      // protocol level 3 (3.1)
        "02",                      // flags: clean session
        "00 3c",                   // keep alive 60 s
        "00 02 63 31",             // client identifier "c1"
    );
    assert_connect_vector(
        hex_str,
        Connect {
            protocol: V311,
            v31: true,
            clean_start: true,
            keep_alive: 60,
            properties: ConnectProperties::default(),
            client_id: s("c1"),
            will: None,
            username: None,
            password: None,
        },
    );
}
