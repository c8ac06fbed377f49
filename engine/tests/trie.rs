//! The subscription trie against a naive linear matcher, on random filters
//! and topics. A failure prints its seed; `TRIE_SEED=<n>` replays it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringmq_engine::core::trie::Trie;
use ringmq_protocol::topic;

const LEVELS: &[&str] = &["a", "b", "c", "", "$sys", "long-level", "ü"];

fn random_topic(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..=5);
    (0..n)
        .map(|_| LEVELS[rng.gen_range(0..LEVELS.len())])
        .collect::<Vec<_>>()
        .join("/")
}

fn random_filter(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..=5);
    let mut levels: Vec<&str> = (0..n)
        .map(|_| match rng.gen_range(0..10) {
            0..=2 => "+",
            _ => LEVELS[rng.gen_range(0..LEVELS.len())],
        })
        .collect();
    if rng.gen_bool(0.3) {
        levels.push("#");
    }
    levels.join("/")
}

fn check(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut trie: Trie<Vec<usize>> = Trie::default();
    let mut filters: Vec<Option<String>> = Vec::new();
    for step in 0..400 {
        // Add, sometimes remove, then compare every topic's matches.
        if filters.is_empty() || rng.gen_bool(0.7) {
            let f = random_filter(&mut rng);
            trie.entry(&f).push(filters.len());
            filters.push(Some(f));
        } else {
            let i = rng.gen_range(0..filters.len());
            if let Some(f) = filters[i].take() {
                let slot = trie.get_mut(&f).expect("added filter has a node");
                slot.retain(|&x| x != i);
                if slot.is_empty() {
                    trie.prune(&f);
                }
            }
        }
        let t = random_topic(&mut rng);
        let mut got = Vec::new();
        trie.for_each_match(&t, |s| got.extend(s.iter().copied()));
        got.sort_unstable();
        let want: Vec<usize> = (0..filters.len())
            .filter(|&i| filters[i].as_deref().is_some_and(|f| topic::matches(f, &t)))
            .collect();
        assert_eq!(got, want, "seed {seed}, step {step}, topic {t:?}");
    }
    let live = filters.iter().flatten().count();
    if live == 0 {
        assert_eq!(
            trie.node_count(),
            1,
            "seed {seed}: an empty trie keeps only its root"
        );
    }
}

#[test]
fn trie_matches_like_a_linear_scan() {
    let base: u64 = match std::env::var("TRIE_SEED") {
        Ok(s) => s.parse().expect("TRIE_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    for seed in base..base + 100 {
        check(seed);
    }
}

#[test]
fn pruning_leaves_nothing_behind() {
    let mut trie: Trie<Vec<u8>> = Trie::default();
    for f in ["a/b/c", "a/+/#", "#", "a/b"] {
        trie.entry(f).push(1);
    }
    for f in ["a/b/c", "a/+/#", "#", "a/b"] {
        trie.get_mut(f).expect("present").clear();
        trie.prune(f);
    }
    assert_eq!(trie.node_count(), 1);
}
