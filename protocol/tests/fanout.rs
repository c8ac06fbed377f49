//! The fan-out encoder produces, for every subscriber's QoS, packet id, DUP,
//! RETAIN and extra properties, exactly the bytes a full encode of that
//! PUBLISH would — without re-encoding the topic or payload.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use ringmq_protocol::*;

fn full_encode(p: &Publish, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).expect("valid publish");
    out
}

fn copy_for(p: &Publish, d: &Delivery<'_>, sub_ids: &[SubscriptionId]) -> Publish {
    let mut copy = p.clone();
    copy.qos = d.qos;
    copy.packet_id = d.packet_id;
    copy.dup = d.dup && d.qos != QoS::AtMostOnce;
    copy.retain = d.retain;
    copy.properties_mut()
        .subscription_identifiers
        .extend_from_slice(sub_ids);
    copy
}

/// Subscription Identifier properties, encoded as an engine would append them.
fn encode_sub_ids(ids: &[SubscriptionId]) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        id.put_property(&mut out);
    }
    out
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn each_copy_equals_a_full_encode(
        v5 in any::<bool>(),
        topic in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,4}",
        payload in vec(any::<u8>(), 0..300),
        expiry in proptest::option::of(any::<u32>()),
        deliveries in vec((qos(), 1..=u16::MAX, any::<bool>(), any::<bool>(), vec(1..=VARINT_MAX, 0..3)), 1..6),
    ) {
        let v = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        let mut publish = Publish::new(TopicName::new(topic).expect("valid"), Bytes::from(payload));
        publish.properties_mut().message_expiry_interval = expiry;
        let encoded = EncodedPublish::new(&publish, v).expect("encodes");
        for (qos, id, dup, retain, ids) in deliveries {
            let ids: Vec<_> = ids.into_iter().filter_map(SubscriptionId::new).collect();
            let extra = encode_sub_ids(&ids);
            let d = Delivery {
                qos,
                packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(id).expect("non-zero")),
                dup,
                retain,
                extra_properties: &extra,
                omit_topic: false,
            };
            let ids = if v5 { ids } else { Vec::new() };
            let expected = full_encode(&copy_for(&publish, &d, &ids), v);

            let mut contiguous = BytesMut::new();
            encoded.encode(&d, &mut contiguous).expect("encodes");
            prop_assert_eq!(&contiguous, &expected);

            let head = encoded.head(&d).expect("valid delivery");
            let gathered: Vec<u8> = encoded.slices(&head, &d).concat();
            prop_assert_eq!(&gathered[..], &expected[..]);
            prop_assert_eq!(encoded.len(&d), Ok(expected.len()));
        }
    }
}

#[test]
fn copies_share_the_payload_instead_of_copying_it() {
    let payload = Bytes::from(vec![7u8; 4096]);
    let publish = Publish::new(TopicName::new("a/b").expect("valid"), payload.clone());
    let encoded = EncodedPublish::new(&publish, ProtocolVersion::V311).expect("encodes");
    assert_eq!(encoded.payload().as_ptr(), payload.as_ptr());
    let d = Delivery {
        qos: QoS::AtLeastOnce,
        packet_id: PacketId::new(9),
        ..Delivery::default()
    };
    let head = encoded.head(&d).expect("valid delivery");
    assert_eq!(encoded.slices(&head, &d)[5].as_ptr(), payload.as_ptr());
}

#[test]
fn rejects_a_delivery_whose_packet_id_does_not_match_its_qos() {
    let publish = Publish::new(TopicName::new("a").expect("valid"), Bytes::new());
    let encoded = EncodedPublish::new(&publish, ProtocolVersion::V5).expect("encodes");
    let qos1_without_id = Delivery {
        qos: QoS::AtLeastOnce,
        ..Delivery::default()
    };
    assert_eq!(
        encoded.head(&qos1_without_id).err(),
        Some(EncodeError::PacketIdMismatch)
    );
    let qos0_with_id = Delivery {
        packet_id: PacketId::new(1),
        ..Delivery::default()
    };
    assert_eq!(
        encoded.head(&qos0_with_id).err(),
        Some(EncodeError::PacketIdMismatch)
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// A v5 copy sent with a Topic Alias in place of its topic equals a full
    /// encode of the same PUBLISH with an empty topic and the alias.
    #[test]
    fn an_aliased_copy_equals_a_full_encode_with_an_empty_topic(
        topic in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,4}",
        payload in vec(any::<u8>(), 0..300),
        alias in 1..=u16::MAX,
        qos in qos(),
    ) {
        let v = ProtocolVersion::V5;
        let publish = Publish::new(TopicName::new(topic).expect("valid"), Bytes::from(payload));
        let encoded = EncodedPublish::new(&publish, v).expect("encodes");
        let mut extra = vec![0x23];
        extra.extend_from_slice(&alias.to_be_bytes());
        let d = Delivery {
            qos,
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(7).expect("non-zero")),
            extra_properties: &extra,
            omit_topic: true,
            ..Delivery::default()
        };
        let mut expected_packet = copy_for(&publish, &d, &[]);
        expected_packet.topic = TopicName::empty_for_alias();
        expected_packet.properties_mut().topic_alias = std::num::NonZeroU16::new(alias);
        let expected = full_encode(&expected_packet, v);
        let mut got = BytesMut::new();
        encoded.encode(&d, &mut got).expect("encodes");
        prop_assert_eq!(&got, &expected);
        let head = encoded.head(&d).expect("valid");
        prop_assert_eq!(encoded.slices(&head, &d).concat(), expected.to_vec());
    }
}
