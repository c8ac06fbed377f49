//! rumqttc (the client of the rumqtt project), 3.1.1 and v5, against a real
//! broker with two shards; publishers and subscribers sit on different
//! shards, so every message crosses the mesh.

mod support;

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};
use rumqttc::{Event, Incoming, MqttOptions, QoS};
use support::{id_on_shard, Broker};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A 3.1.1 client whose received PUBLISHes arrive on the returned channel
/// once its SUBACK (if any) has arrived.
async fn client311(
    o: MqttOptions,
    subscribe: Option<(&str, QoS)>,
) -> (
    rumqttc::AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::Publish>,
) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let wants_suback = subscribe.is_some();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Incoming::ConnAck(_))) if !wants_suback => {
                    let _ = ready_tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    if let Some((filter, qos)) = subscribe {
        client.subscribe(filter, qos).await.expect("subscribe");
    }
    timeout(WAIT, ready.recv())
        .await
        .expect("SUBACK/CONNACK in time");
    (client, rx)
}

async fn expect_n(
    rx: &mut mpsc::UnboundedReceiver<rumqttc::Publish>,
    n: usize,
) -> Vec<rumqttc::Publish> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let p = timeout(WAIT, rx.recv())
            .await
            .expect("message in time")
            .expect("client alive");
        got.push(p);
    }
    got
}

#[tokio::test(flavor = "current_thread")]
async fn v311_qos_0_1_2_cross_shards_in_order() {
    let broker = Broker::start("rumqttc311", &[]);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let sub_id = id_on_shard(&format!("sub{i}"), 0);
        let pub_id = id_on_shard(&format!("pub{i}"), 1);
        let (_sub, mut rx) =
            client311(options(&sub_id, broker.port()), Some(("order/+", qos))).await;
        let (publisher, _) = client311(options(&pub_id, broker.port()), None).await;
        for n in 0..200u32 {
            publisher
                .publish("order/x", qos, false, n.to_be_bytes().to_vec())
                .await
                .expect("publish");
        }
        let got = expect_n(&mut rx, 200).await;
        for (n, p) in got.iter().enumerate() {
            assert_eq!(
                p.payload,
                Bytes::from((n as u32).to_be_bytes().to_vec()),
                "{qos:?} message {n} in order"
            );
            assert_eq!(p.qos, qos);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn v311_persistent_session_gets_what_was_published_while_offline() {
    let broker = Broker::start("rumqttcpersist", &[]);
    let sub_id = id_on_shard("keeper", 1);
    let mut o = options(&sub_id, broker.port());
    o.set_clean_session(false);
    let (sub, rx) = client311(o.clone(), Some(("jobs/#", QoS::AtLeastOnce))).await;
    sub.disconnect().await.expect("disconnect");
    drop(rx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (publisher, _) = client311(options(&id_on_shard("boss", 0), broker.port()), None).await;
    for n in 0..20u8 {
        publisher
            .publish("jobs/a", QoS::AtLeastOnce, false, vec![n])
            .await
            .expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_back, mut rx) = client311(o, None).await;
    let got = expect_n(&mut rx, 20).await;
    let payloads: Vec<u8> = got.iter().map(|p| p.payload[0]).collect();
    assert_eq!(payloads, (0..20).collect::<Vec<u8>>());
}

#[tokio::test(flavor = "current_thread")]
async fn v311_will_is_published_when_a_client_vanishes() {
    let broker = Broker::start("rumqttcwill", &[]);
    let (_watch, mut rx) = client311(
        options(&id_on_shard("watch", 0), broker.port()),
        Some(("status/#", QoS::AtLeastOnce)),
    )
    .await;
    let mut o = options(&id_on_shard("device", 1), broker.port());
    o.set_last_will(rumqttc::LastWill::new(
        "status/device",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 10);
    loop {
        if let Event::Incoming(Incoming::ConnAck(_)) = eventloop.poll().await.expect("connect") {
            break;
        }
    }
    // Dropping the event loop closes the socket without DISCONNECT.
    drop(eventloop);
    drop(client);
    let got = expect_n(&mut rx, 1).await;
    assert_eq!(got[0].topic, "status/device");
    assert_eq!(got[0].payload, Bytes::from("offline"));
}

#[tokio::test(flavor = "current_thread")]
async fn v5_properties_pass_through_unchanged() {
    use rumqttc::v5::{AsyncClient, Event as Event5, MqttOptions as Options5};
    let broker = Broker::start("rumqttc5", &[]);
    let mut so = Options5::new(id_on_shard("sub5", 0), "127.0.0.1", broker.port());
    so.set_keep_alive(Duration::from_secs(30));
    let (sub, mut sub_loop) = AsyncClient::new(so, 100);
    sub.subscribe("rpc/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = sub_loop.poll().await {
            match event {
                Event5::Incoming(Packet5::Publish(p)) => {
                    let _ = tx.send(p);
                }
                Event5::Incoming(Packet5::SubAck(_)) => {
                    let _ = ready_tx.send(());
                }
                _ => {}
            }
        }
    });
    timeout(WAIT, ready.recv()).await.expect("SUBACK");
    let mut po = Options5::new(id_on_shard("pub5", 1), "127.0.0.1", broker.port());
    po.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut pub_loop) = AsyncClient::new(po, 100);
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let props = PublishProperties {
        response_topic: Some("rpc/reply".into()),
        correlation_data: Some(Bytes::from_static(b"req-42")),
        user_properties: vec![
            ("tenant".into(), "acme".into()),
            ("tenant".into(), "again".into()),
        ],
        content_type: Some("application/json".into()),
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    publisher
        .publish_with_properties(
            "rpc/call",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{}",
            props.clone(),
        )
        .await
        .expect("publish");
    let got = timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("alive");
    let p = got.properties.expect("properties delivered");
    assert_eq!(p.response_topic, props.response_topic);
    assert_eq!(p.correlation_data, props.correlation_data);
    assert_eq!(
        p.user_properties, props.user_properties,
        "in order, duplicates kept"
    );
    assert_eq!(p.content_type, props.content_type);
    assert_eq!(p.payload_format_indicator, Some(1));
}

/// rumqttc over TLS (rustls, the ring provider) trusting only the test CA.
fn tls_options(id: &str, port: u16, ca: &std::path::Path) -> MqttOptions {
    let mut o = options(id, port);
    let config = support::tls::client_config(ca);
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(config),
    ));
    o
}

#[tokio::test(flavor = "current_thread")]
async fn v311_over_tls_crosses_to_tcp_and_back_at_every_qos() {
    let (broker, tls_port, ca) = support::tls::broker_with_tls("rumqttctls");
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let tls_id = id_on_shard(&format!("tls{i}"), 0);
        let tcp_id = id_on_shard(&format!("tcp{i}"), 1);
        let (over_tls, mut tls_rx) =
            client311(tls_options(&tls_id, tls_port, &ca), Some(("down/+", qos))).await;
        let (over_tcp, mut tcp_rx) =
            client311(options(&tcp_id, broker.port()), Some(("up/+", qos))).await;
        for n in 0..50u32 {
            over_tcp
                .publish("down/x", qos, false, n.to_be_bytes().to_vec())
                .await
                .expect("publish over TCP");
            over_tls
                .publish("up/x", qos, false, n.to_be_bytes().to_vec())
                .await
                .expect("publish over TLS");
        }
        for (way, rx) in [("TCP→TLS", &mut tls_rx), ("TLS→TCP", &mut tcp_rx)] {
            let got = expect_n(rx, 50).await;
            let numbers: Vec<u32> = got
                .iter()
                .map(|p| u32::from_be_bytes(p.payload[..4].try_into().expect("4 bytes")))
                .collect();
            assert_eq!(numbers, (0..50).collect::<Vec<u32>>(), "{way} {qos:?}");
            assert!(got.iter().all(|p| p.qos == qos), "{way} {qos:?}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn v5_over_tls_round_trip_keeps_properties() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient, Event as Event5, MqttOptions as Options5};
    let (_broker, tls_port, ca) = support::tls::broker_with_tls("rumqttctls5");
    let config = support::tls::client_config(&ca);
    let client = |id: &str| {
        let mut o = Options5::new(id, "127.0.0.1", tls_port);
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config.clone()),
        ));
        AsyncClient::new(o, 100)
    };
    let (sub, mut sub_loop) = client(&id_on_shard("v5tlssub", 0));
    let (publisher, mut pub_loop) = client(&id_on_shard("v5tlspub", 1));
    sub.subscribe("rpc/#", QoS5::ExactlyOnce)
        .await
        .expect("subscribe");
    let suback = async {
        loop {
            match sub_loop.poll().await.expect("subscriber over TLS") {
                Event5::Incoming(Packet5::SubAck(_)) => return,
                _ => continue,
            }
        }
    };
    timeout(WAIT, suback).await.expect("SUBACK over TLS");
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        response_topic: Some("rpc/reply".into()),
        ..Default::default()
    };
    publisher
        .publish_with_properties("rpc/q", QoS5::ExactlyOnce, false, "ping", props)
        .await
        .expect("publish");
    let got = async {
        loop {
            if let Event5::Incoming(Packet5::Publish(p)) =
                sub_loop.poll().await.expect("subscriber over TLS")
            {
                return p;
            }
        }
    };
    let p = timeout(WAIT, got).await.expect("message over TLS");
    assert_eq!(&p.payload[..], b"ping");
    assert_eq!(p.qos, QoS5::ExactlyOnce);
    let props = p.properties.expect("properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("rpc/reply"));
}

/// The broker-side kernel buffers (`rb`, `tb`) of the established sockets
/// on `port`, from `ss -tm` (iproute2, installed by the test command).
fn broker_socket_buffers(port: u16) -> Vec<(u64, u64)> {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |mem: &str, key: &str| -> u64 {
        mem.split([',', '(', ')'])
            .find_map(|f| f.strip_prefix(key)?.parse().ok())
            .expect("skmem field")
    };
    text.split("skmem:")
        .skip(1)
        .map(|mem| (field(mem, "rb"), field(mem, "tb")))
        .collect()
}

/// With the kernel buffers of client sockets bounded far below what 2,000
/// 2 KiB messages take, the broker's sockets have those buffers (the
/// kernel doubles what is asked), and QoS 1 still arrives whole and in
/// order: the bounds hold data back in the sender, they do not lose it.
#[tokio::test(flavor = "current_thread")]
async fn bounded_socket_buffers_carry_a_qos_1_stream_whole_and_in_order() {
    let dir = support::temp_dir("sockbuf");
    let config = dir.join("ringmq.toml");
    std::fs::write(
        &config,
        "[listeners]\nsocket_receive_bytes = 32768\nsocket_send_bytes = 32768\n",
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    let broker = Broker::start_in(dir, support::free_port(), &["-c", &config]);
    let sub_id = id_on_shard("sockbuf-sub", 0);
    let pub_id = id_on_shard("sockbuf-pub", 1);
    let (_sub, mut rx) = client311(
        options(&sub_id, broker.port()),
        Some(("buf/+", QoS::AtLeastOnce)),
    )
    .await;
    let (publisher, _) = client311(options(&pub_id, broker.port()), None).await;
    let buffers = broker_socket_buffers(broker.port());
    assert_eq!(buffers, vec![(65_536, 65_536); 2], "both clients' sockets");
    let body = vec![0x5a; 2048];
    for n in 0..2_000u32 {
        let mut payload = n.to_be_bytes().to_vec();
        payload.extend_from_slice(&body);
        publisher
            .publish("buf/x", QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    let got = expect_n(&mut rx, 2_000).await;
    for (n, p) in got.iter().enumerate() {
        assert_eq!(p.payload.len(), 2052, "message {n} whole");
        assert_eq!(
            p.payload[..4],
            (n as u32).to_be_bytes(),
            "message {n} in order"
        );
    }
}
