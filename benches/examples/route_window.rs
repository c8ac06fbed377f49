//! How soon after another shard's SUBSCRIBE a PUBLISH reaches the new
//! subscriber. A subscriber homed on shard 1 sends SUBSCRIBE; `d` µs later a
//! publisher homed on shard 0 publishes (QoS 0) on that topic. Until the
//! route reaches shard 0 the message finds no subscriber there. Prints, per
//! delay, the share of messages delivered; the delay from which all are is
//! the window.
//!
//!   cargo run --release -p ringmq-benches --example route_window -- 127.0.0.1:1883 [TRIALS]
//!
//! Run against a broker with two shards (`--shards 2`) and nothing else.
//! `SUB_SHARD` / `PUB_SHARD` (0 or 1) move the two clients; `MODE=latency`
//! instead times single messages 20 ms apart on a topic subscribed long
//! before (the mesh's latency between idle shards).

#![allow(clippy::print_stdout)] // a measuring tool: its table is its output

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_benches::raw::{id_on_shard, invalid, Client};
use ringmq_protocol::{
    Packet, PacketId, Publish, QoS, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
    Unsubscribe,
};

const DELAYS_US: &[u64] = &[0, 10, 25, 50, 100, 200, 500, 1000];

/// One trial: whether the PUBLISH sent `delay` after the SUBSCRIBE arrived,
/// and how long the SUBACK took.
fn trial(
    sub: &mut Client,
    publisher: &mut Client,
    topic: &str,
    delay: Duration,
) -> std::io::Result<(bool, Duration)> {
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).ok_or_else(|| invalid("id"))?,
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new(topic.to_owned()).map_err(invalid)?,
            SubscriptionOptions::qos(QoS::AtMostOnce),
        )],
    };
    let publish = Publish::new(
        TopicName::new(topic.to_owned()).map_err(invalid)?,
        Bytes::from_static(b"x"),
    );
    sub.send(&Packet::Subscribe(subscribe))?;
    let sent = Instant::now();
    // Sleeping, not spinning: a spinning client would hold a core the
    // broker's shards need (two cores here), and measure the scheduler.
    if !delay.is_zero() {
        std::thread::sleep(delay.saturating_sub(sent.elapsed()));
    }
    publisher.send(&Packet::Publish(publish))?;
    let (mut delivered, mut suback) = (false, Duration::ZERO);
    while let Some(p) = sub.recv(Duration::from_millis(30))? {
        delivered |= matches!(p, Packet::Publish(_));
        if let Packet::SubAck(ack) = &p {
            suback = sent.elapsed();
            if ack.reason_codes.iter().any(|c| c.is_error()) {
                return Err(invalid(format!("SUBSCRIBE refused: {ack:?}")));
            }
        }
    }
    // Within subscriptions_per_client_max however many trials run.
    let unsubscribe = Unsubscribe {
        packet_id: PacketId::new(2).ok_or_else(|| invalid("id"))?,
        properties: Default::default(),
        filters: vec![TopicFilter::new(topic.to_owned()).map_err(invalid)?],
    };
    sub.send(&Packet::Unsubscribe(unsubscribe))?;
    // A SUBACK or message later than 30 ms still counts.
    loop {
        match sub.recv(Duration::from_secs(1))? {
            Some(Packet::UnsubAck(_)) => return Ok((delivered, suback)),
            Some(Packet::Publish(_)) => delivered = true,
            Some(Packet::SubAck(_)) => suback = sent.elapsed(),
            other => return Err(invalid(format!("expected UNSUBACK, got {other:?}"))),
        }
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:1883", String::as_str);
    let trials: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(200);
    let sub_shard = std::env::var("SUB_SHARD")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut sub = Client::connect(addr, &id_on_shard("window-sub", sub_shard))?;
    let pub_shard = std::env::var("PUB_SHARD")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut publisher = Client::connect(addr, &id_on_shard("window-pub", pub_shard))?;
    if std::env::var("MODE").as_deref() == Ok("latency") {
        return latency(&mut sub, &mut publisher);
    }
    println!("delay after SUBSCRIBE | delivered | of | SUBACK after (median)");
    println!("---:|---:|---:|---:");
    for &us in DELAYS_US {
        let (mut delivered, mut subacks) = (0, Vec::with_capacity(trials));
        for n in 0..trials {
            let topic = format!("window/{us}/{n}");
            let delay = Duration::from_micros(us);
            let (got, suback) = trial(&mut sub, &mut publisher, &topic, delay)?;
            delivered += usize::from(got);
            subacks.push(suback);
        }
        subacks.sort();
        let median = subacks.get(trials / 2).copied().unwrap_or_default();
        let share = delivered as f64 * 100.0 / trials as f64;
        println!("{us} µs | {share:.1} % | {trials} | {median:.2?}");
    }
    Ok(())
}

/// Publish-to-delivery latency of single messages 20 ms apart, on a topic
/// subscribed long before.
fn latency(sub: &mut Client, publisher: &mut Client) -> std::io::Result<()> {
    let filter = Subscribe {
        packet_id: PacketId::new(1).ok_or_else(|| invalid("id"))?,
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new("lat/#".to_owned()).map_err(invalid)?,
            SubscriptionOptions::qos(QoS::AtMostOnce),
        )],
    };
    sub.send(&Packet::Subscribe(filter))?;
    while sub.recv(Duration::from_millis(50))?.is_some() {}
    let mut took = Vec::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        let publish = Publish::new(
            TopicName::new("lat/x".to_owned()).map_err(invalid)?,
            Bytes::from_static(b"x"),
        );
        let sent = Instant::now();
        publisher.send(&Packet::Publish(publish))?;
        match sub.recv(Duration::from_secs(1))? {
            Some(Packet::Publish(_)) => took.push(sent.elapsed()),
            other => return Err(invalid(format!("expected the message, got {other:?}"))),
        }
    }
    took.sort();
    println!(
        "latency 20 ms apart: min {:.0?} median {:.0?} p90 {:.0?} max {:.0?}",
        took[0], took[25], took[45], took[49]
    );
    Ok(())
}
