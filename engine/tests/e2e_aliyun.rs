//! The aliyun profile in a broker started in this process ([`Instance`]),
//! so the registry's Rust API (the one the admin API calls) changes it
//! while rumqttc clients are connected: token revocation, device
//! credentials, Group IDs and parent topics, a restart, and trace queries.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_engine::config::{Config, Profile};
use ringmq_engine::core::aliyun::registry::DeviceCredential;
use ringmq_engine::core::aliyun::signin::signature;
use ringmq_engine::core::trace::answer::Paging;
use ringmq_engine::instance::registrar::now_ms;
use ringmq_engine::instance::Instance;
use ringmq_protocol::{MqttString, Packet, ProtocolVersion};
use rumqttc::{Client, Connection, ConnectionError, Event, Incoming, MqttOptions, QoS};
use support::aliyun::{config as aliyun_config, AK, INSTANCE, SECRET};
use support::{free_port, temp_dir, Raw};

const WAIT: Duration = Duration::from_secs(10);

fn start(dir: &Path, port: u16) -> Instance {
    let mut config = Config {
        profile: Profile::Aliyun,
        shards: 2,
        data_dir: dir.join("data"),
        aliyun: aliyun_config(),
        ..Config::default()
    };
    config.listeners.tcp = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    config.admin.listen = String::new();
    config.validate().expect("valid config");
    let instance = Instance::start(config).expect("broker starts");
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    instance
}

fn stop(instance: Instance) {
    instance.shutdown();
    instance.wait().expect("clean stop");
}

/// A 3.1.1 client signed in with `user` / `password`.
fn client(port: u16, id: &str, user: &str, password: &str) -> (Client, Connection) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_credentials(user, password);
    Client::new(o, 100)
}

/// A 3.1.1 client signed in with device credential `c`.
fn device(port: u16, c: &DeviceCredential) -> (Client, Connection) {
    let user = format!("DeviceCredential|{}|{INSTANCE}", c.key_id);
    client(
        port,
        &c.client_id,
        &user,
        &signature(&c.secret, &c.client_id),
    )
}

fn signed(port: u16, id: &str) -> (Client, Connection) {
    client(
        port,
        id,
        &format!("Signature|{AK}|{INSTANCE}"),
        &signature(SECRET, id),
    )
}

/// The next event that is not an outgoing one; `Err` once the connection
/// failed.
fn next(conn: &mut Connection) -> Result<Incoming, Box<ConnectionError>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(i))) => return Ok(i),
            Ok(Ok(Event::Outgoing(_))) => {}
            Ok(Err(e)) => return Err(Box::new(e)),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }
}

/// Waits for CONNACK; `Err` if refused.
fn connected(conn: &mut Connection) -> Result<(), Box<ConnectionError>> {
    loop {
        if let Incoming::ConnAck(_) = next(conn)? {
            return Ok(());
        }
    }
}

fn refused_not_authorized(conn: &mut Connection) {
    refused(conn, rumqttc::ConnectReturnCode::NotAuthorized);
}

fn refused(conn: &mut Connection, expected: rumqttc::ConnectReturnCode) {
    match connected(conn).map_err(|e| *e) {
        Err(ConnectionError::ConnectionRefused(code)) => assert_eq!(code, expected),
        other => panic!("expected CONNACK {expected:?}, got {other:?}"),
    }
}

fn next_publish(conn: &mut Connection) -> rumqttc::Publish {
    loop {
        if let Incoming::Publish(p) = next(conn).expect("connected") {
            return p;
        }
    }
}

#[test]
fn a_token_revoked_through_the_registrar_disconnects_its_holder() {
    let (dir, port) = (temp_dir("ali-revoke"), free_port());
    let broker = start(&dir, port);
    let reg = broker.registrar().expect("aliyun profile").clone();
    let resources = vec!["devices/#".to_owned()];
    let token = reg
        .apply_token(AK, &resources, "R,W", now_ms() + 3_600_000)
        .expect("ApplyToken");
    assert!(reg.query_token(&token));
    let user = format!("Token|{AK}|{INSTANCE}");
    // A raw client: rumqttc drops what it read when the connection closes
    // right behind it (the notice comes just before the close).
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut holder = Raw::connect(addr, ProtocolVersion::V311);
    let mut c = support::connect(ProtocolVersion::V311, "GID_app@@@holder");
    c.username = MqttString::new(user.clone()).ok();
    c.password = Some(Bytes::from(format!("RW|{token}")));
    holder.send(&Packet::Connect(Box::new(c)), ProtocolVersion::V311);
    match holder.recv() {
        Some(Packet::ConnAck(a)) => assert!(!a.reason_code.is_error(), "{a:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    reg.revoke_token(&token).expect("RevokeToken");
    let packets = holder.until_closed();
    let notice = match packets.as_slice() {
        [Packet::Publish(p)] => p,
        other => panic!("expected the notice, then the close: {other:?}"),
    };
    assert_eq!(notice.topic.as_str(), "$SYS/tokenInvalidNotice");
    let body: serde_json::Value = serde_json::from_slice(&notice.payload).expect("JSON");
    assert_eq!(body, serde_json::json!({"code": 3, "type": "RW"}));
    assert!(!reg.query_token(&token));
    let (_c, mut again) = client(port, "GID_app@@@holder2", &user, &format!("RW|{token}"));
    refused_not_authorized(&mut again);
    stop(broker);
}

#[test]
fn registry_changes_decide_who_connects_and_where_they_publish_and_survive_a_restart() {
    let (dir, port) = (temp_dir("ali-registry"), free_port());
    let broker = start(&dir, port);
    let reg = broker.registrar().expect("aliyun profile").clone();
    // A device credential signs its own client id in.
    let cred = reg
        .register_device_credential("GID_sensor@@@dc")
        .expect("register");
    assert_eq!(
        reg.register_device_credential("GID_sensor@@@dc").ok(),
        Some(cred.clone()),
        "registered once"
    );
    let (_c, mut conn) = device(port, &cred);
    connected(&mut conn).expect("DeviceCredential sign-in");
    let fresh = reg
        .refresh_device_credential("GID_sensor@@@dc")
        .expect("refresh");
    let (_c, mut old) = device(port, &cred);
    refused_not_authorized(&mut old);
    // Group IDs and parent topics.
    let (_c, mut early) = signed(port, "GID_new-group@@@x");
    refused(&mut early, rumqttc::ConnectReturnCode::BadClientId);
    reg.create_group_id("GID_new-group").expect("CreateGroupId");
    assert!(
        reg.create_group_id("GID_new-group").is_err(),
        "a Group ID exists once"
    );
    reg.create_parent_topic("factory").expect("CreateTopic");
    let (sub, mut sub_conn) = signed(port, "GID_new-group@@@x");
    connected(&mut sub_conn).expect("a new Group ID's client");
    sub.subscribe("factory/+", QoS::AtLeastOnce).expect("queue");
    while !matches!(next(&mut sub_conn), Ok(Incoming::SubAck(_))) {}
    let (publisher, mut pub_conn) = signed(port, "GID_sensor@@@p");
    connected(&mut pub_conn).expect("publisher connected");
    // The publisher's connection is driven on its own thread.
    std::thread::spawn(move || while next(&mut pub_conn).is_ok() {});
    publisher
        .publish("factory/line1", QoS::AtLeastOnce, false, "on")
        .expect("queue");
    let got = next_publish(&mut sub_conn);
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("factory/line1", &b"on"[..])
    );
    stop(broker);

    // After a restart: the same registry.
    let broker = start(&dir, port);
    let reg = broker.registrar().expect("aliyun profile").clone();
    assert!(reg
        .list_group_ids()
        .iter()
        .any(|(g, _)| g == "GID_new-group"));
    assert!(reg.list_parent_topics().iter().any(|(t, _)| t == "factory"));
    let (_c, mut conn) = device(port, &fresh);
    connected(&mut conn).expect("the refreshed credential after a restart");
    reg.unregister_device_credential("GID_sensor@@@dc")
        .expect("unregister");
    let (_c, mut gone) = device(port, &fresh);
    refused_not_authorized(&mut gone);
    reg.delete_group_id("GID_new-group").expect("DeleteGroupId");
    let (_c, mut late) = signed(port, "GID_new-group@@@y");
    refused(&mut late, rumqttc::ConnectReturnCode::BadClientId);
    stop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn traces_of_a_message_and_a_device_answer_through_the_instance() {
    let (dir, port) = (temp_dir("ali-traces"), free_port());
    let broker = start(&dir, port);
    // The broker's clock is its start time plus a monotonic clock: it may
    // read a millisecond behind this one.
    let begin = now_ms() - 1_000;
    let (sub, mut sub_conn) = signed(port, "GID_app@@@reader");
    connected(&mut sub_conn).expect("connected");
    sub.subscribe("alerts/#", QoS::AtLeastOnce).expect("queue");
    while !matches!(next(&mut sub_conn), Ok(Incoming::SubAck(_))) {}
    let (publisher, mut pub_conn) = signed(port, "GID_sensor@@@writer");
    connected(&mut pub_conn).expect("connected");
    std::thread::spawn(move || while next(&mut pub_conn).is_ok() {});
    publisher
        .publish("alerts/fire", QoS::AtLeastOnce, false, "hot")
        .expect("queue");
    let _ = next_publish(&mut sub_conn);
    let end = now_ms() + 1_000;
    let page = Paging {
        current_page: 1,
        page_size: 10,
        reverse: false,
    };
    let handle = broker.handle();
    let received = handle
        .trace_message_of_client("GID_app@@@reader", begin, end, page)
        .expect("shards answer");
    assert_eq!(received.total, 1);
    let msg = &received.message_of_client_list[0];
    assert_eq!(
        (msg.action.as_str(), msg.action_code.as_str()),
        ("sub", "mqtt.trace.action.msg.sub")
    );
    let published = handle
        .trace_message_publish(&msg.msg_id, begin, end)
        .expect("answer");
    assert_eq!(published.message_trace_lists.len(), 1);
    assert_eq!(
        published.message_trace_lists[0].client_id,
        "GID_sensor@@@writer"
    );
    let delivered = handle
        .trace_message_subscribe(&msg.msg_id, None, begin, end, page)
        .expect("answer");
    assert_eq!(delivered.message_trace_lists.len(), 1);
    assert_eq!(
        delivered.message_trace_lists[0].client_id,
        "GID_app@@@reader"
    );
    let device = handle
        .trace_device("GID_app@@@reader", begin, end, page)
        .expect("answer");
    assert_eq!(device.device_info_list[0].action_info, "accepted");
    assert_eq!(device.device_info_list[0].channel_id.len(), 32);
    let json = serde_json::to_value(&device).expect("serialises");
    assert!(
        json.get("DeviceInfoList").is_some() && json.get("Total").is_some(),
        "{json}"
    );
    stop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn each_shard_keeps_its_share_of_trace_events_max() {
    let (dir, port) = (temp_dir("ali-trace-cap"), free_port());
    let broker = start(&dir, port);
    let caps = broker
        .controls()
        .call_all(|b, _| b.traces.cap(), Duration::from_secs(5))
        .expect("shards answer");
    assert_eq!(
        caps,
        vec![500_000, 500_000],
        "1,000,000 events over two shards"
    );
    stop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
