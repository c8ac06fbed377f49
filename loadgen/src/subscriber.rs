//! A subscriber: reads PUBLISH in place, records end-to-end latency and
//! checks every message against what its publisher sent (lost, duplicated,
//! out of order), acknowledging QoS 1 and 2 as a client must.

use crate::cli::Scenario;
use crate::connector::connect_to;
use crate::ctx::{bump, record, Local, Phase, SharedCtx, Window};
use crate::mqtt::{Conn, READ_CHUNK_BYTES};
use crate::plan::SubSpec;
use crate::seqset::{Arrival, SeqSet};
use crate::stamp::Stamp;
use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BytesMut};
use ringmq_protocol::{Packet, ProtocolVersion, PubAck, PubComp, PubRec, PublishRef, QoS};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// What a subscriber reports at the end.
#[derive(Debug, Default)]
pub struct SubReport {
    /// Its client id.
    pub client_id: String,
    /// Its expectation group.
    pub group: u32,
    /// By publisher: the sequence numbers received.
    pub received: HashMap<u32, SeqSet>,
    /// Messages received again.
    pub duplicated: u64,
    /// Messages received after a later one of the same publisher.
    pub out_of_order: u64,
    /// Payloads without a loadgen stamp (another publisher on the topic).
    pub foreign: u64,
}

/// Runs one subscriber to the end of the run; `n` picks its source address.
pub async fn run(ctx: SharedCtx, local: Rc<Local>, spec: SubSpec, n: usize) -> SubReport {
    let mut s = Sub {
        report: SubReport {
            client_id: spec.client.client_id.clone(),
            group: spec.group,
            ..SubReport::default()
        },
        ctx,
        local,
        window: None,
        acks: BytesMut::new(),
    };
    if let Err(e) = s.subscribe_and_receive(&spec, n).await {
        s.ctx
            .error(format!("subscriber {}: {e:#}", spec.client.client_id));
    }
    s.report
}

struct Sub {
    report: SubReport,
    ctx: SharedCtx,
    local: Rc<Local>,
    window: Option<Window>,
    /// PUBACK/PUBREC/PUBCOMP to write after the current read.
    acks: BytesMut,
}

impl Sub {
    async fn subscribe_and_receive(&mut self, spec: &SubSpec, n: usize) -> Result<()> {
        let set_up = self.set_up(spec, n).await;
        self.ctx.ready.fetch_add(1, Relaxed);
        let conn = set_up?;
        self.window = self.ctx.started().await;
        let mut conn = match conn {
            Some(conn) => conn,
            None => match self.come_back(spec, n).await? {
                Some(conn) => conn,
                None => return Ok(()),
            },
        };
        self.receive(&mut conn).await?;
        self.leave(conn, spec, n).await
    }

    /// Connects and subscribes; `offline` then goes away (`None`).
    async fn set_up(&mut self, spec: &SubSpec, n: usize) -> Result<Option<Conn>> {
        let ctx = self.ctx.clone();
        let qos = QoS::from_bits(ctx.args.sub_qos()).map_err(|e| anyhow!("--sub-qos: {e}"))?;
        let mut conn = connect_to(
            &ctx,
            &self.local,
            &spec.client,
            (n, ctx.subscriber_port(n)),
            READ_CHUNK_BYTES,
            true,
        )
        .await?;
        if let Err(e) = conn.subscribe(&spec.filter, qos).await {
            // Counted as a failed client: the run cannot check what it never got.
            bump(&ctx.counters[self.local.thread].connect_failures, 1);
            return Err(e);
        }
        if ctx.args.scenario != Scenario::Offline {
            return Ok(Some(conn));
        }
        conn.disconnect(false).await?;
        Ok(None)
    }

    /// `offline`: reconnects to the session when told to.
    async fn come_back(&mut self, spec: &SubSpec, n: usize) -> Result<Option<Conn>> {
        let ctx = self.ctx.clone();
        let back = ctx
            .wait_for(|p| matches!(p, Phase::Reconnect | Phase::Stop))
            .await;
        if back != Some(Phase::Reconnect) {
            return Ok(None);
        }
        let conn = connect_to(
            &ctx,
            &self.local,
            &spec.client,
            (n, ctx.subscriber_port(n)),
            READ_CHUNK_BYTES,
            false,
        )
        .await?;
        if !conn.session_present {
            bail!("the broker did not keep the session (CONNACK session present 0)");
        }
        Ok(Some(conn))
    }

    /// Reads until the run stops.
    async fn receive(&mut self, conn: &mut Conn) -> Result<()> {
        let ctx = self.ctx.clone();
        let stop = ctx.wait_for(|p| p == Phase::Stop);
        tokio::pin!(stop);
        let ping_every = Duration::from_secs(u64::from(self.ctx.args.keep_alive_secs.max(1)));
        let ping = tokio::time::sleep(ping_every);
        tokio::pin!(ping);
        loop {
            // A resumed session's messages may have come in with the CONNACK.
            self.take_packets(conn)?;
            if !self.acks.is_empty() {
                conn.write.write_all(&self.acks).await?;
                self.acks.clear();
            }
            tokio::select! {
                _ = &mut stop => return Ok(()),
                read = conn.reader.fill() => read?,
                () = &mut ping => {
                    conn.send(&Packet::PingReq).await?;
                    ping.as_mut().reset(tokio::time::Instant::now() + ping_every);
                    continue;
                }
            }
        }
    }

    /// Handles every whole packet in the read buffer.
    fn take_packets(&mut self, conn: &mut Conn) -> Result<()> {
        let version = conn.version;
        let now = self.ctx.clock.nanos();
        let mut delivered = 0;
        loop {
            let peeked = conn
                .reader
                .decoder
                .peek(&conn.reader.buf)
                .map_err(|e| anyhow!("undecodable packet from the broker: {e}"))?;
            let Some(peeked) = peeked else { break };
            if let Some(publish) = peeked.publish {
                self.on_publish(&publish, version, now)?;
                delivered += 1;
                conn.reader.buf.advance(peeked.len);
                continue;
            }
            match conn.reader.next_packet()? {
                Some(Packet::PubRel(rel)) => {
                    PubComp::new(rel.packet_id).encode(version, &mut self.acks)?
                }
                Some(Packet::Disconnect(d)) => {
                    bail!("DISCONNECT from the broker: {:?}", d.reason_code)
                }
                _ => {}
            }
        }
        if delivered > 0 {
            let counters = &self.ctx.counters[self.local.thread];
            bump(&counters.delivered, delivered);
            counters
                .last_delivery
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn on_publish(&mut self, p: &PublishRef<'_>, v: ProtocolVersion, now: u64) -> Result<()> {
        match (p.qos(), p.packet_id()) {
            (QoS::AtLeastOnce, Some(id)) => PubAck::new(id).encode(v, &mut self.acks)?,
            (QoS::ExactlyOnce, Some(id)) => PubRec::new(id).encode(v, &mut self.acks)?,
            _ => {}
        }
        let Some(stamp) = Stamp::read(p.payload()) else {
            self.report.foreign += 1;
            return Ok(());
        };
        let seen = self.report.received.entry(stamp.publisher).or_default();
        match seen.insert(stamp.seq) {
            Arrival::InOrder => {}
            Arrival::Late => self.report.out_of_order += 1,
            Arrival::Duplicate => self.report.duplicated += 1,
        }
        if self.window.is_some_and(|w| w.measures(stamp.sent_nanos)) {
            record(&self.local.e2e, now.saturating_sub(stamp.sent_nanos));
        }
        Ok(())
    }

    /// Disconnects; a persistent session is ended so that runs leave nothing behind.
    async fn leave(&mut self, conn: Conn, spec: &SubSpec, n: usize) -> Result<()> {
        let persistent = !spec.client.clean;
        let v5 = conn.version == ProtocolVersion::V5;
        conn.disconnect(persistent).await?;
        if persistent && !v5 {
            // 3.1.1 ends a session only by connecting with clean session 1.
            let mut clean = spec.client.clone();
            clean.clean = true;
            let mut target = crate::mqtt::Target {
                source: self.ctx.source(n),
                ..self.ctx.target
            };
            if let Some(port) = self.ctx.subscriber_port(n) {
                target.addr.set_port(port);
            }
            Conn::open(&target, &clean, crate::mqtt::IDLE_READ_CHUNK_BYTES)
                .await?
                .disconnect(false)
                .await?;
        }
        Ok(())
    }
}
