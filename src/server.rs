//! Starting and stopping kelp: one pinned glommio executor per shard, each with its own
//! SO_REUSEPORT listener, plus a signal thread for graceful shutdown.

use crate::config::{limits, Backend, Config};
use crate::conn;
use crate::shard::{Mesh, Shard, ShardEnds};
use anyhow::{bail, Context};
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Runs kelp until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    if let Err(e) = config.validate() {
        bail!("{e}");
    }
    if config.backend == Backend::Seaweedmq {
        bail!("--backend seaweedmq is not implemented yet; use --backend memory");
    }
    raise_memlock_limit();
    let cores = config.shard_cores().map_err(anyhow::Error::msg)?;
    let (mesh, ends) = Mesh::new(cores.len()).context("creating the shard mesh")?;
    let doorbells = MeshBuilder::<(), Full>::full(cores.len(), 1);
    let config = Arc::new(config);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for ((id, core), ends) in cores.iter().copied().enumerate().zip(ends) {
        let config = config.clone();
        let mesh = mesh.clone();
        let ready = ready_tx.clone();
        let bells = doorbells.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("kelp-shard-{id}"))
            .spin_before_park(config.spin())
            .preempt_timer(Duration::from_micros(config.preempt_us))
            .io_memory(256 * 1024)
            .spawn(move || shard_main(id, config, mesh, ends, bells, ready))
            .map_err(|e| {
                anyhow::anyhow!(
                    "starting shard {id} on core {core}: {e} (glommio needs locked memory: raise `ulimit -l`)"
                )
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..cores.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("a shard stopped while starting"),
        }
    }
    let (host, port) = config.advertised();
    log::info!(
        "kelp listening on {} (advertised as {host}:{port}), {} shards on cores {:?}, backend {:?}",
        config.listen,
        cores.len(),
        cores,
        config.backend
    );

    let mesh_for_signals = mesh.clone();
    std::thread::Builder::new()
        .name("kelp-signals".into())
        .spawn(move || {
            let mut signals = signal_hook::iterator::Signals::new([
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGINT,
            ])
            .expect("installing signal handlers");
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: no longer accepting; finishing in-flight requests");
                mesh_for_signals.shutdown_all();
                // Whatever is still running when the grace period ends is cut off.
                std::thread::sleep(Duration::from_millis(limits::SHUTDOWN_GRACE_MS));
                log::warn!("shutdown grace period over; exiting");
                std::process::exit(0);
            }
        })
        .context("starting the signal thread")?;

    for h in handles {
        let _ = h.join();
    }
    log::info!("kelp stopped");
    Ok(())
}

async fn shard_main(
    id: usize,
    config: Arc<Config>,
    mesh: Arc<Mesh>,
    ends: ShardEnds,
    bells: MeshBuilder<(), Full>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let bound = bind_reuseport(config.listen);
    let listen_fd = bound.as_ref().map(|l| l.as_raw_fd()).unwrap_or(-1);
    // SAFETY: the fd is a listening TCP socket we own; glommio takes it over whole.
    let listener = match bound.map(|l| unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "shard {id}: cannot listen on {}: {e}",
                config.listen
            )));
            return;
        }
    };
    let shard = Shard::new(id, config.clone(), mesh.clone());
    let bells = shard.join_doorbells(bells).await;
    let inbox = glommio::spawn_local(shard.clone().run_inbox(ends, bells));
    let sweeper_shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            let stop = sweeper_shard.stop.notified();
            let tick = glommio::timer::sleep(Duration::from_millis(limits::RETENTION_SWEEP_MS));
            futures::pin_mut!(tick);
            futures::future::select(tick, stop).await;
            if sweeper_shard.stopping.get() {
                break;
            }
            sweeper_shard.sweep_retention();
        }
    })
    .detach();
    let ticker_shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            let stop = ticker_shard.stop.notified();
            let tick = glommio::timer::sleep(Duration::from_millis(limits::GROUP_TICK_MS));
            futures::pin_mut!(tick);
            futures::future::select(tick, stop).await;
            if ticker_shard.stopping.get() {
                break;
            }
            ticker_shard
                .groups
                .borrow_mut()
                .tick(std::time::Instant::now());
        }
    })
    .detach();
    let _ = ready.send(Ok(()));

    // The io_uring accept outlives a wake-up by the spinner: once submitted, it may already
    // have taken a connection off the queue whose completion is not reaped yet, and dropping
    // it then would leak that connection (glommio discards a cancelled accept's fd: the
    // client is connected and never served). So it is replaced only once it has completed.
    let mut accept = Box::pin(listener.accept());
    loop {
        // Take every pending connection without io_uring (a spinning shard looks at io_uring
        // only every preemption interval), then wait for the next one: the spinner polls the
        // listener while the shard is active, io_uring's accept covers a parked shard.
        while let Some(stream) = accept_nonblocking(listen_fd) {
            admit(&shard, &mesh, &config, stream);
        }
        if shard.stopping.get() {
            break;
        }
        let stop = shard.stop.notified();
        let ready = shard.watch_fd(listen_fd);
        let woke = futures::future::select(
            accept.as_mut(),
            futures::future::select(ready.notified(), stop),
        )
        .await;
        shard.unwatch_fd(listen_fd);
        let accepted = match woke {
            futures::future::Either::Left((accepted, _)) => Some(accepted),
            futures::future::Either::Right(_) => None,
        };
        match accepted {
            Some(Ok(s)) => admit(&shard, &mesh, &config, s),
            Some(Err(e)) => log::warn!("shard {id}: accept failed: {e}"),
            None => continue,
        }
        accept = Box::pin(listener.accept());
    }
    drop(accept);
    drop(listener);
    inbox.await;
}

/// A non-blocking listening socket with SO_REUSEPORT, so that every shard can bind the address
/// and the kernel spreads connections over them.
fn bind_reuseport(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts one pending connection without blocking, if there is one.
fn accept_nonblocking(listen_fd: RawFd) -> Option<glommio::net::TcpStream> {
    // SAFETY: accept4 on our listening socket; a returned fd is new and owned by the stream.
    let fd = unsafe {
        libc::accept4(
            listen_fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a connected TCP socket we just accepted and nobody else owns.
    Some(unsafe { glommio::net::TcpStream::from_raw_fd(fd) })
}

/// Starts serving an accepted connection, unless `--max-connections` is reached.
fn admit(shard: &Rc<Shard>, mesh: &Arc<Mesh>, config: &Config, stream: glommio::net::TcpStream) {
    if mesh.connections.fetch_add(1, Ordering::SeqCst) >= config.max_connections {
        mesh.connections.fetch_sub(1, Ordering::SeqCst);
        log::warn!(
            "refusing a connection: --max-connections {} reached",
            config.max_connections
        );
        return;
    }
    shard.touch();
    shard.connections.set(shard.connections.get() + 1);
    let s = shard.clone();
    let m = mesh.clone();
    glommio::spawn_local(async move {
        conn::serve(s.clone(), stream).await;
        s.connections.set(s.connections.get() - 1);
        m.connections.fetch_sub(1, Ordering::SeqCst);
    })
    .detach();
}

/// glommio registers memory with io_uring; a low RLIMIT_MEMLOCK makes executors fail to start.
fn raise_memlock_limit() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure is harmless and only logged.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
