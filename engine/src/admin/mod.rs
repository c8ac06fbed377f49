//! The admin endpoint: the product's OpenAPI, Prometheus metrics, a health
//! check and a live status page over HTTP, and the `$SYS` topics. It runs
//! on its own thread with a small tokio runtime (hyper for HTTP), never on
//! a shard; it reaches the shards only through [`Handle`] (control-plane
//! jobs, answered between two batches of a shard's input), and every
//! blocking call runs on the runtime's bounded blocking pool, so a slow or
//! hostile HTTP client holds up nothing but itself.

mod app;
pub mod client;
mod metrics;
pub mod openapi;
mod server;
mod status;
mod sys;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::Config;
use crate::instance::Handle;
use crate::shard::RunError;

pub use app::App;

/// The running endpoint; stopped when dropped or by [`Admin::stop`].
#[derive(Debug)]
pub struct Admin {
    addr: Option<SocketAddr>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `[admin] listen` (unless empty) and starts the thread that
    /// serves it and publishes the `$SYS` topics.
    pub fn start(handle: Handle, config: Arc<Config>) -> Result<Admin, RunError> {
        let listener = match config.admin.listen.as_str() {
            "" => None,
            addr => Some(server::bind(addr)?),
        };
        let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(config.admin.requests_concurrent_max.clamp(2, 64) + 2)
            .thread_name("admin-blocking")
            .build()
            .map_err(|source| RunError::Io {
                what: "cannot start the admin runtime".into(),
                source,
            })?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let app = Arc::new(App::new(handle, config));
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let sys = tokio::spawn(sys::publish(Arc::clone(&app)));
                    if let Some(listener) = listener {
                        tokio::spawn(server::serve(app, listener));
                    }
                    let _ = stopped.wait_for(|s| *s).await;
                    sys.abort();
                });
                runtime.shutdown_background();
            })
            .map_err(|source| RunError::Io {
                what: "cannot start the admin thread".into(),
                source,
            })?;
        if let Some(addr) = addr {
            tracing::info!(%addr, "admin endpoint listening");
        }
        Ok(Admin {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address served, if any (a port 0 in the config is resolved).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops serving and waits for the thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop();
    }
}
