//! Property tests: for every packet type and both protocol versions,
//! decode(encode(p)) == p with every byte consumed, every strict prefix of an
//! encoding asks for more bytes, re-encoding gives identical bytes, and
//! arbitrary bytes never make the decoder panic.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use ringmq_protocol::properties::*;
use ringmq_protocol::*;

const MAX: usize = 1 << 20;

fn string() -> impl Strategy<Value = MqttString> {
    "\\PC{0,12}".prop_map(|s| MqttString::new(s).expect("no control characters"))
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]{0,6}", "\\PL{1,3}", Just("$SYS".to_string())]
}

fn topic_name() -> impl Strategy<Value = TopicName> {
    vec(level(), 1..5).prop_filter_map("empty topic", |l| TopicName::new(l.join("/")).ok())
}

fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let levels = vec(prop_oneof![level(), Just("+".to_string())], 1..5);
    let share = of("[a-z]{1,5}");
    (levels, any::<bool>(), share).prop_filter_map("empty filter", |(mut l, hash, share)| {
        if hash {
            l.push("#".into());
        }
        let plain = l.join("/");
        let s = match share {
            Some(g) => format!("$share/{g}/{plain}"),
            None => plain,
        };
        TopicFilter::new(s).ok()
    })
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..200).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| PacketId::new(id).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn nz16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|v| NonZeroU16::new(v).expect("non-zero"))
}

fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).expect("non-zero"))
}

fn sub_id() -> impl Strategy<Value = SubscriptionId> {
    (1..=VARINT_MAX).prop_map(|v| SubscriptionId::new(v).expect("in range"))
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    vec(
        (string(), string()).prop_map(|(name, value)| UserProperty { name, value }),
        0..3,
    )
}

fn reason(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let valid: Vec<_> = (0..=255u8)
        .filter_map(ReasonCode::from_u8)
        .filter(|rc| rc.valid_in(packet))
        .collect();
    proptest::sample::select(valid)
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (of(any::<u32>()), of(nz16()), of(nz32()), of(any::<u16>())),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of(string()),
            of(binary()),
        ),
        user_properties(),
    )
        .prop_map(
            |((se, rm, mps, tam), (rri, rpi, am, ad), up)| ConnectProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_data: ad.filter(|_| am.is_some()),
                authentication_method: am,
                user_properties: up,
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        (of(any::<u32>()), of(any::<bool>()), of(any::<u32>())),
        (of(string()), of(topic_name()), of(binary())),
        user_properties(),
    )
        .prop_map(|((wd, pfi, mei), (ct, rt, cd), up)| WillProperties {
            will_delay_interval: wd,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        (of(any::<bool>()), of(any::<u32>()), of(nz16())),
        (of(topic_name()), of(binary()), of(string())),
        (user_properties(), vec(sub_id(), 0..3)),
    )
        .prop_map(
            |((pfi, mei, ta), (rt, cd, ct), (up, si))| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                content_type: ct,
                user_properties: up,
                subscription_identifiers: si,
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let max_qos = prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)];
    (
        (of(any::<u32>()), of(nz16()), of(max_qos), of(any::<bool>())),
        (of(nz32()), of(string()), of(any::<u16>()), of(string())),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<u16>()),
        ),
        (of(string()), of(string()), of(string()), of(binary())),
        user_properties(),
    )
        .prop_map(|(a, b, c, d, up)| ConnAckProperties {
            session_expiry_interval: a.0,
            receive_maximum: a.1,
            maximum_qos: a.2,
            retain_available: a.3,
            maximum_packet_size: b.0,
            assigned_client_identifier: b.1,
            topic_alias_maximum: b.2,
            reason_string: b.3,
            wildcard_subscription_available: c.0,
            subscription_identifiers_available: c.1,
            shared_subscription_available: c.2,
            server_keep_alive: c.3,
            response_information: d.0,
            server_reference: d.1,
            authentication_data: d.3.filter(|_| d.2.is_some()),
            authentication_method: d.2,
            user_properties: up,
        })
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(string()), user_properties()).prop_map(|(rs, up)| AckProperties {
        reason_string: rs,
        user_properties: up,
    })
}

/// Strategies for v5-only values: the v5 strategy, or the default for 3.1.1.
fn v5_or_default<T: Default + Clone + std::fmt::Debug + 'static>(
    v: ProtocolVersion,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    match v {
        ProtocolVersion::V5 => s.boxed(),
        ProtocolVersion::V311 => Just(T::default()).boxed(),
    }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        payload(),
        qos(),
        any::<bool>(),
        v5_or_default(v, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    let creds = (of(string()), of(binary()))
        .prop_filter("3.1.1: no password without user name", move |(u, p)| {
            v == ProtocolVersion::V5 || u.is_some() || p.is_none()
        });
    (
        (
            any::<bool>(),
            any::<u16>(),
            v5_or_default(v, connect_properties()),
        ),
        (string(), of(will), creds),
    )
        .prop_map(
            move |(
                (clean_start, keep_alive, properties),
                (client_id, will, (username, password)),
            )| {
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    v31: false,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = match v {
        ProtocolVersion::V5 => reason(PacketType::ConnAck).boxed(),
        ProtocolVersion::V311 => prop_oneof![
            Just(ReasonCode::Success),
            Just(ReasonCode::UnsupportedProtocolVersion),
            Just(ReasonCode::ClientIdentifierNotValid),
            Just(ReasonCode::ServerUnavailable),
            Just(ReasonCode::BadUserNameOrPassword),
            Just(ReasonCode::NotAuthorized),
        ]
        .boxed(),
    };
    (any::<bool>(), code, v5_or_default(v, connack_properties())).prop_map(
        |(sp, reason_code, properties)| {
            Packet::ConnAck(Box::new(ConnAck {
                session_present: sp && !reason_code.is_error(),
                reason_code,
                properties,
            }))
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        (qos(), any::<bool>(), any::<bool>(), packet_id()),
        (
            topic_name(),
            v5_or_default(v, publish_properties()),
            payload(),
        ),
    )
        .prop_map(|((qos, dup, retain, id), (topic, properties, payload))| {
            Packet::Publish(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties: Some(Box::new(properties)),
                payload,
            })
        })
}

fn ack(v: ProtocolVersion, t: PacketType) -> impl Strategy<Value = Packet> {
    let code = v5_or_default(v, reason(t));
    (packet_id(), code, v5_or_default(v, ack_properties())).prop_map(
        move |(packet_id, reason_code, properties)| match t {
            PacketType::PubAck => Packet::PubAck(PubAck {
                packet_id,
                reason_code,
                properties,
            }),
            PacketType::PubRec => Packet::PubRec(PubRec {
                packet_id,
                reason_code,
                properties,
            }),
            PacketType::PubRel => Packet::PubRel(PubRel {
                packet_id,
                reason_code,
                properties,
            }),
            _ => Packet::PubComp(PubComp {
                packet_id,
                reason_code,
                properties,
            }),
        },
    )
}

fn subscription_options(v: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    let v5 = (qos(), any::<bool>(), any::<bool>(), rh).prop_map(
        |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
            qos,
            no_local,
            retain_as_published,
            retain_handling,
        },
    );
    match v {
        ProtocolVersion::V5 => v5.boxed(),
        ProtocolVersion::V311 => qos().prop_map(SubscriptionOptions::qos).boxed(),
    }
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let entry = (topic_filter(), subscription_options(v)).prop_map(|(f, mut o)| {
        o.no_local &= f.shared().is_none();
        (f, o)
    });
    let props = (of(sub_id()), user_properties()).prop_map(|(si, up)| SubscribeProperties {
        subscription_identifier: si,
        user_properties: up,
    });
    (packet_id(), v5_or_default(v, props), vec(entry, 1..5)).prop_map(
        |(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        },
    )
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let props = user_properties().prop_map(|up| UnsubscribeProperties {
        user_properties: up,
    });
    (
        packet_id(),
        v5_or_default(v, props),
        vec(topic_filter(), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = match v {
        ProtocolVersion::V5 => reason(PacketType::SubAck).boxed(),
        ProtocolVersion::V311 => prop_oneof![
            Just(ReasonCode::Success),
            Just(ReasonCode::GrantedQoS1),
            Just(ReasonCode::GrantedQoS2),
            Just(ReasonCode::UnspecifiedError),
        ]
        .boxed(),
    };
    (
        packet_id(),
        v5_or_default(v, ack_properties()),
        vec(code, 1..6),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = v5_or_default(v, vec(reason(PacketType::UnsubAck), 1..6));
    (packet_id(), v5_or_default(v, ack_properties()), codes).prop_map(
        |(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        },
    )
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let props = (
        of(any::<u32>()),
        of(string()),
        of(string()),
        user_properties(),
    )
        .prop_map(|(se, rs, sr, up)| DisconnectProperties {
            session_expiry_interval: se,
            reason_string: rs,
            server_reference: sr,
            user_properties: up,
        });
    (
        v5_or_default(v, reason(PacketType::Disconnect)),
        v5_or_default(v, props),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    let props = (of(string()), of(binary()), of(string()), user_properties()).prop_map(
        |(am, ad, rs, up)| AuthProperties {
            authentication_data: ad.filter(|_| am.is_some()),
            authentication_method: am,
            reason_string: rs,
            user_properties: up,
        },
    );
    (reason(PacketType::Auth), props).prop_map(|(reason_code, properties)| {
        Packet::Auth(Box::new(Auth {
            reason_code,
            properties,
        }))
    })
}

fn any_packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut all = vec![
        connect(v).boxed(),
        connack(v).boxed(),
        publish(v).boxed(),
        ack(v, PacketType::PubAck).boxed(),
        ack(v, PacketType::PubRec).boxed(),
        ack(v, PacketType::PubRel).boxed(),
        ack(v, PacketType::PubComp).boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v == ProtocolVersion::V5 {
        all.push(auth().boxed());
    }
    proptest::strategy::Union::new(all).boxed()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| any_packet(v).prop_map(move |p| (v, p)))
}

fn encode(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).expect("generated packets encode");
    out
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn decode_inverts_encode_and_consumes_every_byte((v, p) in versioned_packet()) {
        let bytes = encode(&p, v);
        let mut buf = bytes.clone();
        let decoded = Decoder::with_version(v, MAX).decode(&mut buf);
        prop_assert_eq!(decoded, Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn reencoding_a_decoded_packet_gives_identical_bytes((v, p) in versioned_packet()) {
        let bytes = encode(&p, v);
        let decoded = Decoder::with_version(v, MAX)
            .decode(&mut bytes.clone())
            .expect("valid")
            .expect("whole");
        prop_assert_eq!(encode(&decoded, v), bytes);
    }

    #[test]
    fn every_strict_prefix_needs_more_bytes((v, p) in versioned_packet()) {
        let bytes = encode(&p, v);
        let mut decoder = Decoder::with_version(v, MAX);
        for n in 0..bytes.len() {
            let mut prefix = BytesMut::from(&bytes[..n]);
            prop_assert_eq!(decoder.decode(&mut prefix), Ok(None), "prefix of {} bytes", n);
            prop_assert_eq!(prefix.len(), n, "a prefix must not be consumed");
        }
    }

    #[test]
    fn back_to_back_packets_decode_in_order(
        (v, ps) in version().prop_flat_map(|v| vec(any_packet(v), 1..8).prop_map(move |ps| (v, ps)))
    ) {
        let mut buf = BytesMut::new();
        for p in &ps {
            p.encode(v, &mut buf).expect("generated packets encode");
        }
        let mut decoder = Decoder::with_version(v, MAX);
        for p in ps {
            prop_assert_eq!(decoder.decode(&mut buf), Ok(Some(p)));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn server_decoder_adopts_the_version_of_connect(
        (v, connect, next) in version().prop_flat_map(|v| (Just(v), connect(v), publish(v)))
    ) {
        let mut buf = encode(&connect, v);
        buf.extend_from_slice(&encode(&next, v));
        let mut decoder = Decoder::new(MAX);
        prop_assert_eq!(decoder.decode(&mut buf), Ok(Some(connect)));
        prop_assert_eq!(decoder.version(), Some(v));
        prop_assert_eq!(decoder.decode(&mut buf), Ok(Some(next)));
    }

    #[test]
    fn peek_reads_every_publish_as_decode_does(
        (v, p) in version().prop_flat_map(|v| publish(v).prop_map(move |p| (v, p)))
    ) {
        let bytes = encode(&p, v);
        let Packet::Publish(p) = p else { unreachable!("publish() makes PUBLISHes") };
        let decoder = Decoder::with_version(v, MAX);
        let peeked = decoder.peek(&bytes).expect("valid").expect("whole");
        prop_assert_eq!(peeked.len, bytes.len());
        prop_assert_eq!(peeked.packet_type, PacketType::Publish);
        let r = peeked.publish.expect("a PUBLISH");
        prop_assert_eq!(r.topic(), p.topic.as_str());
        prop_assert_eq!((r.qos(), r.dup(), r.retain(), r.packet_id()), (p.qos, p.dup, p.retain, p.packet_id));
        prop_assert_eq!(r.payload(), &p.payload[..]);
        prop_assert_eq!(&r.properties(), p.properties());
        let mut again = BytesMut::new();
        r.encode(v, &mut again).expect("encodes");
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn random_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
        ringmq_protocol::fuzzing::decode(&data);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        first in any::<u8>(),
        body in vec(any::<u8>(), 0..120),
    ) {
        let mut data = vec![first];
        data.push(body.len() as u8);
        data.extend_from_slice(&body);
        ringmq_protocol::fuzzing::decode(&data);
    }
}
