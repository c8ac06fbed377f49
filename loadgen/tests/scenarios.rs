//! Every scenario of `loadgen run` against a real broker, and the checks
//! against a proxy that loses and duplicates messages on purpose.

mod support;

use support::{loadgen, loadgen_run, Broker, LossyProxy};

#[test]
fn fanout_open_loop_sends_exactly_the_scheduled_messages_to_every_subscriber() {
    let broker = Broker::ringmq("fanout");
    let run = loadgen_run(
        broker.port,
        &[
            "-s", "fanout", "-P", "2", "-S", "3", "--qos", "1", "--rate", "2000",
        ],
    );
    assert!(run.ok(), "{}", run.stdout());
    let r = &run.summary().results;
    // 2 publishers × 1000/s × 1 s, each to 3 subscribers.
    assert_eq!(r.checks.expected, 6000);
    assert_eq!(
        (r.checks.received, r.checks.lost, r.checks.duplicated),
        (6000, 0, 0)
    );
    let latency = r.latency.as_ref().expect("end-to-end latency");
    assert_eq!(latency.count, 6000);
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert_eq!(r.ack_latency.as_ref().map(|l| l.count), Some(2000));
    assert_eq!(r.connect_latency.as_ref().map(|l| l.count), Some(5));
}

#[test]
fn fanin_closed_loop_gets_every_publisher_to_the_subscriber() {
    let broker = Broker::ringmq("fanin");
    let run = loadgen_run(
        broker.port,
        &[
            "-s",
            "fanin",
            "-P",
            "20",
            "-S",
            "1",
            "--qos",
            "1",
            "--inflight",
            "8",
        ],
    );
    assert!(run.ok(), "{}", run.stdout());
    let c = &run.summary().results.checks;
    assert!(c.expected > 20, "{c:?}");
    assert_eq!((c.lost, c.duplicated, c.out_of_order), (0, 0, 0));
    assert!(run.summary().results.delivery_rate > 0.0);
}

#[test]
fn every_transport_carries_a_run_without_loss() {
    let (broker, [tls, ws, wss]) = Broker::ringmq_all_transports("transports");
    let ca = broker.dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    for (transport, port) in [("tls", tls), ("ws", ws), ("wss", wss)] {
        let run = loadgen_run(
            port,
            &[
                "-s",
                "pairs",
                "-P",
                "3",
                "--qos",
                "1",
                "--rate",
                "600",
                "--transport",
                transport,
                "--ca-file",
                ca,
            ],
        );
        assert!(run.ok(), "{transport}: {}", run.stdout());
        let c = &run.summary().results.checks;
        assert_eq!(
            (c.expected, c.received, c.lost),
            (600, 600, 0),
            "{transport}"
        );
    }
}

#[test]
fn pairs_deliver_each_publisher_to_its_own_subscriber_only() {
    let broker = Broker::ringmq("pairs");
    let run = loadgen_run(
        broker.port,
        &["-s", "pairs", "-P", "5", "--qos", "2", "--rate", "1000"],
    );
    assert!(run.ok(), "{}", run.stdout());
    let c = &run.summary().results.checks;
    // Each subscriber expects only its publisher's 200 messages.
    assert_eq!((c.expected, c.received, c.lost), (1000, 1000, 0));
}

#[test]
fn shared_group_gets_each_message_once_across_its_members() {
    let broker = Broker::ringmq("shared");
    let run = loadgen_run(
        broker.port,
        &[
            "-s",
            "shared",
            "--mqtt-version",
            "5",
            "-P",
            "2",
            "-S",
            "3",
            "--qos",
            "1",
            "--rate",
            "2000",
        ],
    );
    assert!(run.ok(), "{}", run.stdout());
    let r = &run.summary().results;
    // The group's members are checked as one subscriber over the whole
    // run: every message received once (`received` counts distinct
    // messages), and a message two members got counts as duplicated. The
    // window's `delivered` and `published` are not compared: a message
    // sent just before the window opens may arrive inside it.
    assert_eq!(
        (
            r.checks.expected,
            r.checks.received,
            r.checks.lost,
            r.checks.duplicated
        ),
        (2000, 2000, 0, 0),
        "each message delivered to exactly one member"
    );
}

#[test]
fn p2p_publishers_reach_the_client_named_in_the_topic() {
    let broker = Broker::ringmq("p2p");
    let run = loadgen_run(
        broker.port,
        &[
            "-s",
            "p2p",
            "-P",
            "3",
            "--qos",
            "1",
            "--rate",
            "600",
            "--group-id",
            "GID_bench",
        ],
    );
    assert!(run.ok(), "{}", run.stdout());
    let s = run.summary();
    assert_eq!((s.results.checks.expected, s.results.checks.lost), (600, 0));
    assert_eq!(s.config["parent_topic"], "loadgen");
}

#[test]
fn offline_sessions_keep_every_message_and_drain_on_reconnect() {
    let broker = Broker::ringmq("offline");
    for version in ["3.1.1", "5"] {
        let run = loadgen_run(
            broker.port,
            &[
                "-s",
                "offline",
                "-P",
                "2",
                "-S",
                "3",
                "--messages",
                "500",
                "--mqtt-version",
                version,
            ],
        );
        assert!(run.ok(), "v{version}: {}", run.stdout());
        let r = &run.summary().results;
        assert_eq!(
            (r.checks.expected, r.checks.received, r.checks.lost),
            (3000, 3000, 0),
            "v{version}"
        );
        assert_eq!(r.published, 1000);
        assert!(r.drain_rate.is_some_and(|d| d > 0.0));
    }
}

#[test]
fn connections_are_held_and_the_broker_rss_per_connection_reported() {
    let broker = Broker::ringmq("connections");
    let pid = broker.pid().to_string();
    let run = loadgen_run(
        broker.port,
        &[
            "-s",
            "connections",
            "-n",
            "300",
            "--connect-rate",
            "1000",
            "--broker-pid",
            &pid,
        ],
    );
    assert!(run.ok(), "{}", run.stdout());
    let r = &run.summary().results;
    assert_eq!((r.connections, r.connect_failures), (300, 0));
    assert_eq!(r.connect_latency.as_ref().map(|l| l.count), Some(300));
    // 300 at 1000/s take about 0.3 s: the pacing holds the rate down.
    assert!(
        r.connect_rate.is_some_and(|c| c > 0.0 && c < 2000.0),
        "{:?}",
        r.connect_rate
    );
    assert!(r.broker_peak_rss_bytes.is_some_and(|b| b > 0));
    assert!(
        r.rss_bytes_per_connection.is_some_and(|b| b > 0.0),
        "{:?}",
        r.rss_bytes_per_connection
    );
}

#[test]
fn churn_connects_and_disconnects_in_a_loop() {
    let broker = Broker::ringmq("churn");
    let run = loadgen_run(broker.port, &["-s", "churn", "-n", "4"]);
    assert!(run.ok(), "{}", run.stdout());
    let r = &run.summary().results;
    assert!(
        r.connections > 4,
        "each of 4 clients connected more than once: {}",
        r.connections
    );
    assert!(r.connect_rate.is_some_and(|c| c > 0.0));
    assert_eq!(r.connect_failures, 0);
}

#[test]
fn dropped_qos1_messages_are_reported_lost_and_fail_the_run() {
    let broker = Broker::ringmq("lossy1");
    let proxy = LossyProxy::start(broker.port, vec![10, 20], vec![30]);
    let run = loadgen_run(
        proxy.port,
        &[
            "-s", "fanout", "-P", "1", "-S", "2", "--qos", "1", "--rate", "500", "--drain", "1s",
        ],
    );
    let c = &run.summary().results.checks;
    assert_eq!((c.expected, c.lost, c.duplicated), (1000, 2, 1), "{c:?}");
    assert_eq!(run.code(), Some(1), "QoS 1 losses fail the run");
    assert!(run.stdout().contains("2 lost"), "{}", run.stdout());
}

#[test]
fn dropped_qos0_messages_are_counted_but_do_not_fail_the_run() {
    let broker = Broker::ringmq("lossy0");
    let proxy = LossyProxy::start(broker.port, vec![5, 6, 7], vec![]);
    let run = loadgen_run(
        proxy.port,
        &["-s", "pairs", "-P", "1", "--qos", "0", "--rate", "500"],
    );
    assert!(run.ok(), "{}", run.stdout());
    let c = &run.summary().results.checks;
    assert_eq!((c.expected, c.received, c.lost), (500, 497, 3));
    assert_eq!(c.subscribers.len(), 1);
}

#[test]
fn runs_against_mosquitto_too() {
    let broker = Broker::mosquitto("mosquitto");
    let run = loadgen_run(
        broker.port,
        &[
            "-s", "fanout", "-P", "2", "-S", "2", "--qos", "1", "--rate", "1000",
        ],
    );
    assert!(run.ok(), "{}", run.stdout());
    let s = run.summary();
    assert_eq!(
        (s.results.checks.expected, s.results.checks.lost),
        (2000, 0)
    );
    assert!(
        s.broker
            .version
            .as_deref()
            .is_some_and(|v| v.contains("mosquitto")),
        "{:?}",
        s.broker.version
    );
}

#[test]
fn compare_fails_a_run_past_its_threshold_and_plot_draws_both() {
    let broker = Broker::ringmq("compare");
    let args = ["-s", "pairs", "-P", "2", "--qos", "1", "--rate", "1000"];
    let a = loadgen_run(broker.port, &args);
    let b = loadgen_run(broker.port, &args);
    let dir = support::temp_dir("compare");
    let (pa, pb) = (dir.join("a.json"), dir.join("b.json"));
    a.summary().write(&pa).expect("write a");
    let mut slow = b.summary().clone();
    slow.label = "slow".into();
    let latency = slow.results.latency.as_mut().expect("latency");
    latency.p99 = a.summary().results.latency.as_ref().map_or(0.0, |l| l.p99) * 10.0;
    slow.write(&pb).expect("write b");
    let (sa, sb) = (
        pa.to_string_lossy().into_owned(),
        pb.to_string_lossy().into_owned(),
    );
    let same = loadgen(&["compare", &sa, &sa, "--fail-if", "p99>3x"]);
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let worse = loadgen(&[
        "compare",
        &sa,
        &sb,
        "--fail-if",
        "p99>3x",
        "--fail-if",
        "throughput<0.5x",
    ]);
    assert_eq!(worse.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&worse.stdout).contains("FAIL p99"));
    let svg = dir.join("latency.svg");
    let plot = loadgen(&["plot", &sa, &sb, "-o", &svg.to_string_lossy()]);
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    let drawn = std::fs::read_to_string(&svg).expect("svg written");
    assert!(drawn.contains("slow") && drawn.contains("<svg"));
}

/// `--find-max` against `port`: the parsed find-max.json and the exit code.
fn find_max(port: u16, args: &[&str]) -> (serde_json::Value, Option<i32>) {
    let out = support::temp_dir("findmax");
    let port = port.to_string();
    let out_arg = out.to_string_lossy().into_owned();
    let fixed = [
        "run",
        "--port",
        &port,
        "--threads",
        "1",
        "-q",
        "--warmup",
        "0s",
        "-d",
        "1s",
        "--drain",
        "2s",
        "--find-max",
        "--out",
        &out_arg,
    ];
    let output = loadgen(&[&fixed[..], args].concat());
    let text = std::fs::read_to_string(out.join("find-max.json")).unwrap_or_else(|_| {
        panic!(
            "no find-max.json; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let json = serde_json::from_str(&text).expect("find-max.json is JSON");
    (json, output.status.code())
}

#[test]
fn find_max_doubles_the_rate_while_runs_are_sustained() {
    let broker = Broker::ringmq("findmax");
    let (f, code) = find_max(
        broker.port,
        &[
            "-s",
            "pairs",
            "-P",
            "2",
            "--qos",
            "1",
            "--rate",
            "500",
            "--rate-max",
            "2000",
        ],
    );
    assert_eq!(code, Some(0), "{f}");
    let rates: Vec<f64> = f["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["rate"].as_f64().unwrap_or(0.0))
        .collect();
    assert_eq!(rates, [500.0, 1000.0, 2000.0], "{f}");
    assert_eq!(f["sustained_rate"].as_f64(), Some(2000.0));
    assert!(
        f["sustained_delivery_rate"]
            .as_f64()
            .is_some_and(|d| d > 1500.0),
        "{f}"
    );
}

#[test]
fn find_max_runs_a_failed_rate_again_before_it_counts() {
    let broker = Broker::ringmq("findmaxretry");
    // The 10th message delivered through the proxy is lost: the first run
    // fails, the second (same rate) does not.
    let proxy = LossyProxy::start(broker.port, vec![10], vec![]);
    let (f, code) = find_max(
        proxy.port,
        &[
            "-s",
            "pairs",
            "-P",
            "1",
            "--qos",
            "1",
            "--rate",
            "300",
            "--rate-max",
            "300",
        ],
    );
    assert_eq!(code, Some(0), "{f}");
    let steps = f["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{f}");
    assert_eq!(steps[0]["sustained"], false);
    assert_eq!(steps[0]["why"], "1 lost");
    assert_eq!(steps[1]["sustained"], true);
    assert_eq!(f["sustained_rate"].as_f64(), Some(300.0));
}

#[test]
fn reference_measures_the_host_round_trip_and_writes_it() {
    let dir = support::temp_dir("reference");
    let out = loadgen(&[
        "reference",
        "--rate",
        "2000",
        "-d",
        "1s",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("round trips at 2000/s"), "{text}");
    let reference = loadgen::reference::read(&dir.join("reference.json")).expect("reference.json");
    // 1 s of warm-up is left out: 2,000 frames measured of 4,000 sent.
    assert_eq!(reference.frames, 2000);
    let l = &reference.latency;
    assert!(l.min >= 1.0 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");
    assert_eq!(
        reference.machine.cores,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let _ = std::fs::remove_dir_all(dir);
}
