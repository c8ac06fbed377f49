//! A running broker as seen from outside its shards: start it, reach it
//! through the control plane, stop it. The registry's owner
//! ([`Registrar`]) and the trace queries live here; both reach the shards
//! only with jobs over [`Controls`]. This is what the binary runs and what
//! the admin API (and embedding programs, and tests) hold.

pub mod registrar;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Profile};
use crate::core::message::parse_msg_id;
use crate::core::trace::answer::{
    merge, DeviceTrace, MessageOfClientTrace, Paging, PublishTrace, SubscribeTrace,
};
use crate::core::trace::{TraceItem, TraceQuery};
use crate::shard::{self, Controls, NoAnswer, RunError};

pub use registrar::Registrar;

/// How long a query waits for the shards.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker started by [`Instance::start`].
#[derive(Debug)]
pub struct Instance {
    running: shard::Running,
    registrar: Option<Arc<Registrar>>,
    config: Arc<Config>,
    admin: Option<crate::admin::Admin>,
    /// The NATS bridge's thread, if it runs.
    bridge: Option<crate::bridge::Running>,
}

impl Instance {
    /// Starts the broker `config` describes; returns once its shards are
    /// spawned (they restore their state, then accept clients).
    pub fn start(config: Config) -> Result<Instance, RunError> {
        let tls = shard::check_files(&config)?;
        let lock = shard::lock_data(&config)?;
        let prepared = match config.profile {
            Profile::Aliyun => Some(registrar::Prepared::open(&config).map_err(RunError::Data)?),
            Profile::Standard => None,
        };
        let config = Arc::new(config);
        let snapshot = prepared.as_ref().map(|p| Arc::new(p.registry().clone()));
        // The config file's rules, then those created through the OpenAPI.
        let mut rules = config.rules.clone();
        if let Some(r) = &snapshot {
            rules.extend(r.rules.values().map(|s| s.rule.clone()));
        }
        // With storage off nothing goes to disk: no spool either.
        let spool_dir = config.storage.enabled.then_some(config.data_dir.as_path());
        let (bridge, bridge_thread) =
            crate::bridge::start(&config.nats, &rules, &config.cluster, spool_dir)
                .map_err(|source| RunError::Io {
                    what: "cannot start the NATS bridge".into(),
                    source,
                })?
                .unzip();
        let running = shard::start(Arc::clone(&config), lock, snapshot, tls, bridge)?;
        let mut bridge_thread = bridge_thread;
        if let Some(bridge) = bridge_thread.as_mut() {
            bridge.attach(running.controls().clone());
        }
        let registrar = prepared.map(|p| {
            let controls = running.controls().clone();
            Arc::new(Registrar::new(p, controls, &config))
        });
        if let (Some(bridge), Some(registrar)) = (bridge_thread.as_mut(), &registrar) {
            registrar.drive_inflow(bridge.rule_changes());
            let owner: Arc<dyn crate::bridge::ApplyChange> = Arc::clone(registrar) as _;
            if let Some(proposals) = bridge.replicate(owner) {
                registrar.replicate_through(proposals);
            }
        }
        let mut instance = Instance {
            running,
            registrar,
            config,
            admin: None,
            bridge: bridge_thread,
        };
        match crate::admin::Admin::start(instance.handle(), Arc::clone(&instance.config)) {
            Ok(admin) => instance.admin = Some(admin),
            Err(e) => {
                instance.shutdown();
                let _ = instance.running.wait();
                return Err(e);
            }
        }
        Ok(instance)
    }

    /// The admin endpoint's address, if it serves one.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(crate::admin::Admin::addr)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The control plane.
    pub fn controls(&self) -> &Controls {
        self.running.controls()
    }

    /// The registry's owner (aliyun profile).
    pub fn registrar(&self) -> Option<&Arc<Registrar>> {
        self.registrar.as_ref()
    }

    /// Asks every shard to stop (clients get v5 DISCONNECT 0x8B).
    pub fn shutdown(&self) {
        self.controls().shutdown();
    }

    /// Waits until the broker has stopped (the admin endpoint stops
    /// with it).
    pub fn wait(mut self) -> Result<(), RunError> {
        let result = self.running.wait();
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        // The shards are gone: what they handed the bridge goes out.
        if let Some(bridge) = self.bridge.take() {
            bridge.stop();
        }
        result
    }

    /// What other threads hold to reach the broker: the control plane,
    /// the registry's owner, the queries.
    pub fn handle(&self) -> Handle {
        Handle {
            controls: self.controls().clone(),
            registrar: self.registrar.clone(),
            spool: self.bridge.as_ref().map(crate::bridge::Running::figures),
        }
    }
}

/// A running broker as other threads reach it (the admin endpoint): cheap
/// to clone, `Send` and `Sync`; everything goes through the control plane.
#[derive(Debug, Clone)]
pub struct Handle {
    controls: Controls,
    registrar: Option<Arc<Registrar>>,
    spool: Option<Arc<crate::bridge::Figures>>,
}

impl Handle {
    /// The control plane.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// The registry's owner (aliyun profile).
    pub fn registrar(&self) -> Option<&Arc<Registrar>> {
        self.registrar.as_ref()
    }

    /// The NATS bridge's spool figures, if the bridge runs.
    pub fn spool(&self) -> Option<&crate::bridge::Figures> {
        self.spool.as_deref()
    }

    /// Every shard's events for `q`, in time order.
    pub fn trace(&self, q: TraceQuery) -> Result<Vec<TraceItem>, NoAnswer> {
        let job = move |b: &mut crate::core::Broker, now| b.traces.query(&q, &b.naming(now));
        self.controls.call_all(job, QUERY_TIMEOUT).map(merge)
    }

    /// QueryMqttTraceDevice.
    pub fn trace_device(
        &self,
        client_id: &str,
        begin_ms: u64,
        end_ms: u64,
        paging: Paging,
    ) -> Result<DeviceTrace, NoAnswer> {
        let client_id = client_id.to_owned();
        let q = TraceQuery::Device {
            client_id,
            begin_ms,
            end_ms,
        };
        Ok(DeviceTrace::new(self.trace(q)?, paging))
    }

    /// QueryMqttTraceMessageOfClient.
    pub fn trace_message_of_client(
        &self,
        client_id: &str,
        begin_ms: u64,
        end_ms: u64,
        paging: Paging,
    ) -> Result<MessageOfClientTrace, NoAnswer> {
        let client_id = client_id.to_owned();
        let q = TraceQuery::MessageOfClient {
            client_id,
            begin_ms,
            end_ms,
        };
        Ok(MessageOfClientTrace::new(self.trace(q)?, paging))
    }

    /// QueryMqttTraceMessagePublish; an unknown MsgId has no events.
    pub fn trace_message_publish(
        &self,
        msg_id: &str,
        begin_ms: u64,
        end_ms: u64,
    ) -> Result<PublishTrace, NoAnswer> {
        let Some(msg_id) = parse_msg_id(msg_id) else {
            return Ok(PublishTrace::new(Vec::new()));
        };
        let q = TraceQuery::Publish {
            msg_id,
            begin_ms,
            end_ms,
        };
        Ok(PublishTrace::new(self.trace(q)?))
    }

    /// QueryMqttTraceMessageSubscribe (all receivers, or `client_id`).
    pub fn trace_message_subscribe(
        &self,
        msg_id: &str,
        client_id: Option<&str>,
        begin_ms: u64,
        end_ms: u64,
        paging: Paging,
    ) -> Result<SubscribeTrace, NoAnswer> {
        let Some(msg_id) = parse_msg_id(msg_id) else {
            return Ok(SubscribeTrace::new(Vec::new(), paging));
        };
        let q = TraceQuery::Subscribe {
            msg_id,
            client_id: client_id.map(str::to_owned),
            begin_ms,
            end_ms,
        };
        Ok(SubscribeTrace::new(self.trace(q)?, paging))
    }
}

/// Runs the broker until SIGINT or SIGTERM: the binary's main loop.
pub fn run(config: Config) -> Result<(), RunError> {
    let instance = Instance::start(config)?;
    let tls = instance.running.certificates().cloned();
    shard::watch_signals(instance.controls().clone(), tls)?;
    instance.wait()
}
