//! The `/metrics` endpoint: one plain thread with a blocking std listener, off the shards.
//!
//! One client at a time, each bounded: the request may be at most
//! `limits::METRICS_REQUEST_BYTES_MAX` and the whole exchange must finish within
//! `limits::METRICS_CLIENT_DEADLINE_MS`, so a slow or silent client delays the next scrape by
//! at most that long and can never hang the thread. Every answer closes the connection.

use super::Metrics;
use crate::config::limits;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The running endpoint; [`MetricsServer::stop`] ends it.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Binds the metrics address (before any shard starts, so that a taken address stops kelp
/// with a clear error).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves `GET /metrics` on `listener` from a thread of its own until stopped.
pub fn spawn(listener: TcpListener, metrics: &'static Metrics) -> io::Result<MetricsServer> {
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("kelp-metrics".into())
        .spawn(move || serve(listener, metrics, &stopping))?;
    Ok(MetricsServer { stop, thread })
}

impl MetricsServer {
    /// Stops accepting and waits for the thread (at most one client deadline plus one poll).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn serve(listener: TcpListener, metrics: &'static Metrics, stop: &AtomicBool) {
    let mut body = String::new();
    while !stop.load(Ordering::Relaxed) {
        if !wait_readable(&listener, limits::METRICS_ACCEPT_POLL_MS) {
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = answer(stream, metrics, &mut body) {
                    log::debug!("metrics client {peer}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // EMFILE and the like: do not spin on them.
                log::warn!("metrics: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(limits::METRICS_ACCEPT_POLL_MS));
            }
        }
    }
}

/// Waits up to `ms` for a connection to accept.
fn wait_readable(listener: &TcpListener, ms: u64) -> bool {
    let mut p = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd we own.
    unsafe { libc::poll(&mut p, 1, ms as libc::c_int) > 0 }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, metrics: &Metrics, body: &mut String) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(limits::METRICS_CLIENT_DEADLINE_MS);
    stream.set_nonblocking(false)?;
    let head = read_head(&mut stream, deadline)?;
    let route = match &head {
        Head::Complete(h) => route(h),
        Head::TooLarge => Route::BadRequest,
    };
    let (status, content_type, payload): (&str, &str, &[u8]) = match route {
        Route::Metrics => {
            body.clear();
            metrics.render(body);
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
        }
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found; metrics are at /metrics\n",
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET is served\n",
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            b"bad request\n",
        ),
    };
    let head_out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        payload.len()
    );
    write_all_by(&mut stream, head_out.as_bytes(), deadline)?;
    write_all_by(&mut stream, payload, deadline)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    if matches!(head, Head::TooLarge) {
        // Closing with unread input would reset the connection, and a reset can destroy the
        // answer before the client reads it: take what it still sends until it closes (or the
        // deadline).
        drain(&mut stream, deadline);
    }
    Ok(())
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(head: &[u8]) -> Route {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Route::BadRequest;
    };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// A request head as read.
enum Head {
    Complete(Vec<u8>),
    /// Over `limits::METRICS_REQUEST_BYTES_MAX` without its end: answered with 400.
    TooLarge,
}

/// Reads until the blank line that ends the request head, or fails at the deadline.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let room = limits::METRICS_REQUEST_BYTES_MAX - head.len();
        let want = room.min(chunk.len());
        let n = stream.read(&mut chunk[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the request head",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Head::Complete(head));
        }
        if head.len() >= limits::METRICS_REQUEST_BYTES_MAX {
            return Ok(Head::TooLarge);
        }
    }
}

/// Reads and drops input until EOF, an error or the deadline.
fn drain(stream: &mut TcpStream, deadline: Instant) {
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn write_all_by(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client not reading",
            ));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b""), Route::BadRequest);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\x16\x03\x01garbage"), Route::BadRequest);
    }
}
