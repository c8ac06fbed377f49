//! A moving session's bytes: the frames of the state log's records (see
//! `store::record`), each checked by its CRC — the session, its
//! subscriptions, then its unacknowledged copies as messages held for it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ringmq_protocol::MqttString;

use crate::core::journal::{Entry, Target};
use crate::core::moved::{Moved, MovedCopy};
use crate::store::record::{self, Clock, FRAME_HEAD_BYTES};

/// The moving session's uid in its frames: it gets a new one where it
/// goes.
const UID: u64 = 1;

fn clock() -> Clock {
    let now_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Clock {
        now: Instant::now(),
        now_millis,
    }
}

/// The bytes of `moved`, the session of `client_id`.
pub(super) fn encode(client_id: &str, moved: &Moved) -> Vec<u8> {
    let (clock, mut scratch, mut out) = (clock(), BytesMut::new(), Vec::new());
    let session = Entry::Session {
        uid: UID,
        client_id: MqttString::new(client_id).unwrap_or_default(),
        username: moved.username.clone(),
        expiry_secs: moved.expiry_secs,
    };
    record::encode(&session, clock, &mut scratch, &mut out);
    for (filter, sub) in &moved.subs {
        let (filter, sub) = (filter.clone(), *sub);
        let entry = Entry::Subscribe {
            uid: UID,
            filter,
            sub,
        };
        record::encode(&entry, clock, &mut scratch, &mut out);
    }
    for &packet_id in &moved.qos2_in {
        let entry = Entry::Qos2In {
            uid: UID,
            packet_id,
            received: true,
        };
        record::encode(&entry, clock, &mut scratch, &mut out);
    }
    for (lsn, copy) in (1..).zip(&moved.messages) {
        let entry = Entry::Message {
            lsn,
            message: copy.message.clone(),
            targets: vec![Target {
                uid: UID,
                qos: copy.qos,
                retain: copy.retain,
            }],
        };
        record::encode(&entry, clock, &mut scratch, &mut out);
    }
    out
}

/// The session in `bytes`; an error if a frame is cut short, fails its
/// CRC, or is not one a moving session has.
pub(super) fn decode(mut bytes: &[u8]) -> Result<Moved, String> {
    let clock = clock();
    let mut moved = Moved::default();
    let mut seen_session = false;
    while !bytes.is_empty() {
        let (body, rest) = frame(bytes)?;
        bytes = rest;
        match record::decode(body, clock).map_err(|e| e.to_string())? {
            Entry::Session {
                username,
                expiry_secs,
                ..
            } => {
                moved.username = username;
                moved.expiry_secs = expiry_secs;
                seen_session = true;
            }
            Entry::Subscribe { filter, sub, .. } => moved.subs.push((filter, sub)),
            Entry::Qos2In { packet_id, .. } => moved.qos2_in.push(packet_id),
            Entry::Message {
                message, targets, ..
            } => {
                let Some(t) = targets.first() else {
                    return Err("a message without its copy".into());
                };
                let (qos, retain) = (t.qos, t.retain);
                moved.messages.push(MovedCopy {
                    message,
                    qos,
                    retain,
                });
            }
            _ => return Err("a record a moving session does not have".into()),
        }
    }
    match seen_session {
        true => Ok(moved),
        false => Err("no session record".into()),
    }
}

/// One frame's body, and what follows it.
fn frame(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let head = bytes
        .get(..FRAME_HEAD_BYTES)
        .ok_or("a frame cut short in its head")?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let end = FRAME_HEAD_BYTES
        .checked_add(len)
        .ok_or("a frame's length overflows")?;
    let body = bytes
        .get(FRAME_HEAD_BYTES..end)
        .ok_or("a frame cut short in its body")?;
    if crc32c::crc32c(body) != crc {
        return Err("a frame fails its CRC".into());
    }
    Ok((body, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use ringmq_protocol::{QoS, SubscriptionOptions, TopicName};

    use super::*;
    use crate::core::message::Message;
    use crate::core::session::Subscription;

    fn message(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            id: 7,
            topic: TopicName::new(topic).expect("a valid topic"),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            origin: 0,
            expires_at: None,
            encoded: Default::default(),
        })
    }

    #[test]
    fn a_session_reads_back_as_it_was_and_damage_is_refused() {
        let sub = Subscription {
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
            id: None,
        };
        let moved = Moved {
            username: MqttString::new("alice").ok(),
            expiry_secs: 3600,
            subs: vec![("a/#".into(), sub), ("$share/g/b".into(), sub)],
            messages: vec![
                MovedCopy {
                    message: message("a/1", b"one"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                },
                MovedCopy {
                    message: message("a/2", b"two"),
                    qos: QoS::AtMostOnce,
                    retain: true,
                },
            ],
            qos2_in: vec![3, 9],
        };
        let bytes = encode("c1", &moved);
        let back = decode(&bytes).expect("it reads back");
        assert_eq!(back.username, moved.username);
        assert_eq!(back.expiry_secs, 3600);
        let filters: Vec<&str> = back.subs.iter().map(|(f, _)| &**f).collect();
        assert_eq!(filters, ["a/#", "$share/g/b"]);
        assert_eq!(back.qos2_in, [3, 9]);
        let copies: Vec<_> = back
            .messages
            .iter()
            .map(|c| {
                (
                    c.message.topic.as_str(),
                    &c.message.payload[..],
                    c.qos,
                    c.retain,
                )
            })
            .collect();
        assert_eq!(
            copies,
            [
                ("a/1", &b"one"[..], QoS::AtLeastOnce, false),
                ("a/2", &b"two"[..], QoS::AtMostOnce, true)
            ]
        );
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&flipped).is_err(), "a CRC mismatch");
        assert!(decode(&bytes[..bytes.len() - 3]).is_err(), "cut short");
        assert!(decode(&[]).is_err(), "no session");
    }
}
