//! The HTTP/1 accept loop: a cap on open connections, a header-read timeout, an idle
//! timeout, graceful shutdown.
//!
//! `axum::serve` keeps every connection for as long as the peer likes, so a few
//! thousand silent sockets exhaust the file limit and the server stops answering.
//! Here each connection is in one of three phases, and a per-connection watchdog
//! closes it when the phase lasts too long:
//!
//! - *head*: from accept (or from the first byte of a later request on a kept-alive
//!   connection) until the request headers are complete: at most `header_read_timeout`;
//! - *idle*: no request in flight and no byte of a next one: at most `idle_timeout`;
//! - *in flight*: a request is being answered, however long the answer takes (an agent's
//!   long-poll, a followed log): never cut here, those end on their own.
//!
//! hyper's own `header_read_timeout` is not used: it also runs while a kept-alive
//! connection waits for its next request, so the idle timeout could not be longer.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Default cap on open connections (lowered to what the file limit allows).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default seconds a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// Default seconds a kept-alive connection may wait for its next request; above the
/// CLI's and agent's own pool idle times would only keep dead sockets longer.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;

/// File descriptors kept for everything but connections: the SQLite files of each
/// pooled connection, the listener, the log, the identity provider's HTTP client.
pub const RESERVED_FDS: u64 = 128;

/// "connection limit reached" is logged at most this often while the cap is hit, so
/// a flood yields one line per burst, not one per connection.
const CAP_LOG_EVERY: Duration = Duration::from_secs(60);

/// After a failed `accept` (e.g. the file limit), wait this long before the next one
/// instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connection limits, validated.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Raises the soft open-files limit to the hard one (as Go does at start-up), returns
/// the soft limit now in force (`None` if it cannot be read, or is unlimited).
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
                tracing::debug!(
                    from = before,
                    to = lim.rlim_cur,
                    "raised the open-files limit"
                );
            } else {
                tracing::warn!(
                    soft = before,
                    hard = lim.rlim_max,
                    "cannot raise the open-files limit to its hard value"
                );
            }
        }
        if lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        Some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// The connection cap from `--max-connections` (if given) and the open-files limit:
/// a cap the file limit cannot hold is refused; the default is lowered to fit.
pub fn connection_cap(requested: Option<usize>, nofile: Option<u64>) -> anyhow::Result<usize> {
    let fits =
        nofile.map(|n| usize::try_from(n.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX));
    match (requested, fits) {
        (Some(0), _) => anyhow::bail!("--max-connections must be at least 1"),
        (Some(n), Some(fits)) if n > fits => anyhow::bail!(
            "--max-connections {n} needs {} open files but the limit is {} (ulimit -n); \
             raise the limit or lower --max-connections to at most {fits}",
            n as u64 + RESERVED_FDS,
            nofile.unwrap_or_default()
        ),
        (None, Some(0)) => anyhow::bail!(
            "the open-files limit ({}) leaves no room for connections; raise it (ulimit -n)",
            nofile.unwrap_or_default()
        ),
        (Some(n), _) => Ok(n),
        (None, Some(fits)) => Ok(DEFAULT_MAX_CONNECTIONS.min(fits)),
        (None, None) => Ok(DEFAULT_MAX_CONNECTIONS),
    }
}

/// Serves `app` on `listener` until `stop` fires, then lets open connections finish
/// their requests (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing) = watch::channel(false);
    let mut stop = stop;
    let mut cap_logged: Option<Instant> = None;
    loop {
        // A slot first: at the cap, new connections wait in the kernel's backlog
        // until one closes (the timeouts below make sure some do).
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if cap_logged.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: {} connections are open; new ones wait \
                         until one closes (raise --max-connections / RUNOPS_MAX_CONNECTIONS \
                         if this is normal load)",
                        limits.max_connections
                    );
                    cap_logged = Some(Instant::now());
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = &mut stop => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // TCP_NODELAY: without it a small write (the end of a followed log, a short JSON
        // answer) waits for the peer's delayed ACK, ~40 ms on Linux, on every exchange.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
        let app = app.clone();
        let closing = closing.clone();
        tokio::spawn(async move {
            serve_connection(tcp, peer, app, limits, closing).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection holds a slot: all slots back means all connections ended.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Where a connection is; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Idle,
    InFlight,
}

#[derive(Debug)]
struct ActivityState {
    phase: Phase,
    since: Instant,
    in_flight: usize,
}

/// Shared by a connection's I/O wrapper, its requests and its watchdog.
#[derive(Debug, Clone)]
struct Activity(Arc<Mutex<ActivityState>>);

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(Mutex::new(ActivityState {
            phase: Phase::Head,
            since: Instant::now(),
            in_flight: 0,
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut ActivityState) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Bytes arrived: on an idle connection they start the next request's headers.
    fn on_read(&self) {
        self.with(|s| {
            if s.phase == Phase::Idle {
                s.phase = Phase::Head;
                s.since = Instant::now();
            }
        })
    }

    fn request_started(&self) -> RequestGuard {
        self.with(|s| {
            s.in_flight += 1;
            s.phase = Phase::InFlight;
        });
        RequestGuard(self.clone())
    }

    /// `Some((phase, deadline))` while a timeout runs; `None` while a request is in flight.
    fn deadline(&self, limits: &ConnLimits) -> Option<(Phase, Instant)> {
        self.with(|s| match s.phase {
            Phase::Head => Some((Phase::Head, s.since + limits.header_read_timeout)),
            Phase::Idle => Some((Phase::Idle, s.since + limits.idle_timeout)),
            Phase::InFlight => None,
        })
    }
}

/// Held by a request until its answer's body is fully sent (or dropped).
struct RequestGuard(Activity);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.with(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.phase = Phase::Idle;
                s.since = Instant::now();
            }
        })
    }
}

/// An answer's body that keeps its request "in flight" until hyper is done with it.
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct TrackedIo {
    tcp: TcpStream,
    activity: Activity,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let io = TokioIo::new(TrackedIo {
        tcp,
        activity: activity.clone(),
    });
    let svc_activity = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = svc_activity.request_started();
        let mut req = req.map(Body::new);
        // The peer address the audit log records.
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            let resp = match tower::Service::call(&mut app, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|inner| GuardedBody {
                inner,
                _guard: guard,
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // Timeouts are the watchdog's below (see the module doc).
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = *closing.borrow();
    if shutting_down {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let wake = match activity.deadline(&limits) {
            Some((phase, deadline)) if deadline <= Instant::now() => {
                tracing::debug!(
                    %peer,
                    "closing a connection: {}",
                    if phase == Phase::Head {
                        "its request headers did not arrive in time (--header-read-timeout-secs)"
                    } else {
                        "idle for too long (--idle-timeout-secs)"
                    }
                );
                return;
            }
            Some((_, deadline)) => deadline,
            // In flight: look again later; the phase can only change to idle, whose
            // deadline is counted from when it began.
            None => Instant::now() + limits.header_read_timeout.min(limits.idle_timeout),
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = closing.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fits_the_file_limit() {
        assert_eq!(connection_cap(None, None).unwrap(), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            connection_cap(None, Some(1024)).unwrap(),
            1024 - RESERVED_FDS as usize
        );
        assert_eq!(connection_cap(Some(500), Some(1024)).unwrap(), 500);
        let e = connection_cap(Some(5000), Some(1024))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--max-connections 5000") && e.contains("ulimit -n"),
            "{e}"
        );
        assert!(connection_cap(Some(0), None).is_err());
        assert!(connection_cap(None, Some(10)).is_err());
    }
}
