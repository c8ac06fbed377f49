//! The registry's journal on disk: every change acknowledged to its
//! caller survives `kill -9` (a child process appends and is killed in the
//! middle), folds into snapshots keep it, and a torn tail is cut.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use ringmq_engine::core::aliyun::registry::{Change, Registry};
use ringmq_engine::store::registry::RegistryStore;
use support::temp_dir;

/// Changes the child acknowledges before it is killed: past the first
/// fold of the journal into a snapshot (1,000 lines).
const ACKED_BEFORE_KILL: usize = 1_500;

fn group(i: usize) -> String {
    format!("GID_k{i:05}")
}

#[test]
#[ignore = "the child process of changes_acknowledged_before_kill_9_survive"]
fn child_appends_changes_until_killed() {
    let Ok(dir) = std::env::var("RINGMQ_REGISTRY_DIR") else {
        return;
    };
    let (mut store, loaded) = RegistryStore::open(dir.as_ref()).expect("open");
    let mut registry = loaded.registry;
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let change = Change::CreateGroupId {
            id: group(i),
            at_ms: i as u64,
        };
        store.append(&change).expect("append");
        registry.apply(&change);
        store.fold_if_due(&registry).expect("fold");
        writeln!(out, "acked {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn changes_acknowledged_before_kill_9_survive() {
    let dir = temp_dir("registry-kill9");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_appends_changes_until_killed",
            "--nocapture",
        ])
        .env("RINGMQ_REGISTRY_DIR", &dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("piped");
    let mut acked = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("acked ") {
            let n: usize = n.parse().expect("number");
            acked = Some(n);
            if n + 1 >= ACKED_BEFORE_KILL {
                break;
            }
        }
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let acked = acked.expect("the child acknowledged changes");
    assert!(acked + 1 >= ACKED_BEFORE_KILL);

    let (_store, loaded) = RegistryStore::open(&dir).expect("reopen");
    let groups = &loaded.registry.group_ids;
    for i in 0..=acked {
        assert!(
            groups.contains_key(&group(i)),
            "acknowledged change {i} lost"
        );
    }
    // Whatever else survived is a prefix of the changes: no gaps.
    let n = groups.len();
    assert!(
        (0..n).all(|i| groups.contains_key(&group(i))),
        "{n} groups, not a prefix"
    );
    assert!(
        dir.join("snapshot.json").exists(),
        "the journal was folded on the way"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_is_cut_and_what_came_before_is_kept() {
    let dir = temp_dir("registry-torn");
    {
        let (mut store, loaded) = RegistryStore::open(&dir).expect("open");
        let mut r: Registry = loaded.registry;
        for i in 0..3 {
            let change = Change::CreateGroupId {
                id: group(i),
                at_ms: 1,
            };
            store.append(&change).expect("append");
            r.apply(&change);
        }
    }
    let journal = dir.join("journal");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .expect("journal");
    f.write_all(b"0badc0de 4 {\"op\":\"CreateGro")
        .expect("torn write");
    drop(f);
    let (_store, loaded) = RegistryStore::open(&dir).expect("reopen");
    assert_eq!(loaded.registry.group_ids.len(), 3);
    assert!(loaded.torn_bytes > 0);
    let (mut store, loaded) = RegistryStore::open(&dir).expect("again");
    assert_eq!(loaded.torn_bytes, 0, "the tail was cut for good");
    let mut r = loaded.registry;
    let change = Change::CreateGroupId {
        id: group(3),
        at_ms: 1,
    };
    store.append(&change).expect("append after the cut");
    r.apply(&change);
    drop(store);
    let (_store, loaded) = RegistryStore::open(&dir).expect("reopen");
    assert_eq!(loaded.registry.group_ids.len(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}
