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
    assert_eq!(
        err.matches("cannot listen on").count(),
        1,
        "said once: {err}"
    );
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

/// Starts a broker on `config` (a TOML text) in a fresh directory whose
/// data directory is `data`; returns the exit code, stderr and whether the
/// data directory exists afterwards.
fn start_with(name: &str, config: &str, extra: &[&str]) -> (Option<i32>, String, bool) {
    let dir = support::temp_dir(name);
    let path = support::write_file(&dir, "ringmq.toml", config);
    let data = dir.join("data");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut args = vec![
        "--config",
        path.to_str().expect("utf-8"),
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let (code, err) = second(&args);
    let created = data.exists();
    let _ = std::fs::remove_dir_all(dir);
    (code, err, created)
}

#[test]
fn auth_without_a_password_file_is_a_config_error_before_anything_starts() {
    let (code, err, created) = start_with("noanon", "[auth]\nallow_anonymous = false\n", &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("auth.allow_anonymous = false needs auth.password_file"),
        "{err}"
    );
    assert!(!created, "no data directory for a broker that cannot start");
}

#[test]
fn a_segment_too_large_for_the_offline_index_is_a_config_error() {
    let config = "[storage]\nsegment_bytes = 4294967296\n";
    let (code, err, created) = start_with("bigseg", config, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("storage.segment_bytes: at most"), "{err}");
    assert!(!created, "no data directory");
}

#[test]
fn a_socket_buffer_below_the_kernel_minimum_is_a_config_error() {
    for key in ["socket_receive_bytes", "socket_send_bytes"] {
        let config = format!("[listeners]\n{key} = 100\n");
        let (code, err, created) = start_with("sockbuf", &config, &[]);
        assert_eq!(code, Some(2), "{key}: {err}");
        assert!(err.contains(&format!("listeners.{key}: 0")), "{err}");
        assert!(!created, "{key}: no data directory");
    }
}

#[test]
fn an_io_ring_size_out_of_range_is_a_config_error() {
    for entries in [0, 8, 65_536] {
        let config = format!("[runtime]\nio_ring_entries = {entries}\n");
        let (code, err, created) = start_with("ring", &config, &[]);
        assert_eq!(code, Some(2), "{entries}: {err}");
        assert!(
            err.contains("runtime.io_ring_entries: 16 to 32768"),
            "{err}"
        );
        assert!(!created, "{entries}: no data directory");
    }
}

/// The submission-queue size of each of process `pid`'s io_uring rings,
/// from the kernel's `SqMask` in /proc.
fn io_ring_sizes(pid: u32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc fd");
    fds.filter_map(|e| {
        let e = e.ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        if !target.to_string_lossy().contains("io_uring") {
            return None;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .ok()?;
        let mask = info.lines().find_map(|l| l.strip_prefix("SqMask:"))?;
        let mask = u64::from_str_radix(mask.trim().trim_start_matches("0x"), 16).ok()?;
        Some(mask + 1)
    })
    .collect()
}

#[test]
fn the_io_rings_have_the_configured_number_of_entries() {
    let default = Broker::start("ring-default", &[]);
    let sizes = io_ring_sizes(default.pid());
    assert!(!sizes.is_empty(), "the broker has io_uring rings");
    assert!(sizes.iter().all(|&n| n == 1024), "default: {sizes:?}");
    let dir = support::temp_dir("ring-256");
    let config = support::write_file(&dir, "ringmq.toml", "[runtime]\nio_ring_entries = 256\n");
    let config = config.to_string_lossy().into_owned();
    let small = Broker::start_in(dir, support::free_port(), &["-c", &config]);
    let sizes = io_ring_sizes(small.pid());
    assert!(!sizes.is_empty(), "the broker has io_uring rings");
    assert!(sizes.iter().all(|&n| n == 256), "256: {sizes:?}");
}

#[test]
fn a_missing_password_or_acl_file_is_a_config_error_before_anything_starts() {
    for (key, what) in [("password_file", "passwd"), ("acl_file", "acl")] {
        let config = format!("[auth]\n{key} = \"/nonexistent/ringmq-{what}\"\n");
        let (code, err, created) = start_with(what, &config, &[]);
        assert_eq!(code, Some(2), "{key}: {err}");
        assert!(err.contains(&format!("auth.{key}")), "{err}");
        assert!(err.contains("/nonexistent/ringmq-"), "{err}");
        assert_eq!(
            err.lines().filter(|l| !l.trim().is_empty()).count(),
            1,
            "said once: {err}"
        );
        assert!(!created, "{key}: no data directory");
    }
}

#[test]
fn a_missing_certificate_is_a_config_error_before_anything_starts() {
    let tls = format!("127.0.0.1:{}", support::free_port());
    let config = format!(
        "[listeners]\ntls = [\"{tls}\"]\n[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n"
    );
    let (code, err, created) = start_with("nocert", &config, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    assert!(!created);
}

#[test]
fn a_bad_log_level_is_refused() {
    for bad in ["inf o==", "warning", "inf", "info,ringmq=loud"] {
        let (code, err, created) = start_with("loglevel", "", &["--log-level", bad]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("log_level"), "{err}");
        assert!(!created);
    }
}

/// Runs `ringmq passwd FILE USER` with `stdin` piped in.
fn passwd(file: &std::path::Path, user: &str, stdin: &[u8]) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["passwd", file.to_str().expect("utf-8"), user])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ringmq passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn passwd_refuses_empty_passwords_and_writes_the_file_for_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::temp_dir("passwd");
    let file = dir.join("passwd");
    for empty in [&b""[..], b"\n", b"\r\n"] {
        let (code, err) = passwd(&file, "alice", empty);
        assert_eq!(code, Some(2), "{empty:?}");
        assert!(err.contains("password is empty"), "{err}");
        assert!(!file.exists(), "nothing written for {empty:?}");
    }
    let mode =
        |f: &std::path::Path| std::fs::metadata(f).expect("stat").permissions().mode() & 0o777;
    assert_eq!(passwd(&file, "carol", b"first\n").0, Some(0));
    assert_eq!(mode(&file), 0o600, "a new file is owner-only");
    std::fs::write(&file, "# users\n").expect("seed a file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    assert_eq!(passwd(&file, "alice", b"s3cret\n").0, Some(0));
    assert_eq!(passwd(&file, "bob", b"other").0, Some(0));
    assert_eq!(passwd(&file, "alice", b"").0, Some(2));
    assert_eq!(
        mode(&file),
        0o640,
        "group may read, others nothing, nobody else writes"
    );
    // A symlinked file is written where it points, and stays a link.
    let link = dir.join("passwd-link");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    assert_eq!(passwd(&link, "dave", b"pw").0, Some(0));
    assert!(std::fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
    let leftovers = std::fs::read_dir(&dir).expect("ls").count();
    assert_eq!(leftovers, 2, "no temporary file left behind");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.starts_with("# users\n"), "{text}");
    assert!(text.contains("dave:$argon2id$"), "{text}");
    assert_eq!(text.matches("alice:$argon2id$").count(), 1, "{text}");
    assert_eq!(text.matches("bob:$argon2id$").count(), 1, "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
