//! HTTP/1.1 on hyper: the accept loop, the bounds (connections, request
//! head size, body size, requests at once, time), and the routes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::app::App;
use super::openapi::{self, error::ApiError};
use crate::shard::RunError;

/// An answer.
pub(crate) type Answer = Response<Full<Bytes>>;

/// Binds the admin address (before the thread starts, so that a busy
/// port stops the broker with a clear message).
pub(crate) fn bind(addr: &str) -> Result<std::net::TcpListener, RunError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| RunError::Io {
        what: format!("cannot listen on {addr} (admin.listen)"),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| RunError::Io {
            what: "cannot make the admin socket non-blocking".into(),
            source,
        })?;
    Ok(listener)
}

/// Accepts connections until the runtime stops; at most
/// `connections_max` are served at once, the rest wait in the backlog.
pub(crate) async fn serve(app: Arc<App>, listener: std::net::TcpListener) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin endpoint: cannot register the listener");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(app.config.admin.connections_max));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let a = &app.config.admin;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .max_buf_size(a.header_bytes_max)
                .header_read_timeout(Duration::from_secs(a.idle_timeout_secs));
            let service = hyper::service::service_fn(|req| handle(Arc::clone(&app), req));
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
            drop(permit);
        });
    }
}

/// One request, within `request_timeout_secs`.
async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let limit = Duration::from_secs(app.config.admin.request_timeout_secs);
    let answer = match tokio::time::timeout(limit, route(Arc::clone(&app), req)).await {
        Ok(answer) => answer,
        Err(_) => {
            let why = "The request was not completed in time (it may still complete).";
            openapi::refused(&app, "", &ApiError::new(504, "RequestTimeout", why))
        }
    };
    Ok(answer)
}

/// The routes: `GET /` without `Action` is the status page; a request
/// with `Action` (query) or `x-acs-action` (header) is an OpenAPI call.
/// Every request holds one of `requests_concurrent_max` permits (the
/// metrics and status routes ask every shard too); without one it gets
/// `Throttling` at once.
async fn route(app: Arc<App>, req: Request<Incoming>) -> Answer {
    let Ok(_permit) = Arc::clone(&app).requests_permit() else {
        return openapi::refused(&app, "", &ApiError::throttled());
    };
    let path = req.uri().path().to_owned();
    let is_api = req.headers().contains_key("x-acs-action")
        || req
            .uri()
            .query()
            .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "Action"));
    if is_api || (path == "/" && req.method() == Method::POST) {
        return openapi::serve(app, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path.as_str() {
        "/" | "/index.html" => super::status::page(),
        "/healthz" => super::status::health(app).await,
        "/metrics" => super::metrics::serve(app).await,
        "/api/status" => super::status::json(app).await,
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Reads a body of at most `body_bytes_max` (413 above).
pub(crate) async fn read_body(app: &App, body: Incoming) -> Result<Bytes, ApiError> {
    let max = app.config.admin.body_bytes_max;
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(ApiError::new(
            413,
            "RequestBodyTooLarge",
            format!("The request body is over {max} bytes (admin.body_bytes_max), or was cut."),
        )),
    }
}

/// An answer with `body` of `content_type`.
pub(crate) fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text answer.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Answer {
    answer(status, "text/plain; charset=utf-8", text)
}
