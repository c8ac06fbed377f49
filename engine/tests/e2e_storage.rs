//! Durability against a real broker process: persistent sessions, their
//! messages, subscriptions and retained messages survive SIGKILL; a torn
//! log tail is cut at start; a log that cannot grow refuses QoS 1/2
//! publishes and recovers. Subscriber and publisher sit on different
//! shards, so messages cross the mesh before they are logged.

mod support;

use std::path::Path;
use std::time::Duration;

use ringmq_protocol::{Packet, PacketId, ProtocolVersion, Publish, ReasonCode, TopicName};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use support::{id_on_shard, Broker, Raw};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn options(id: &str, port: u16, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(clean);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// Runs `eventloop`, forwarding PUBLISHes and counting PUBACKs, until the
/// connection ends (after a DISCONNECT, until the broker has closed it:
/// the events' channel then closes).
fn drive(
    mut eventloop: EventLoop,
) -> (
    mpsc::UnboundedReceiver<rumqttc::Publish>,
    mpsc::UnboundedReceiver<Event>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (etx, erx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    let _ = etx.send(Event::Outgoing(Outgoing::Disconnect));
                    while eventloop.poll().await.is_ok() {}
                    break;
                }
                Ok(e) => {
                    let _ = etx.send(e);
                }
                Err(e) => {
                    // Said, so that a test waiting for an event shows why none came.
                    eprintln!("rumqttc event loop ended: {e:?}");
                    break;
                }
            }
        }
    });
    (rx, erx)
}

/// Waits for the first event matching `f`.
async fn wait_for(events: &mut mpsc::UnboundedReceiver<Event>, f: impl Fn(&Event) -> bool) {
    loop {
        let e = timeout(WAIT, events.recv())
            .await
            .expect("event in time")
            .expect("client alive");
        if f(&e) {
            return;
        }
    }
}

/// A persistent 3.1.1 subscriber on `filter` that then disconnects.
async fn subscribe_and_leave(port: u16, id: &str, filter: &str) {
    let (client, eventloop) = AsyncClient::new(options(id, port, false), 100);
    let (_rx, mut events) = drive(eventloop);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    wait_for(&mut events, |e| {
        matches!(e, Event::Incoming(Incoming::SubAck(_)))
    })
    .await;
    client.disconnect().await.expect("disconnect");
    wait_for(&mut events, |e| {
        matches!(e, Event::Outgoing(Outgoing::Disconnect))
    })
    .await;
    // Gone once the broker has closed the connection: it has handled the
    // DISCONNECT, so the session is offline for what is published next.
    while timeout(WAIT, events.recv())
        .await
        .expect("connection closed in time")
        .is_some()
    {}
}

/// Publishes `n` QoS 1 messages `0..n` and returns once every PUBACK is in.
async fn publish_acked(port: u16, id: &str, topic: &str, n: usize, retain: bool) {
    let (client, eventloop) = AsyncClient::new(options(id, port, true), n + 10);
    let (_rx, mut events) = drive(eventloop);
    for i in 0..n {
        client
            .publish(topic, QoS::AtLeastOnce, retain, i.to_string())
            .await
            .expect("publish");
    }
    for _ in 0..n {
        wait_for(&mut events, |e| {
            matches!(e, Event::Incoming(Incoming::PubAck(_)))
        })
        .await;
    }
}

/// Reconnects persistent session `id` and collects `n` payloads.
async fn resume_and_receive(port: u16, id: &str, n: usize) -> Vec<String> {
    let (_client, eventloop) = AsyncClient::new(options(id, port, false), 100);
    let (mut rx, _events) = drive(eventloop);
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let p = timeout(WAIT, rx.recv())
            .await
            .expect("message in time")
            .expect("client alive");
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    got
}

fn numbers(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Kills the broker with SIGKILL and starts a new one on the same port
/// and data.
fn kill_and_restart(broker: &mut Broker, extra: &[&str]) -> Broker {
    broker.kill();
    let dir = support::temp_dir("restarted");
    let old = broker.dir.join("data");
    std::fs::rename(&old, dir.join("data")).expect("move the data directory");
    Broker::start_in(dir, broker.port(), extra)
}

async fn every_acknowledged_message_survives_kill_9(name: &str, config: &str) {
    let dir = support::temp_dir(name);
    let cfg = support::write_file(&dir, "ringmq.toml", config);
    let cfg = cfg.to_string_lossy().into_owned();
    let extra = ["--config", cfg.as_str()];
    let mut broker = Broker::start_in(dir, support::free_port(), &extra);
    let (sub, publisher) = (id_on_shard("dsub", 0), id_on_shard("dpub", 1));
    subscribe_and_leave(broker.port(), &sub, "d/#").await;
    publish_acked(broker.port(), &publisher, "d/1", 500, false).await;

    let broker = kill_and_restart(&mut broker, &extra);
    assert!(broker.log().contains("recovered"), "{}", broker.log());
    let got = resume_and_receive(broker.port(), &sub, 500).await;
    assert_eq!(got, numbers(500), "all 500, in publish order");
}

#[tokio::test(flavor = "current_thread")]
async fn under_flush_interval_every_acknowledged_message_survives_kill_9() {
    every_acknowledged_message_survives_kill_9(
        "kill-interval",
        "[storage]\nflush = \"interval\"\n",
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn under_flush_always_every_acknowledged_message_survives_kill_9() {
    every_acknowledged_message_survives_kill_9("kill-always", "[storage]\nflush = \"always\"\n")
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn subscriptions_and_retained_messages_survive_kill_9() {
    let mut broker = Broker::start("kill-retained", &[]);
    let sub = id_on_shard("rsub", 1);
    subscribe_and_leave(broker.port(), &sub, "r/+").await;
    publish_acked(broker.port(), &id_on_shard("rpub", 0), "r/kept", 1, true).await;
    let port = broker.port();
    let broker = kill_and_restart(&mut broker, &[]);
    assert_eq!(broker.port(), port);

    // The subscription is back: a message published now reaches the
    // session (after the retained one it was offline for).
    publish_acked(port, &id_on_shard("rpub", 0), "r/live", 1, false).await;
    let got = resume_and_receive(port, &sub, 2).await;
    assert_eq!(got, ["0", "0"], "the offline copy of r/kept, then r/live");
    // The retained message is back for a new subscriber.
    let (client, eventloop) = AsyncClient::new(options("fresh", port, true), 10);
    let (mut rx, _events) = drive(eventloop);
    client
        .subscribe("r/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let p = timeout(WAIT, rx.recv())
        .await
        .expect("retained in time")
        .expect("alive");
    assert_eq!((p.topic.as_str(), p.retain), ("r/kept", true));
}

/// The last segment file holding data in `dir`.
fn last_written_segment(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files.pop().expect("a segment")
}

#[tokio::test(flavor = "current_thread")]
async fn a_torn_log_tail_is_cut_and_what_precedes_it_is_kept() {
    let mut broker = Broker::start("torn", &[]);
    let sub = id_on_shard("tsub", 0);
    subscribe_and_leave(broker.port(), &sub, "t/#").await;
    publish_acked(broker.port(), &id_on_shard("tpub", 0), "t/1", 20, false).await;
    broker.kill();
    // The machine stopped while the last frame was being written: its
    // last bytes never reached the disk.
    let path = last_written_segment(&broker.dir.join("data/shard-0/offline"));
    let mut bytes = std::fs::read(&path).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).expect("data");
    bytes[end - 3..=end].fill(0);
    std::fs::write(&path, &bytes).expect("write");

    let dir = support::temp_dir("torn-restart");
    std::fs::rename(broker.dir.join("data"), dir.join("data")).expect("move data");
    let broker = Broker::start_in(dir, broker.port(), &[]);
    assert!(broker.log().contains("torn_tails=1"), "{}", broker.log());
    let got = resume_and_receive(broker.port(), &sub, 19).await;
    assert_eq!(got, numbers(19));
}

fn publish_packet(topic: &str, id: u16) -> Packet {
    let mut p = Publish::new(
        TopicName::new(topic.to_owned()).expect("topic"),
        vec![b'x'; 1000],
    );
    p.qos = ringmq_protocol::QoS::AtLeastOnce;
    p.packet_id = PacketId::new(id);
    Packet::Publish(p)
}

/// Publishes QoS 1 over `raw` until the broker answers with an error.
fn publish_until_refused(raw: &mut Raw) -> (usize, ReasonCode) {
    for i in 1..=10_000u16 {
        raw.send(&publish_packet("f/1", i), ProtocolVersion::V5);
        match raw.recv() {
            Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success => {}
            Some(Packet::PubAck(a)) => return (usize::from(i) - 1, a.reason_code),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    panic!("the log never filled");
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_log_refuses_qos1_until_acknowledgements_free_a_segment() {
    let dir = support::temp_dir("full");
    let cfg = support::write_file(
        &dir,
        "ringmq.toml",
        "[storage]\nsegment_bytes = 65536\ndisk_bytes_max = 524288\n",
    );
    let cfg = cfg.to_string_lossy().into_owned();
    let broker = Broker::start_in(dir, support::free_port(), &["--config", &cfg]);
    let sub = id_on_shard("fsub", 0);
    subscribe_and_leave(broker.port(), &sub, "f/#").await;

    let mut v5 = Raw::session(broker.addr, ProtocolVersion::V5, &id_on_shard("fpub5", 0));
    let (accepted, code) = publish_until_refused(&mut v5);
    assert_eq!(code, ReasonCode::QuotaExceeded);
    assert!(accepted > 100, "{accepted} accepted before the cap");
    let mut v3 = Raw::session(broker.addr, ProtocolVersion::V311, &id_on_shard("fpub3", 0));
    v3.send(&publish_packet("f/1", 1), ProtocolVersion::V311);
    assert!(v3.until_closed().is_empty(), "3.1.1: closed without PUBACK");
    assert!(broker.log().contains("No space left on device"));

    // Everything accepted is delivered; acknowledged, it frees segments.
    let got = resume_and_receive(broker.port(), &sub, accepted).await;
    assert_eq!(got.len(), accepted);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let id = 60_000;
        v5.send(&publish_packet("f/2", id), ProtocolVersion::V5);
        match v5.recv() {
            Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success => break,
            Some(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn subscribe_packet(id: u16, filter: &str) -> Packet {
    Packet::Subscribe(ringmq_protocol::Subscribe {
        packet_id: PacketId::new(id).expect("id"),
        properties: Default::default(),
        filters: vec![(
            ringmq_protocol::TopicFilter::new(filter.to_owned()).expect("filter"),
            ringmq_protocol::SubscriptionOptions::qos(ringmq_protocol::QoS::AtLeastOnce),
        )],
    })
}

fn unsubscribe_packet(id: u16, filter: &str) -> Packet {
    Packet::Unsubscribe(ringmq_protocol::Unsubscribe {
        packet_id: PacketId::new(id).expect("id"),
        properties: Default::default(),
        filters: vec![ringmq_protocol::TopicFilter::new(filter.to_owned()).expect("filter")],
    })
}

#[tokio::test(flavor = "current_thread")]
async fn the_state_log_is_compacted_and_what_it_held_survives_kill_9() {
    let dir = support::temp_dir("compact");
    let cfg = support::write_file(
        &dir,
        "ringmq.toml",
        "[storage]\nstate_segment_bytes = 65536\n",
    );
    let cfg = cfg.to_string_lossy().into_owned();
    let extra = ["--config", cfg.as_str()];
    let mut broker = Broker::start_in(dir, support::free_port(), &extra);
    let id = id_on_shard("csub", 0);
    let v = ProtocolVersion::V311;
    let mut c = support::connect(v, &id);
    c.clean_start = false;
    let mut raw = Raw::connect(broker.addr, v);
    raw.send(&Packet::Connect(Box::new(c)), v);
    assert!(matches!(raw.recv(), Some(Packet::ConnAck(_))));
    // 20,000 subscription changes (≈ 40 bytes each) would fill 13 state
    // segments of 64 KiB; what is live at the end is one subscription.
    for i in 0..10_000u16 {
        raw.send(&subscribe_packet(i % 60_000 + 1, "c/kept/#"), v);
        raw.send(&unsubscribe_packet(i % 60_000 + 1, "c/kept/#"), v);
    }
    raw.send(&subscribe_packet(1, "c/kept/#"), v);
    let acks = (0..20_001)
        .filter_map(|_| raw.recv())
        .filter(|p| matches!(p, Packet::SubAck(_) | Packet::UnsubAck(_)))
        .count();
    assert_eq!(acks, 20_001);
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = broker.dir.join("data/shard-0/state");
    let segments = std::fs::read_dir(&state).expect("state dir").count();
    assert!(segments <= 5, "{segments} state segments: not compacted");
    assert!(broker.log().contains("state log compacted"));

    let broker = kill_and_restart(&mut broker, &extra);
    publish_acked(broker.port(), &id_on_shard("cpub", 1), "c/kept/1", 1, false).await;
    let got = resume_and_receive(broker.port(), &id, 1).await;
    assert_eq!(got, ["0"]);
}

/// Messages dropped for `offline_messages_max`, summed over the log's
/// lines that say so.
fn dropped_oldest(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("oldest messages dropped"))
        .filter_map(|l| {
            l.split("dropped=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "current_thread")]
async fn past_offline_messages_max_the_oldest_are_dropped_and_counted() {
    let dir = support::temp_dir("cap");
    let cfg = support::write_file(&dir, "ringmq.toml", "[limits]\noffline_messages_max = 50\n");
    let cfg = cfg.to_string_lossy().into_owned();
    let broker = Broker::start_in(dir, support::free_port(), &["--config", &cfg]);
    let sub = id_on_shard("capsub", 0);
    subscribe_and_leave(broker.port(), &sub, "cap/#").await;
    publish_acked(broker.port(), &id_on_shard("cappub", 1), "cap/1", 80, false).await;
    // The clock may drop them in more than one pass: the passes add up.
    let deadline = std::time::Instant::now() + WAIT;
    while dropped_oldest(&broker.log()) < 30 {
        assert!(std::time::Instant::now() < deadline, "{}", broker.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dropped_oldest(&broker.log()), 30, "{}", broker.log());
    let got = resume_and_receive(broker.port(), &sub, 50).await;
    let want: Vec<String> = (30..80).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "the newest 50");
}

#[tokio::test(flavor = "current_thread")]
async fn a_backlog_past_the_memory_caps_is_read_back_from_the_log_in_order_and_after_kill_9() {
    let dir = support::temp_dir("spill");
    // Memory for ten messages, small segments: the backlog is read back
    // from many segment files.
    let cfg = support::write_file(
        &dir,
        "ringmq.toml",
        "[limits]\nsession_queue_messages_max = 10\n[storage]\nsegment_bytes = 65536\n",
    );
    let cfg = cfg.to_string_lossy().into_owned();
    let extra = ["--config", cfg.as_str()];
    let mut broker = Broker::start_in(dir, support::free_port(), &extra);
    let (sub, publisher) = (id_on_shard("spsub", 0), id_on_shard("sppub", 1));
    subscribe_and_leave(broker.port(), &sub, "sp/#").await;
    publish_acked(broker.port(), &publisher, "sp/1", 3_000, false).await;

    // Read back from the segments a restarted broker indexed...
    let broker = kill_and_restart(&mut broker, &extra);
    let got = resume_and_receive(broker.port(), &sub, 3_000).await;
    assert_eq!(got, numbers(3_000), "all 3,000, in publish order");
    // ...and from those a running broker wrote.
    tokio::time::sleep(Duration::from_millis(300)).await;
    subscribe_and_leave(broker.port(), &sub, "sp/#").await;
    publish_acked(broker.port(), &publisher, "sp/1", 3_000, false).await;
    let got = resume_and_receive(broker.port(), &sub, 3_000).await;
    assert_eq!(got, numbers(3_000), "all 3,000 again, in publish order");
    let log = broker.log();
    assert!(!log.contains("cannot be read back"), "{log}");
}
