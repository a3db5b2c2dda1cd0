//! Starting and stopping kelp: one pinned glommio executor per shard, each with its own
//! SO_REUSEPORT listener, plus a signal thread for graceful shutdown.

use crate::config::{limits, Backend, Config};
use crate::conn;
use crate::metrics::{self, Metrics};
use crate::seaweedmq::{SeaweedCore, SeaweedHandle, SeaweedOptions};
use crate::shard::{Credentials, Handoff, Mesh, Shard, ShardEnds};
use crate::util::PollOnOwnWake;
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
    raise_memlock_limit();
    let credentials = load_credentials(&config)?;
    let seaweed = start_grpc_core(&config)?;
    let cores = config.shard_cores().map_err(anyhow::Error::msg)?;
    // Bound before any shard starts: a taken metrics address stops kelp here, cleanly.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            metrics::http::bind(addr)
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    let metrics = Metrics::new(cores.len()).leak();
    if let Some(h) = &seaweed {
        metrics.set_seaweedmq(h.publish_stats());
    }
    let (mesh, ends) = Mesh::new(cores.len()).context("creating the shard mesh")?;
    let config = Arc::new(config);
    let handles = spawn_shards(
        &cores,
        &config,
        &mesh,
        ends,
        metrics,
        &seaweed,
        &credentials,
    )?;
    let (host, port) = config.advertised();
    log::info!(
        "kelp listening on {} (advertised as {host}:{port}), {} shards on cores {:?}, backend {:?}",
        config.listen,
        cores.len(),
        cores,
        config.backend
    );
    let metrics_server = match metrics_listener {
        Some(l) => {
            let addr = l.local_addr().context("metrics listener address")?;
            let server = metrics::http::spawn(l, metrics).context("starting the metrics thread")?;
            log::info!("serving metrics on http://{addr}/metrics");
            Some(server)
        }
        None => None,
    };

    spawn_signal_thread(mesh.clone(), config.clone())?;

    for h in handles {
        let _ = h.join();
    }
    if let Some(s) = &seaweed {
        s.shutdown();
    }
    if let Some(server) = metrics_server {
        server.stop();
    }
    log::info!("kelp stopped");
    Ok(())
}

/// Starts one pinned executor per core and waits until every shard listens.
fn spawn_shards(
    cores: &[usize],
    config: &Arc<Config>,
    mesh: &Arc<Mesh>,
    ends: Vec<ShardEnds>,
    metrics: &'static Metrics,
    seaweed: &Option<SeaweedHandle>,
    credentials: &Credentials,
) -> anyhow::Result<Vec<glommio::ExecutorJoinHandle<()>>> {
    let doorbells = MeshBuilder::<(), Full>::full(cores.len(), 1);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for ((id, core), ends) in cores.iter().copied().enumerate().zip(ends) {
        metrics.shard(id).set_core(core);
        let config = config.clone();
        let mesh = mesh.clone();
        let ready = ready_tx.clone();
        let bells = doorbells.clone();
        let seaweed = seaweed.clone();
        let credentials = credentials.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("kelp-shard-{id}"))
            .spin_before_park(config.spin())
            .preempt_timer(Duration::from_micros(config.preempt_us))
            .io_memory(256 * 1024)
            .spawn(move || {
                shard_main(id, config, mesh, metrics, ends, bells, ready, (seaweed, credentials))
            })
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
    Ok(handles)
}

/// With `--backend seaweedmq`, starts the gRPC core thread (it connects in the background).
fn start_grpc_core(config: &Config) -> anyhow::Result<Option<SeaweedHandle>> {
    Ok(match config.backend {
        Backend::Memory => None,
        Backend::Seaweedmq => {
            let filer = match &config.seaweedmq_filer {
                Some(f) => {
                    Some(crate::seaweedmq::filer::grpc_address(f).map_err(anyhow::Error::msg)?)
                }
                None => {
                    log::warn!(
                        "no --seaweedmq-filer: kelp cannot tell after a restart whether SeaweedMQ \
                         kept every record it acknowledged (stock SeaweedFS 4.44-4.53 may not), \
                         so it checks only what this process sees; it runs alone, and stores \
                         every offset commit as a record of a topic that only grows"
                    );
                    None
                }
            };
            let opts = SeaweedOptions {
                // The broker tracks publishers by name: each kelp process needs its own.
                publisher_name: format!(
                    "kelp-{}-{}",
                    crate::config::hostname().unwrap_or_else(|| "host".into()),
                    std::process::id()
                ),
                linger_us: config.seaweedmq_linger_us,
                batch_bytes: config.seaweedmq_batch_bytes,
                filer: filer.clone(),
                mark_interval_ms: limits::SEAWEEDMQ_MARK_INTERVAL_MS,
                request_timeout_ms: config.seaweedmq_timeout_ms,
                ..SeaweedOptions::default()
            };
            let handle = SeaweedCore::start(config.seaweedmq.clone(), config.grpc_core, opts)
                .context("starting the gRPC core thread")?;
            log::info!(
                "SeaweedMQ backend: broker {} (gRPC thread {})",
                config.seaweedmq,
                config
                    .grpc_core
                    .map_or("not pinned".to_string(), |c| format!("on core {c}"))
            );
            Some(handle)
        }
    })
}

/// SIGTERM or SIGINT: every shard stops accepting and finishes what is in flight; whatever is
/// still running when the grace period ends is cut off. SIGHUP: the users file and the TLS
/// certificate are read again (a bad file leaves what it held as it was).
fn spawn_signal_thread(mesh: Arc<Mesh>, config: Arc<Config>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    std::thread::Builder::new()
        .name("kelp-signals".into())
        .spawn(move || {
            let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
                .expect("installing signal handlers");
            for sig in signals.forever() {
                if sig == SIGHUP {
                    reload_users(&mesh, &config);
                    reload_tls(&mesh, &config);
                    continue;
                }
                log::info!("signal {sig}: no longer accepting; finishing in-flight requests");
                mesh.shutdown_all();
                std::thread::sleep(Duration::from_millis(limits::SHUTDOWN_GRACE_MS));
                log::warn!("shutdown grace period over; exiting");
                std::process::exit(0);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The users file and the TLS settings, read once before anything starts: a missing or bad
/// file stops kelp here.
fn load_credentials(config: &Config) -> anyhow::Result<Credentials> {
    let users = match (&config.users_file, config.listen.protocol.sasl()) {
        (Some(path), true) => {
            let users = crate::auth::Users::load(path, false).map_err(anyhow::Error::msg)?;
            if users.is_empty() {
                log::warn!("{}: no users: every SASL login will fail", path.display());
            }
            Some(Arc::new(users))
        }
        (Some(path), false) => {
            log::warn!(
                "--users-file {} is not used: --listen {} asks for no SASL",
                path.display(),
                config.listen
            );
            None
        }
        _ => None,
    };
    let tls = match tls_files(config) {
        Some(files) if config.listen.protocol.tls() => {
            Some(crate::tls::load(&files).map_err(anyhow::Error::msg)?)
        }
        Some(files) => {
            log::warn!(
                "--tls-cert {} is not used: --listen {} asks for no TLS",
                files.cert.display(),
                config.listen
            );
            None
        }
        None => None,
    };
    Ok(Credentials { users, tls })
}

fn tls_files(config: &Config) -> Option<crate::tls::Files<'_>> {
    Some(crate::tls::Files {
        cert: config.tls_cert.as_deref()?,
        key: config.tls_key.as_deref()?,
        client_ca: config.tls_client_ca.as_deref(),
    })
}

/// SIGHUP: reads the TLS certificate, key and client CAs again and hands them to every shard;
/// connections already open keep the session they have.
fn reload_tls(mesh: &Mesh, config: &Config) {
    let Some(files) = tls_files(config).filter(|_| config.listen.protocol.tls()) else {
        return;
    };
    match crate::tls::load(&files) {
        Ok(tls) => {
            log::info!("SIGHUP: {} read again", files.cert.display());
            mesh.tls_to_all(&tls);
        }
        Err(e) => log::warn!("SIGHUP: {e}; TLS stays as it was"),
    }
}

/// SIGHUP: reads the users file again and hands it to every shard; connections that already
/// logged in stay logged in.
fn reload_users(mesh: &Mesh, config: &Config) {
    let Some(path) = config
        .users_file
        .as_ref()
        .filter(|_| config.listen.protocol.sasl())
    else {
        log::info!("SIGHUP: no SASL listener, no users file to read again");
        return;
    };
    // Under the users file's lock: an admin alteration in flight is not undone by this reading.
    crate::auth::users::exclusive(|| match crate::auth::Users::load(path, false) {
        Ok(users) => {
            log::info!(
                "SIGHUP: {} read again: {} credentials",
                path.display(),
                users.len()
            );
            mesh.users_to_all(&Arc::new(users), None);
        }
        Err(e) => log::warn!("SIGHUP: {e}; the users stay as they were"),
    })
}

// Everything a shard starts with, handed over once by the thread that spawns it.
#[allow(clippy::too_many_arguments)]
async fn shard_main(
    id: usize,
    config: Arc<Config>,
    mesh: Arc<Mesh>,
    metrics: &'static Metrics,
    ends: ShardEnds,
    bells: MeshBuilder<(), Full>,
    ready: mpsc::Sender<Result<(), String>>,
    (seaweed, credentials): (Option<SeaweedHandle>, Credentials),
) {
    let bound = bind_reuseport(config.listen.addr);
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
    let shard = Shard::new(
        id,
        config.clone(),
        mesh.clone(),
        metrics.shard(id),
        seaweed,
        credentials,
    );
    let bells = shard.join_doorbells(bells).await;
    let inbox = glommio::spawn_local(shard.clone().run_inbox(ends, bells));
    shard.start_background();
    let _ = ready.send(Ok(()));

    // The io_uring accept outlives a wake-up by the spinner: once submitted, it may already
    // have taken a connection off the queue whose completion is not reaped yet, and dropping
    // it then would leak that connection (glommio discards a cancelled accept's fd: the
    // client is connected and never served). So it is replaced only once it has completed,
    // and polled only when its own waker fires (glommio keeps a waker clone per poll of a
    // pending source; see `util::PollOnOwnWake`).
    let mut accept = Box::pin(PollOnOwnWake::new(listener.accept()));
    loop {
        // Take every pending connection without io_uring (a spinning shard looks at io_uring
        // only every preemption interval), then wait for the next one: the spinner polls the
        // listener while the shard is active, io_uring's accept covers a parked shard.
        while let Some(stream) = accept_nonblocking(listen_fd) {
            admit(&shard, &mesh, &config, stream);
        }
        if shard.stopping.get() {
            stop_listening(listen_fd);
            break;
        }
        for handoff in shard.take_arrivals() {
            adopt(&shard, &mesh, handoff);
        }
        let stop = shard.stop.notified();
        let arrived = shard.arrived.notified();
        let ready = shard.watch_fd(listen_fd);
        let woke = futures::future::select(
            accept.as_mut(),
            futures::future::select(ready.notified(), futures::future::select(stop, arrived)),
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
        accept = Box::pin(PollOnOwnWake::new(listener.accept()));
    }
    drop(accept);
    drop(listener);
    // Connections handed over as shutdown began close like the others.
    for handoff in shard.take_arrivals() {
        drop(handoff);
        mesh.connections.fetch_sub(1, Ordering::SeqCst);
    }
    inbox.await;
}

/// Takes the listening socket out of LISTEN at once. Closing it is not enough: the io_uring
/// accept still in flight holds a reference to it, and the kernel tears a ring down after the
/// process has exited, so the socket would go on listening (and, with SO_REUSEPORT, take a share
/// of the connections meant for a kelp started in its place) for a while after kelp is gone.
/// shutdown(2) on a listener resets its queue and fails the pending accept instead.
fn stop_listening(listen_fd: RawFd) {
    // SAFETY: shutdown on our own listening socket; the fd stays open until the listener drops.
    if listen_fd >= 0 && unsafe { libc::shutdown(listen_fd, libc::SHUT_RDWR) } != 0 {
        log::warn!("stopping the listener: {}", std::io::Error::last_os_error());
    }
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
        shard.metrics.connection_refused();
        log::warn!(
            "refusing a connection: --max-connections {} reached",
            config.max_connections
        );
        return;
    }
    shard.touch();
    shard.connections.set(shard.connections.get() + 1);
    shard.metrics.connection_accepted(shard.connections.get());
    spawn_connection(shard, mesh, stream, None);
}

/// Serves a connection another shard handed over (already counted under
/// `--max-connections`).
fn adopt(shard: &Rc<Shard>, mesh: &Arc<Mesh>, handoff: Handoff) {
    // SAFETY: the fd is a connected TCP socket duplicated for this shard alone.
    let stream = unsafe { glommio::net::TcpStream::from_raw_fd(handoff.fd.into_raw_fd()) };
    shard.touch();
    shard.connections.set(shard.connections.get() + 1);
    shard.metrics.connection_moved_in(shard.connections.get());
    spawn_connection(
        shard,
        mesh,
        stream,
        Some((handoff.moved_at, handoff.security)),
    );
}

fn spawn_connection(
    shard: &Rc<Shard>,
    mesh: &Arc<Mesh>,
    stream: glommio::net::TcpStream,
    moved: Option<(std::time::Instant, crate::auth::Security)>,
) {
    let s = shard.clone();
    let m = mesh.clone();
    glommio::spawn_local(async move {
        let served = conn::serve(s.clone(), stream, moved).await;
        if let conn::Served::Closed = served {
            // The slot is free before the gauge says so: whoever sees the gauge drop can
            // connect.
            m.connections.fetch_sub(1, Ordering::SeqCst);
        }
        s.connections.set(s.connections.get() - 1);
        s.metrics.connection_closed(s.connections.get());
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
