//! How long a burst of subscriptions takes to reach every shard's route
//! table. `CLIENTS` clients homed on shard `SUB_SHARD` (default 1) each
//! send one SUBSCRIBE of 1,000 filters (every tenth a wildcard), all at
//! once; a SUBACK is sent only once every shard has applied the routes (a
//! mesh barrier), so the last SUBACK marks the burst applied everywhere.
//! Then a client on the other shard publishes to the last filter of each
//! subscriber, which must arrive at once.
//!
//!   cargo run --release -p ringmq-benches --example route_burst -- 127.0.0.1:1883 [CLIENTS]
//!
//! Run against a fresh broker with `--shards 2` (and again with
//! `--shards 1` for the same work without a mesh); raise nothing: 1,000
//! filters is `subscriptions_per_client_max`'s default.

#![allow(clippy::print_stdout)] // a measuring tool: its lines are its output

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_benches::raw::{id_on_shard, invalid, Client};
use ringmq_protocol::{
    Packet, PacketId, Publish, QoS, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
};

const FILTERS_PER_CLIENT: usize = 1000;

/// Client `c`'s filter `k`: literal, or every tenth a `#` wildcard.
fn filter(c: usize, k: usize) -> String {
    match k % 10 {
        9 => format!("burst/{c}/{k}/#"),
        _ => format!("burst/{c}/{k}"),
    }
}

fn subscribe(c: usize) -> std::io::Result<Packet> {
    let filters = (0..FILTERS_PER_CLIENT)
        .map(|k| {
            let f = TopicFilter::new(filter(c, k)).map_err(invalid)?;
            Ok((f, SubscriptionOptions::qos(QoS::AtMostOnce)))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).ok_or_else(|| invalid("id"))?,
        properties: Default::default(),
        filters,
    }))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:1883", String::as_str);
    let clients: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(100);
    let sub_shard: usize = std::env::var("SUB_SHARD")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut subs = (0..clients)
        .map(|c| Client::connect(addr, &id_on_shard(&format!("burst-{c}"), sub_shard)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let packets = (0..clients)
        .map(subscribe)
        .collect::<std::io::Result<Vec<_>>>()?;
    let start = Instant::now();
    for (sub, p) in subs.iter_mut().zip(&packets) {
        sub.send(p)?;
    }
    let mut last = Duration::ZERO;
    for (c, sub) in subs.iter_mut().enumerate() {
        match sub.recv(Duration::from_secs(60))? {
            Some(Packet::SubAck(ack)) if ack.reason_codes.iter().all(|r| !r.is_error()) => {
                last = last.max(start.elapsed());
            }
            other => {
                return Err(invalid(format!(
                    "client {c}: expected SUBACK, got {other:?}"
                )))
            }
        }
    }
    let n = clients * FILTERS_PER_CLIENT;
    println!(
        "{n} subscriptions from {clients} clients: last SUBACK after {last:.1?} ({:.0} subscriptions/s)",
        n as f64 / last.as_secs_f64()
    );
    let mut publisher = Client::connect(addr, &id_on_shard("burst-pub", 1 - sub_shard.min(1)))?;
    let started = Instant::now();
    for c in 0..clients {
        let topic = format!("burst/{c}/{}/x", FILTERS_PER_CLIENT - 1);
        let publish = Publish::new(
            TopicName::new(topic).map_err(invalid)?,
            Bytes::from_static(b"x"),
        );
        publisher.send(&Packet::Publish(publish))?;
    }
    for (c, sub) in subs.iter_mut().enumerate() {
        match sub.recv(Duration::from_secs(5))? {
            Some(Packet::Publish(_)) => {}
            other => {
                return Err(invalid(format!(
                    "client {c}: expected its message, got {other:?}"
                )))
            }
        }
    }
    println!(
        "a message to each subscriber's last filter from the other shard: all {clients} delivered in {:.1?}",
        started.elapsed()
    );
    Ok(())
}
