//! Loss, duplicate and ordering totals from what publishers sent and
//! subscribers received.
//!
//! A message counts as expected when its publisher wrote it (QoS 0) or the
//! broker acknowledged it (QoS 1/2). A subscriber group (one subscriber, or
//! a shared group whose members' receipts are merged) loses what it was
//! expected to receive and never did; a message two members of a shared
//! group both received is a duplicate.

use crate::plan::{Expect, Plan};
use crate::publisher::PubReport;
use crate::seqset::SeqSet;
use crate::summary::{Checks, SubscriberCheck};
use crate::worker::WorkerReport;
use std::collections::HashMap;

/// Subscribers listed by name in a report, at most.
const LISTED_MAX: usize = 100;

/// What each group received, merged.
#[derive(Debug, Default)]
struct GroupReceipts {
    received: HashMap<u32, SeqSet>,
    duplicated: u64,
    out_of_order: u64,
}

/// The checks of a run whose effective QoS is `qos`.
pub fn check(plan: &Plan, reports: &[WorkerReport], qos: u8) -> Checks {
    let publishers: HashMap<u32, &PubReport> = reports
        .iter()
        .flat_map(|r| &r.publishers)
        .map(|p| (p.index, p))
        .collect();
    let expected = |p: &PubReport| {
        if qos >= 1 {
            p.acked.clone()
        } else {
            SeqSet::first(p.sent)
        }
    };
    let expected: HashMap<u32, SeqSet> =
        publishers.iter().map(|(&i, p)| (i, expected(p))).collect();
    let mut groups: Vec<GroupReceipts> = plan
        .groups
        .iter()
        .map(|_| GroupReceipts::default())
        .collect();
    for sub in reports.iter().flat_map(|r| &r.subscribers) {
        let Some(g) = groups.get_mut(sub.group as usize) else {
            continue;
        };
        for (p, seqs) in &sub.received {
            g.duplicated += g.received.entry(*p).or_default().merge(seqs);
        }
        g.duplicated += sub.duplicated;
        g.out_of_order += sub.out_of_order;
    }
    let mut checks = Checks {
        qos,
        ..Checks::default()
    };
    for (group, got) in plan.groups.iter().zip(&groups) {
        let wanted: Vec<u32> = match group.expects {
            Expect::All => expected.keys().copied().collect(),
            Expect::One(p) => vec![p],
        };
        let mut lost = 0;
        for p in wanted {
            let empty = SeqSet::default();
            let exp = expected.get(&p).unwrap_or(&empty);
            let rec = got.received.get(&p).unwrap_or(&empty);
            checks.expected += exp.len();
            checks.received += rec.len();
            lost += rec.missing_of(exp);
        }
        checks.lost += lost;
        checks.duplicated += got.duplicated;
        checks.out_of_order += got.out_of_order;
        let anomalous = lost + got.duplicated + got.out_of_order > 0;
        if anomalous && checks.subscribers.len() < LISTED_MAX {
            checks.subscribers.push(SubscriberCheck {
                client_id: group.name.clone(),
                lost,
                duplicated: got.duplicated,
                out_of_order: got.out_of_order,
            });
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Group;
    use crate::subscriber::SubReport;

    fn set(seqs: impl IntoIterator<Item = u64>) -> SeqSet {
        let mut s = SeqSet::default();
        for n in seqs {
            s.insert(n);
        }
        s
    }

    fn publisher(index: u32, sent: u64, acked: SeqSet) -> PubReport {
        PubReport { index, sent, acked }
    }

    fn subscriber(group: u32, from: u32, got: SeqSet) -> SubReport {
        SubReport {
            client_id: format!("s{group}"),
            group,
            received: HashMap::from([(from, got)]),
            ..SubReport::default()
        }
    }

    fn plan(groups: &[(&str, Expect)]) -> Plan {
        Plan {
            groups: groups
                .iter()
                .map(|(name, expects)| Group {
                    name: (*name).to_owned(),
                    expects: *expects,
                })
                .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn qos1_counts_only_acknowledged_messages_as_expected() {
        let reports = vec![WorkerReport {
            // 10 written, 0..8 acknowledged; the subscriber got 0..5 and 7.
            publishers: vec![publisher(0, 10, set(0..8))],
            subscribers: vec![subscriber(0, 0, set([0, 1, 2, 3, 4, 7]))],
            ..WorkerReport::default()
        }];
        let c = check(&plan(&[("s0", Expect::All)]), &reports, 1);
        assert_eq!((c.expected, c.lost), (8, 2));
        assert_eq!(c.subscribers[0].lost, 2);
        let c0 = check(&plan(&[("s0", Expect::All)]), &reports, 0);
        assert_eq!((c0.expected, c0.lost), (10, 4));
    }

    #[test]
    fn a_shared_group_merges_members_and_counts_cross_member_duplicates() {
        let reports = vec![WorkerReport {
            publishers: vec![publisher(0, 6, set(0..6))],
            subscribers: vec![
                subscriber(0, 0, set([0, 2, 4])),
                subscriber(0, 0, set([1, 3, 4, 5])),
            ],
            ..WorkerReport::default()
        }];
        let c = check(&plan(&[("$share/g", Expect::All)]), &reports, 1);
        assert_eq!((c.lost, c.duplicated), (0, 1));
    }

    #[test]
    fn pairs_expect_only_their_own_publisher() {
        let reports = vec![WorkerReport {
            publishers: vec![publisher(0, 3, set(0..3)), publisher(1, 5, set(0..5))],
            subscribers: vec![subscriber(0, 0, set(0..3)), subscriber(1, 1, set(0..4))],
            ..WorkerReport::default()
        }];
        let groups = [("s0", Expect::One(0)), ("s1", Expect::One(1))];
        let c = check(&plan(&groups), &reports, 1);
        assert_eq!((c.expected, c.lost), (8, 1));
        assert_eq!(c.subscribers.len(), 1);
        assert_eq!(c.subscribers[0].client_id, "s1");
    }
}
