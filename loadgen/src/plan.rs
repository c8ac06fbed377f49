//! A scenario turned into clients: who publishes where, who subscribes to
//! what, and which messages each subscriber (or shared group) must get.

use crate::cli::{RunArgs, Scenario};
use crate::identity::Identity;
use crate::mqtt::ClientSpec;
use anyhow::{bail, Result};

/// A publisher.
#[derive(Debug, Clone)]
pub struct PubSpec {
    /// Its index; carried in every payload it sends.
    pub index: u32,
    /// How it connects.
    pub client: ClientSpec,
    /// Where it publishes.
    pub topic: String,
}

/// A subscriber.
#[derive(Debug, Clone)]
pub struct SubSpec {
    /// Its index among subscribers.
    pub index: u32,
    /// How it connects.
    pub client: ClientSpec,
    /// What it subscribes to.
    pub filter: String,
    /// The expectation group it belongs to.
    pub group: u32,
}

/// Which publishers' messages a group of subscribers must receive, each
/// exactly once across the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every publisher's.
    All,
    /// Publisher `n`'s only.
    One(u32),
}

/// Subscribers checked together: one subscriber, or a shared group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Name in reports: the client id, or the shared group.
    pub name: String,
    /// What it must receive.
    pub expects: Expect,
}

/// Every client of a run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Publishers.
    pub publishers: Vec<PubSpec>,
    /// Subscribers.
    pub subscribers: Vec<SubSpec>,
    /// Expectation groups, indexed by `SubSpec::group`.
    pub groups: Vec<Group>,
    /// `connections` / `churn`: the clients that connect and hold or loop.
    pub connectors: Vec<ClientSpec>,
}

/// Builds the plan; `prefix` keeps this run's topics apart from others'.
pub fn build(args: &RunArgs, identity: &Identity, prefix: &str) -> Result<Plan> {
    check(args)?;
    let mut plan = Plan::default();
    if matches!(args.scenario, Scenario::Connections | Scenario::Churn) {
        plan.connectors = (0..args.connections)
            .map(|i| client(args, identity, 'c', i, true))
            .collect();
        return Ok(plan);
    }
    let (p, s) = args.counts();
    let persistent = args.persistent || args.scenario == Scenario::Offline;
    for i in 0..s {
        let client = client(args, identity, 's', i, !persistent);
        let (group, expects) = match args.scenario {
            Scenario::Shared => (0, Expect::All),
            Scenario::Pairs | Scenario::P2p => (i, Expect::One(i)),
            _ => (i, Expect::All),
        };
        if plan.groups.len() <= group as usize {
            let name = match args.scenario {
                Scenario::Shared => format!("$share/{}", args.share_group),
                _ => client.client_id.clone(),
            };
            plan.groups.push(Group { name, expects });
        }
        let filter = filter(args, prefix, i, &client.client_id);
        plan.subscribers.push(SubSpec {
            index: i,
            client,
            filter,
            group,
        });
    }
    for i in 0..p {
        let target = plan
            .subscribers
            .get(i as usize)
            .map(|s| s.client.client_id.as_str());
        let topic = topic(args, prefix, i, target.unwrap_or_default());
        plan.publishers.push(PubSpec {
            index: i,
            client: client(args, identity, 'p', i, true),
            topic,
        });
    }
    Ok(plan)
}

fn check(args: &RunArgs) -> Result<()> {
    let (p, s) = args.counts();
    let paired = matches!(args.scenario, Scenario::Pairs | Scenario::P2p);
    if paired && p != s {
        bail!(
            "{:?} pairs publishers with subscribers: -P and -S must be equal",
            args.scenario
        );
    }
    let connecting = matches!(args.scenario, Scenario::Connections | Scenario::Churn);
    if !connecting && (p == 0 || s == 0) {
        bail!(
            "{:?} needs at least one publisher and one subscriber",
            args.scenario
        );
    }
    if args.scenario == Scenario::Offline && args.qos().min(args.sub_qos()) == 0 {
        bail!("offline needs QoS 1 or 2 (persistent sessions keep only those)");
    }
    if args.scenario == Scenario::Offline && args.rate.is_some() {
        bail!(
            "offline publishes --messages per publisher as fast as it can; --rate does not apply"
        );
    }
    Ok(())
}

fn client(args: &RunArgs, identity: &Identity, role: char, i: u32, clean: bool) -> ClientSpec {
    let client_id = identity.client_id(role, i);
    let (username, password) = identity.credentials(&client_id);
    ClientSpec {
        client_id,
        clean,
        keep_alive_secs: args.keep_alive_secs,
        session_expiry_secs: (!clean).then_some(args.session_expiry_secs),
        username,
        password,
    }
}

fn fill(template: &str, prefix: &str, i: u32, client_id: &str) -> String {
    template
        .replace("{prefix}", prefix)
        .replace("{i}", &i.to_string())
        .replace("{client}", client_id)
}

/// Topic of publisher `i`; `target` is the client id of subscriber `i`.
fn topic(args: &RunArgs, prefix: &str, i: u32, target: &str) -> String {
    let default = match args.scenario {
        Scenario::P2p => format!("{}/p2p/{{client}}", args.parent_topic),
        _ => "{prefix}/{i}".to_owned(),
    };
    fill(args.topic.as_deref().unwrap_or(&default), prefix, i, target)
}

/// Filter of subscriber `i`, whose client id is `client_id`.
fn filter(args: &RunArgs, prefix: &str, i: u32, client_id: &str) -> String {
    let default = match args.scenario {
        Scenario::Pairs => "{prefix}/{i}".to_owned(),
        // Alibaba delivers P2P messages unsubscribed; other brokers need it.
        Scenario::P2p => format!("{}/p2p/{{client}}", args.parent_topic),
        Scenario::Shared => format!("$share/{}/{{prefix}}/+", args.share_group),
        _ => "{prefix}/+".to_owned(),
    };
    fill(
        args.filter.as_deref().unwrap_or(&default),
        prefix,
        i,
        client_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn plan(argv: &[&str]) -> Result<Plan> {
        let args = Cli::try_parse_from(std::iter::once("loadgen").chain(argv.iter().copied()))?.run;
        build(&args, &Identity::new(&args, "r1"), "lg/r1")
    }

    #[test]
    fn fanout_subscribers_each_expect_every_publisher() -> Result<()> {
        let p = plan(&["-s", "fanout", "-P", "3", "-S", "2"])?;
        assert_eq!(p.publishers.len(), 3);
        assert_eq!(p.publishers[2].topic, "lg/r1/2");
        assert!(p.subscribers.iter().all(|s| s.filter == "lg/r1/+"));
        assert_eq!(p.groups.len(), 2);
        assert!(p.groups.iter().all(|g| g.expects == Expect::All));
        Ok(())
    }

    #[test]
    fn pairs_match_publisher_i_with_subscriber_i() -> Result<()> {
        let p = plan(&["-s", "pairs", "-P", "4"])?;
        assert_eq!(p.subscribers.len(), 4);
        assert_eq!(p.subscribers[3].filter, p.publishers[3].topic);
        assert_eq!(p.groups[3].expects, Expect::One(3));
        assert!(plan(&["-s", "pairs", "-P", "4", "-S", "3"]).is_err());
        Ok(())
    }

    #[test]
    fn shared_subscribers_form_one_group() -> Result<()> {
        let p = plan(&["-s", "shared", "--mqtt-version", "5"])?;
        assert_eq!(p.groups.len(), 1);
        assert!(p.subscribers.iter().all(|s| s.group == 0));
        assert_eq!(p.subscribers[0].filter, "$share/loadgen/lg/r1/+");
        Ok(())
    }

    #[test]
    fn p2p_publishers_address_their_subscriber_by_client_id() -> Result<()> {
        let p = plan(&["-s", "p2p", "-P", "2", "--group-id", "GID_bench"])?;
        let target = &p.subscribers[1].client.client_id;
        assert!(target.starts_with("GID_bench@@@"));
        assert_eq!(p.publishers[1].topic, format!("loadgen/p2p/{target}"));
        assert_eq!(p.subscribers[1].filter, p.publishers[1].topic);
        Ok(())
    }

    #[test]
    fn offline_subscribers_are_persistent_and_need_qos_1() -> Result<()> {
        let p = plan(&["-s", "offline"])?;
        assert!(p.subscribers.iter().all(|s| !s.client.clean));
        assert!(plan(&["-s", "offline", "--qos", "0"]).is_err());
        Ok(())
    }

    #[test]
    fn signature_mode_signs_each_client_id() -> Result<()> {
        let p = plan(&[
            "-s",
            "pairs",
            "-P",
            "1",
            "--access-key",
            "AK",
            "--secret-key",
            "SK",
            "--instance-id",
            "mqtt-1",
            "--group-id",
            "GID_x",
        ])?;
        let c = &p.publishers[0].client;
        assert_eq!(c.username.as_deref(), Some("Signature|AK|mqtt-1"));
        let expected = crate::identity::signature("SK", &c.client_id);
        assert_eq!(c.password.as_deref(), Some(expected.as_bytes()));
        Ok(())
    }
}
