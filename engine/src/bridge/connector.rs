//! The bridge thread: a single-threaded tokio runtime, one async-nats
//! client, and a loop that publishes what the shards hand over, in order.

use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::sync::oneshot;

use super::{NatsConfig, Outflow};

/// How long a stopping bridge waits for NATS to take what it holds.
pub(super) const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Runs until `stopped` fires (the shards have stopped), then sends what
/// is left and flushes.
pub(super) fn run(config: NatsConfig, rx: Receiver<Outflow>, stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(publish_all(config, rx, stopped)),
        Err(e) => tracing::error!("the NATS bridge cannot start its runtime: {e}"),
    }
}

fn options(config: &NatsConfig) -> async_nats::ConnectOptions {
    let mut options = async_nats::ConnectOptions::new()
        .name("ringmq")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .client_capacity(config.client_messages_max)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS bridge connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS bridge disconnected; holding messages until it is back")
                }
                other => tracing::info!("NATS bridge: {other}"),
            }
        });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    options
}

async fn publish_all(
    config: NatsConfig,
    mut rx: Receiver<Outflow>,
    mut stopped: oneshot::Receiver<()>,
) {
    let client = match options(&config).connect(config.servers.as_slice()).await {
        Ok(client) => client,
        Err(e) => return tracing::error!("the NATS bridge cannot start: {e}"),
    };
    tracing::info!(servers = ?config.servers, "NATS bridge started");
    let mut held = None;
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            _ = &mut stopped => break,
        };
        let Some(msg) = msg else { break };
        // A publish waits while the client's own buffer is full (NATS down
        // for long): the shards' queue then fills, and they drop and count.
        let subject = msg.subject.clone();
        tokio::select! {
            () = publish(&client, msg) => {}
            _ = &mut stopped => {
                held = Some(subject);
                break;
            }
        }
    }
    // What the shards handed over before they stopped, within FLUSH_WAIT.
    let rest = async {
        while let Ok(msg) = rx.try_recv() {
            publish(&client, msg).await;
        }
        client.flush().await
    };
    match tokio::time::timeout(FLUSH_WAIT, rest).await {
        Ok(Ok(())) if held.is_none() => {}
        Ok(Ok(())) => tracing::warn!(?held, "NATS bridge: one message was not published"),
        Ok(Err(e)) => tracing::warn!("NATS bridge: could not flush before stopping: {e}"),
        Err(_) => tracing::warn!(
            left = rx.len(),
            "NATS bridge: NATS did not take what was held within {FLUSH_WAIT:?}"
        ),
    }
}

/// Publishes one message.
async fn publish(client: &async_nats::Client, msg: Outflow) {
    if let Err(e) = client.publish(msg.subject, msg.payload).await {
        tracing::warn!("NATS bridge: a message was not published: {e}");
    }
}
