//! The one-click unsubscribe endpoint (RFC 8058) that `campaign unsubscribe-server` runs.
//!
//! Owns answering the links the campaigns' `[message] unsubscribe_url` templates make, over
//! plain HTTP/1.1 on one socket: finding the campaign, address and token in the query
//! ([`route`]), checking the token ([`crate::unsubscribe::UnsubscribeSecret::verify`], in
//! constant time), and appending the address to the suppression list ([`list`]). It never
//! sends mail, never reads donor files or run directories, never terminates TLS (a proxy in
//! front does), never redirects, sets no cookie, and never logs the secret, a token, a query
//! string or more of an address than its domain.
//!
//! # What it answers
//!
//! | request | answer |
//! |---------|--------|
//! | `POST` to a served path, valid link, body `List-Unsubscribe=One-Click` | the address appended and synced, then `200` |
//! | `GET` of a valid link | `200`, a page whose button POSTs that body to the same URL; nothing written, so link scanners unsubscribe nobody |
//! | a link whose token is not the donor's | `403` |
//! | a campaign id not served at that path, or a path not served | `404` |
//! | a missing or repeated parameter, an address that is not one, another body | `400` |
//! | another method | `405` |
//! | a body over [`Limits::max_body_bytes`] / headers over [`Limits::max_header_bytes`] | `413` / `431` |
//! | a body slower than [`Limits::body_timeout`] | `408`; headers slower than [`Limits::header_timeout`]: the connection is closed |
//! | the list cannot be written | `500`, and the reason in the log line |
//!
//! One line is logged per request (method, path, status; for a `200`, the campaign id and
//! the address's domain), and one per connection that fails (a timeout, headers too large).

mod http;
pub mod list;
pub mod route;
#[cfg(test)]
mod tests;

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{Semaphore, watch};

use crate::unsubscribe::UnsubscribeSecret;

pub use list::{ListError, SuppressionList};
pub use route::{Route, RouteError, Routes, RoutesError};

/// How long a stopping server waits for the requests in flight.
const GRACE: Duration = Duration::from_secs(10);

/// Size and time limits on clients, so that slow or huge requests cannot hold the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's headers, from connecting or from the previous
    /// response; then the connection is closed.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body, once its headers arrived (`408`).
    pub body_timeout: Duration,
    /// The request line and headers, in bytes (`431` beyond).
    pub max_header_bytes: usize,
    /// The body, in bytes (`413` beyond): a one-click body is 26.
    pub max_body_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            max_body_bytes: 4 * 1024,
            max_connections: 256,
        }
    }
}

/// What the endpoint serves and where it writes.
#[derive(Debug)]
pub struct Endpoint {
    /// The campaigns, by path.
    pub routes: Routes,
    /// The list unsubscribed addresses are appended to.
    pub list: SuppressionList,
    /// The secret the campaigns' tokens were made with.
    pub secret: UnsubscribeSecret,
}

/// Asks a running [`serve`] to stop: from a signal handler, another thread or a test.
///
/// Stopping closes the listening socket, lets the requests in flight finish (for at most 10
/// seconds) and makes [`serve`] return.
#[derive(Debug, Clone)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Stop {
        Stop(Arc::new(watch::Sender::new(false)))
    }
}

impl Stop {
    /// A handle not yet stopped.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stops the server; calling it again does nothing more.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// What every connection's requests share.
struct Shared {
    routes: Routes,
    list: SuppressionList,
    secret: UnsubscribeSecret,
    limits: Limits,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

/// Serves the endpoint on an already bound listener until `stop` is stopped, calling `log`
/// with one line per request (never holding a token, a query or an address's local part).
///
/// Runs a single-threaded runtime on the calling thread (requests are small and few; the
/// list's `fsync` runs on tokio's blocking pool).
///
/// # Errors
/// When the runtime cannot start or the listener cannot be used; errors of one connection
/// are logged and serving goes on.
pub fn serve(
    listener: std::net::TcpListener,
    endpoint: Endpoint,
    limits: Limits,
    stop: &Stop,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let shared = Arc::new(Shared {
        routes: endpoint.routes,
        list: endpoint.list,
        secret: endpoint.secret,
        limits,
        log: Box::new(log),
    });
    let mut stopped = stop.0.subscribe();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let mut stopping = pin!(stopped.wait_for(|s| *s));
        loop {
            let acquired = until(&mut stopping, Arc::clone(&slots).acquire_owned());
            let Some(Ok(slot)) = acquired.await else {
                break;
            };
            let Some(accepted) = until(&mut stopping, listener.accept()).await else {
                break;
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    (shared.log)(&format!(
                        "cannot accept a connection: {e}; if this repeats, raise the open-files limit (LimitNOFILE=)"
                    ));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Responses are one small write; do not let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let service = {
                let shared = Arc::clone(&shared);
                service_fn(move |req| http::handle(Arc::clone(&shared), req))
            };
            let conn = connection_builder(&limits).serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    (shared.log)(&format!("connection closed: {e}"));
                }
                drop(slot);
            });
        }
        drop(listener);
        if graceful.count() > 0 {
            (shared.log)("stopping: finishing the requests in flight");
        }
        if tokio::time::timeout(GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            (shared.log)(&format!(
                "stopped with requests still in flight after {} s; their clients get no answer and will retry",
                GRACE.as_secs()
            ));
        }
        Ok(())
    })
}

/// hyper's HTTP/1 settings: the header limit and the header read timeout.
fn connection_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        // The read buffer bounds the memory one connection can take; hyper needs 8 KiB.
        .max_buf_size((limits.max_header_bytes + limits.max_body_bytes).max(16 * 1024));
    b
}

/// `work`, unless `stopping` completes first (then `None`).
async fn until<S: Future, T>(
    stopping: &mut Pin<&mut S>,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = pin!(work);
    poll_fn(|cx| {
        if stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await
}
