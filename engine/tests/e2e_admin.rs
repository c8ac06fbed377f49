//! The admin endpoint against hostile HTTP clients, with a broker process:
//! connections that never finish their request head fill every slot the
//! endpoint has, an oversized head is refused, and MQTT traffic goes on
//! untouched meanwhile; once the idle timeout closes the stalled
//! connections, the endpoint serves again.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringmq_protocol::{Packet, ProtocolVersion, QoS};
use support::client::{publish, subscribe_packet};
use support::{free_port, temp_dir, write_file, Broker, Raw};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// `GET path` on a new connection; the status line's code.
fn get(admin: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A round trip through the broker: subscribe, publish at QoS 1, receive
/// (each read gives up after 5 s).
fn mqtt_round_trip(addr: SocketAddr, n: u32) {
    let topic = format!("admin/flood/{n}");
    let mut sub = Raw::session(addr, V5, &format!("sub-{n}"));
    sub.send(&subscribe_packet(1, &topic), V5);
    assert!(matches!(sub.recv(), Some(Packet::SubAck(_))));
    let mut pub_ = Raw::session(addr, V5, &format!("pub-{n}"));
    pub_.send(&publish(&topic, "x", QoS::AtLeastOnce, Some(1)), V5);
    assert!(matches!(pub_.recv(), Some(Packet::PubAck(_))));
    assert!(matches!(sub.recv(), Some(Packet::Publish(_))));
}

#[test]
fn stalled_and_oversized_http_requests_leave_mqtt_alone() {
    let dir = temp_dir("admin-hostile");
    let config = write_file(
        &dir,
        "ringmq.toml",
        "[admin]\nconnections_max = 4\nidle_timeout_secs = 2\nheader_bytes_max = 8192\n",
    );
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let broker = Broker::start_in(
        dir,
        free_port(),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--admin-listen",
            &admin.to_string(),
        ],
    );
    assert_eq!(get(admin, "/healthz", Duration::from_secs(5)), Some(200));

    // An oversized request head: 431, the connection closed.
    let mut big = TcpStream::connect(admin).expect("connect");
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = big.write_all(head.as_bytes());
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    // Four connections that never finish their head take every slot.
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(admin).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        get(admin, "/healthz", Duration::from_millis(500)),
        None,
        "no slot is free"
    );
    for n in 0..20 {
        mqtt_round_trip(broker.addr, n);
    }
    // The idle timeout closes them; the endpoint serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(admin, "/healthz", Duration::from_secs(1)) != Some(200) {
        assert!(Instant::now() < deadline, "the endpoint did not recover");
    }
    drop(stalled);
}
