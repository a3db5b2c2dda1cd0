//! The physical floor: a loopback TCP echo server on its own pinned thread that answers every
//! length-prefixed request frame with a fixed-size response carrying the request's correlation
//! id. Driven by the same client loop as a broker run, with the same frames, it measures what
//! the machine itself costs per round trip.
//!
//! Busy-poll mode (the default) spins on non-blocking `recv`/`send`; sleep mode (`--blocking`)
//! waits in `ppoll`, so both threads must be woken for every message.

use crate::engine::poll_fds;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Read room kept free on each server connection.
const READ_ROOM_BYTES: usize = 64 * 1024;
/// How often a sleeping server checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds 127.0.0.1 on a free port and serves on a thread pinned to `core`.
    pub fn start(
        core: Option<usize>,
        sleep: bool,
        response_bytes: usize,
    ) -> io::Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("floor-server".into())
            .spawn(move || {
                if let Some(c) = core {
                    crate::util::pin_current_thread(c);
                }
                serve(listener, sleep, response_bytes.max(8), &stop2);
            })?;
        Ok(EchoServer {
            addr,
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct ServerConn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
}

fn serve(listener: TcpListener, sleep: bool, response_bytes: usize, stop: &AtomicBool) {
    let mut reply = vec![0u8; response_bytes];
    reply[..4].copy_from_slice(&((response_bytes - 4) as i32).to_be_bytes());
    let mut conns: Vec<ServerConn> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let mut progress = false;
        match listener.accept() {
            Ok((s, _)) => {
                if s.set_nonblocking(true).is_ok() && s.set_nodelay(true).is_ok() {
                    conns.push(ServerConn {
                        stream: s,
                        rbuf: vec![0u8; 4 * READ_ROOM_BYTES],
                        rlen: 0,
                        wbuf: Vec::with_capacity(64 * 1024),
                        wpos: 0,
                    });
                }
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
        conns.retain_mut(|c| {
            let (alive, p) = serve_one(c, &reply);
            progress |= p;
            alive
        });
        if !progress {
            if sleep {
                let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
                    .chain(conns.iter().map(|c| c.stream.as_raw_fd()))
                    .map(|fd| libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                for (fd, c) in fds.iter_mut().skip(1).zip(&conns) {
                    if c.wpos < c.wbuf.len() {
                        fd.events |= libc::POLLOUT;
                    }
                }
                poll_fds(&mut fds, STOP_CHECK);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Reads, answers and writes on one connection. Returns (still open, made progress).
fn serve_one(c: &mut ServerConn, reply: &[u8]) -> (bool, bool) {
    let mut progress = false;
    if c.rbuf.len() - c.rlen < READ_ROOM_BYTES {
        let grow = c.rbuf.len().max(READ_ROOM_BYTES);
        c.rbuf.resize(c.rbuf.len() + grow, 0);
    }
    match c.stream.read(&mut c.rbuf[c.rlen..]) {
        Ok(0) => return (false, true),
        Ok(n) => {
            c.rlen += n;
            progress = true;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(_) => return (false, true),
    }
    let mut at = 0;
    while c.rlen - at >= 12 {
        let len = i32::from_be_bytes(c.rbuf[at..at + 4].try_into().expect("4 bytes"));
        if len < 8 {
            return (false, true);
        }
        let total = 4 + len as usize;
        if c.rlen - at < total {
            if total > c.rbuf.len() {
                c.rbuf.resize(total + READ_ROOM_BYTES, 0);
            }
            break;
        }
        let w = c.wbuf.len();
        c.wbuf.extend_from_slice(reply);
        // The request's correlation id sits after its api key and version.
        c.wbuf[w + 4..w + 8].copy_from_slice(&c.rbuf[at + 8..at + 12]);
        at += total;
    }
    if at > 0 {
        c.rbuf.copy_within(at..c.rlen, 0);
        c.rlen -= at;
    }
    if c.wpos < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(n) => {
                c.wpos += n;
                progress = true;
                if c.wpos == c.wbuf.len() {
                    c.wbuf.clear();
                    c.wpos = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (false, true),
        }
    }
    (true, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_answers_with_the_correlation_id_and_size() {
        for sleep in [false, true] {
            let srv = EchoServer::start(None, sleep, 60).unwrap();
            let mut s = TcpStream::connect(srv.addr).unwrap();
            let mut req = vec![0u8; 100];
            req[..4].copy_from_slice(&96i32.to_be_bytes());
            req[8..12].copy_from_slice(&77i32.to_be_bytes());
            s.write_all(&req).unwrap();
            s.write_all(&req).unwrap();
            let mut resp = vec![0u8; 120];
            s.read_exact(&mut resp).unwrap();
            assert_eq!(&resp[..4], &56i32.to_be_bytes());
            assert_eq!(&resp[4..8], &77i32.to_be_bytes());
            assert_eq!(&resp[64..68], &77i32.to_be_bytes());
        }
    }
}
