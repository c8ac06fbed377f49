//! A publisher: open loop at a fixed rate (latency from each message's
//! intended send time) or closed loop (as fast as `--inflight` allows).
//!
//! Every PUBLISH is a copy of one template encoded by `ringmq-protocol`,
//! with its packet id and payload stamp patched in: no allocation per
//! message, and many messages per write.

use crate::cli::Scenario;
use crate::connector::connect;
use crate::ctx::{bump, record, Local, Phase, SharedCtx, Window};
use crate::mqtt::{disconnect_packet, Conn, Reader, READ_CHUNK_BYTES};
use crate::pacer::Pacer;
use crate::plan::PubSpec;
use crate::seqset::SeqSet;
use crate::stamp::{Clock, Stamp, STAMP_BYTES};
use anyhow::{anyhow, bail, Result};
use bytes::{BufMut, BytesMut};
use ringmq_protocol::{Packet, PacketId, ProtocolVersion, PubRel, Publish, QoS, TopicName};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// What a publisher reports at the end.
#[derive(Debug, Default)]
pub struct PubReport {
    /// Its index.
    pub index: u32,
    /// Messages written.
    pub sent: u64,
    /// Sequence numbers the broker acknowledged (QoS 1/2).
    pub acked: SeqSet,
}

/// Runs one publisher to the end of the run; `n` picks its source address.
pub async fn run(ctx: SharedCtx, local: Rc<Local>, spec: PubSpec, n: usize) -> PubReport {
    let mut report = PubReport {
        index: spec.index,
        ..PubReport::default()
    };
    let published = publish(&ctx, &local, &spec, n, &mut report).await;
    ctx.publishers_done.fetch_add(1, Relaxed);
    let open = match published {
        Ok(open) => open,
        Err(e) => {
            ctx.error(format!("publisher {}: {e:#}", spec.client.client_id));
            None
        }
    };
    ctx.wait_for(|p| p == Phase::Stop).await;
    if let Some(open) = open {
        open.close().await;
    }
    report
}

/// A publisher's connection after its last message.
struct Open {
    reading: tokio::task::JoinHandle<()>,
    write: crate::transport::WriteHalf,
    version: ProtocolVersion,
}

impl Open {
    async fn close(mut self) {
        self.reading.abort();
        let mut out = BytesMut::new();
        if disconnect_packet(self.version, false)
            .encode(self.version, &mut out)
            .is_ok()
        {
            let _ = self.write.write_all(&out).await;
        }
    }
}

/// Connects, waits for the start, publishes and waits for the last acks.
async fn publish(
    ctx: &SharedCtx,
    local: &Rc<Local>,
    spec: &PubSpec,
    n: usize,
    report: &mut PubReport,
) -> Result<Option<Open>> {
    let conn = connect(ctx, local, &spec.client, n, READ_CHUNK_BYTES, true).await;
    ctx.ready.fetch_add(1, Relaxed);
    let conn = conn?;
    let Some(window) = ctx.started().await else {
        return Ok(None);
    };
    let qos = QoS::from_bits(ctx.args.qos()).map_err(|e| anyhow!("--qos: {e}"))?;
    let template = Template::new(spec, qos, ctx.args.payload_bytes as usize, conn.version)?;
    let acks = Rc::new(RefCell::new(Acks::new(ctx.args.inflight.max(1))));
    let wake = Rc::new(Notify::new());
    let version = conn.version;
    let Conn { reader, write, .. } = conn;
    let ack_task = AckTask {
        acks: acks.clone(),
        wake: wake.clone(),
        local: local.clone(),
        clock: ctx.clock,
        window,
        version,
    };
    let reading = tokio::task::spawn_local(ack_task.run(reader));
    let mut w = Writer {
        ctx: ctx.clone(),
        thread: local.thread,
        index: spec.index,
        qos,
        template,
        out: BytesMut::new(),
        acks: acks.clone(),
        wake,
        seq: 0,
        window,
        write,
    };
    let result = w.drive().await;
    report.sent = w.seq;
    report.acked = acks.borrow().acked.clone();
    result?;
    Ok(Some(Open {
        reading,
        write: w.write,
        version,
    }))
}

/// One PUBLISH, encoded once; each message patches its copy.
#[derive(Debug)]
struct Template {
    bytes: Vec<u8>,
    /// Offset of the packet id, for QoS 1/2.
    packet_id_at: Option<usize>,
    payload_at: usize,
}

impl Template {
    fn new(spec: &PubSpec, qos: QoS, payload_bytes: usize, v: ProtocolVersion) -> Result<Self> {
        let topic =
            TopicName::new(spec.topic.clone()).map_err(|e| anyhow!("topic {}: {e}", spec.topic))?;
        let mut publish = Publish::new(topic, vec![0x5A_u8; payload_bytes]);
        publish.qos = qos;
        publish.packet_id = PacketId::new(1).filter(|_| qos != QoS::AtMostOnce);
        let mut out = BytesMut::new();
        publish.encode(v, &mut out)?;
        let payload_at = out.len() - payload_bytes;
        // v5: an empty property block (one byte) sits between id and payload.
        let props = usize::from(v == ProtocolVersion::V5);
        let packet_id_at = publish.packet_id.map(|_| payload_at - props - 2);
        Ok(Template {
            bytes: out.to_vec(),
            packet_id_at,
            payload_at,
        })
    }

    /// Appends one message.
    fn put(&self, out: &mut BytesMut, packet_id: u16, stamp: Stamp) {
        let at = out.len();
        out.put_slice(&self.bytes);
        if let Some(p) = self.packet_id_at {
            out[at + p..at + p + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        let payload = at + self.payload_at;
        stamp.write(&mut out[payload..payload + STAMP_BYTES]);
    }
}

/// State the writer shares with the task reading acks.
#[derive(Debug, Default)]
struct Acks {
    /// Packet ids free to use.
    free: Vec<u16>,
    /// By packet id: sequence number and send time of the message in flight.
    in_flight: Vec<Option<(u64, u64)>>,
    acked: SeqSet,
    /// PUBRELs to send (QoS 2).
    control: BytesMut,
    error: Option<String>,
}

impl Acks {
    fn new(window: u16) -> Acks {
        Acks {
            free: (1..=window).rev().collect(),
            in_flight: vec![None; usize::from(window) + 1],
            ..Acks::default()
        }
    }

    fn outstanding(&self) -> usize {
        self.in_flight.len() - 1 - self.free.len()
    }
}

/// Reads PUBACK/PUBREC/PUBCOMP, frees packet ids, records ack latency.
struct AckTask {
    acks: Rc<RefCell<Acks>>,
    wake: Rc<Notify>,
    local: Rc<Local>,
    clock: Clock,
    window: Window,
    version: ProtocolVersion,
}

impl AckTask {
    async fn run(self, mut reader: Reader) {
        loop {
            let result = self.read_some(&mut reader).await;
            self.wake.notify_one();
            if let Err(e) = result {
                self.acks.borrow_mut().error = Some(format!("{e:#}"));
                return;
            }
        }
    }

    async fn read_some(&self, reader: &mut Reader) -> Result<()> {
        reader.fill().await?;
        let now = self.clock.nanos();
        let mut acks = self.acks.borrow_mut();
        while let Some(packet) = reader.next_packet()? {
            let id = match packet {
                Packet::PubAck(ack) => ack.packet_id,
                Packet::PubComp(ack) => ack.packet_id,
                Packet::PubRec(rec) => {
                    PubRel::new(rec.packet_id).encode(self.version, &mut acks.control)?;
                    continue;
                }
                Packet::Disconnect(d) => bail!("DISCONNECT from the broker: {:?}", d.reason_code),
                _ => continue,
            };
            let Some((seq, sent)) = acks
                .in_flight
                .get_mut(usize::from(id.get()))
                .and_then(Option::take)
            else {
                continue;
            };
            acks.acked.insert(seq);
            acks.free.push(id.get());
            if self.window.measures(sent) {
                record(&self.local.ack, now.saturating_sub(sent));
            }
        }
        Ok(())
    }
}

/// The writing side of a publisher.
struct Writer {
    ctx: SharedCtx,
    thread: usize,
    index: u32,
    qos: QoS,
    template: Template,
    out: BytesMut,
    acks: Rc<RefCell<Acks>>,
    wake: Rc<Notify>,
    seq: u64,
    window: Window,
    write: crate::transport::WriteHalf,
}

impl Writer {
    /// Publishes until the end of the run, then waits for the last acks.
    async fn drive(&mut self) -> Result<()> {
        let sending = match self.ctx.args.rate {
            Some(rate) => self.open_loop(rate).await,
            None => self.closed_loop().await,
        };
        sending?;
        self.settle().await
    }

    /// `rate` messages per second, all publishers together.
    async fn open_loop(&mut self, rate: f64) -> Result<()> {
        let publishers = f64::from(self.ctx.args.counts().0.max(1));
        let period = 1e9 * publishers / rate.max(f64::MIN_POSITIVE);
        // Publishers start a fraction of a period apart, not all at once.
        let offset = period * f64::from(self.index % 64) / 64.0;
        let start = self.window.start;
        let intended = move |k: u64| start + (offset + k as f64 * period) as u64;
        // Messages due by `t`: those intended at or before it.
        let due_by =
            move |t: u64| ((t.saturating_sub(start) as f64 - offset) / period).max(-1.0) as i64 + 1;
        let total = due_by(self.window.end - 1).max(0) as u64;
        let mut pacer = Pacer::new()?;
        while self.seq < total {
            let next = intended(self.seq);
            let now = self.ctx.clock.nanos();
            if next > now {
                let at = self.ctx.clock.instant(next);
                tokio::select! {
                    slept = pacer.sleep_until(at) => slept?,
                    () = self.wake.notified() => {}
                }
                self.flush_control().await?;
                continue;
            }
            let due = (due_by(now).max(0) as u64).min(total);
            if self.put_batch(due.saturating_sub(self.seq).max(1), intended) == 0 {
                self.wait_for_acks().await?;
            }
            self.flush().await?;
        }
        Ok(())
    }

    /// As fast as the inflight window (QoS 1/2) or the socket (QoS 0) allows.
    async fn closed_loop(&mut self) -> Result<()> {
        let offline = self.ctx.args.scenario == Scenario::Offline;
        let limit = if offline {
            u64::from(self.ctx.args.messages)
        } else {
            u64::MAX
        };
        let batch = u64::from(self.ctx.args.inflight.max(1));
        let clock = self.ctx.clock;
        loop {
            let now = clock.nanos();
            if self.seq >= limit || (!offline && now >= self.window.end) {
                return Ok(());
            }
            let n = batch.min(limit - self.seq);
            if self.put_batch(n, |_| now) == 0 {
                self.wait_for_acks().await?;
            }
            self.flush().await?;
        }
    }

    /// Appends up to `n` messages (fewer if the inflight window is full),
    /// message `seq` stamped with `sent(seq)`; returns how many.
    fn put_batch(&mut self, n: u64, mut sent: impl FnMut(u64) -> u64) -> u64 {
        let mut acks = self.acks.borrow_mut();
        let mut put = 0;
        while put < n {
            let stamp = Stamp {
                publisher: self.index,
                seq: self.seq,
                sent_nanos: sent(self.seq),
            };
            let id = if self.qos == QoS::AtMostOnce {
                0
            } else {
                let Some(id) = acks.free.pop() else { break };
                acks.in_flight[usize::from(id)] = Some((stamp.seq, stamp.sent_nanos));
                id
            };
            self.template.put(&mut self.out, id, stamp);
            self.seq += 1;
            put += 1;
        }
        bump(&self.ctx.counters[self.thread].published, put);
        put
    }

    async fn wait_for_acks(&mut self) -> Result<()> {
        self.wake.notified().await;
        self.check()
    }

    fn check(&self) -> Result<()> {
        match &self.acks.borrow().error {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    }

    async fn flush_control(&mut self) -> Result<()> {
        let control = std::mem::take(&mut self.acks.borrow_mut().control);
        if !control.is_empty() {
            self.write.write_all(&control).await?;
        }
        self.check()
    }

    /// Writes PUBRELs and the batch.
    async fn flush(&mut self) -> Result<()> {
        self.flush_control().await?;
        if !self.out.is_empty() {
            self.write.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Waits (up to `--drain`) for the acks of what was sent.
    async fn settle(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.ctx.args.drain;
        while self.acks.borrow().outstanding() > 0 && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(100)), self.wake.notified())
                    .await;
            self.flush_control().await?;
        }
        Ok(())
    }
}
