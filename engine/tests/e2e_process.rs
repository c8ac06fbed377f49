//! The `ringmq` process: start-up defaults, exclusive data directory and
//! port, graceful shutdown.

mod support;

use std::process::Command;

use ringmq_protocol::{Packet, ProtocolVersion, ReasonCode};
use support::{Broker, Raw};

fn second(args: &[&str]) -> (Option<i32>, String) {
    let admin = args.contains(&"--admin-listen");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .args(if admin {
            &[][..]
        } else {
            &["--admin-listen", ""][..]
        })
        .output()
        .expect("run a second ringmq");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_broker_on_the_same_data_directory_is_refused() {
    let broker = Broker::start("lockdir", &[]);
    let data = broker.dir.join("data");
    let port = support::free_port().to_string();
    let (code, err) = second(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("in use by another ringmq"), "{err}");
}

#[test]
fn a_second_broker_on_the_same_port_is_refused() {
    let broker = Broker::start("lockport", &[]);
    let other = support::temp_dir("lockport2");
    let (code, err) = second(&[
        "--listen",
        &broker.addr.to_string(),
        "--data-dir",
        other.join("data").to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot listen on"), "{err}");
    let _ = std::fs::remove_dir_all(other);
}

#[test]
fn a_busy_admin_port_stops_the_broker_with_a_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = taken.local_addr().expect("addr").to_string();
    let dir = support::temp_dir("adminport");
    let port = support::free_port().to_string();
    let (code, err) = second(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        dir.join("data").to_str().expect("utf-8"),
        "--admin-listen",
        &admin,
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("(admin.listen)"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_disconnects_v5_clients_with_0x8b_and_exits_cleanly() {
    let mut broker = Broker::start("sigterm", &[]);
    let mut clients: Vec<Raw> = (0..2)
        .map(|s| {
            Raw::session(
                broker.addr,
                ProtocolVersion::V5,
                &support::id_on_shard("bye", s),
            )
        })
        .collect();
    let status = broker.stop();
    assert!(status.success(), "exit status {status:?}");
    for c in &mut clients {
        match c.until_closed().as_slice() {
            [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown),
            other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
        }
    }
    assert!(broker.log().contains("ringmq stopped"));
}

#[test]
fn a_restart_listens_at_once_despite_connections_in_time_wait() {
    let mut broker = Broker::start("restart", &[]);
    // The broker closes these first, which leaves TIME_WAIT on its port.
    let mut clients: Vec<Raw> = (0..4)
        .map(|i| Raw::session(broker.addr, ProtocolVersion::V5, &format!("tw{i}")))
        .collect();
    assert!(broker.stop().success());
    for c in &mut clients {
        c.until_closed();
    }
    let (dir, port) = (broker.dir.clone(), broker.addr.port());
    let again = Broker::start_in(dir, port, &[]);
    let mut c = Raw::session(again.addr, ProtocolVersion::V311, "after");
    c.send(&Packet::PingReq, ProtocolVersion::V311);
    assert_eq!(c.recv(), Some(Packet::PingResp));
}

#[test]
fn a_bad_config_file_is_reported_with_its_line() {
    let dir = support::temp_dir("badconfig");
    let path = support::write_file(&dir, "bad.toml", "[limits]\npacket_bytes_mx = 5\n");
    let (code, err) = second(&["--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("packet_bytes_mx") && err.contains("line 2"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_lists_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("--help")
        .output()
        .expect("help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--shards",
        "--data-dir",
        "--log-level",
        "passwd",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn the_annotated_example_config_is_the_default() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../ringmq.toml");
    let from_file = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--config", example, "--print-config"])
        .output()
        .expect("print the example");
    let default = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("--print-config")
        .output()
        .expect("print the default");
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    assert_eq!(
        from_file.stdout, default.stdout,
        "ringmq.toml documents the defaults"
    );
}
