//! The gRPC core's links: one per broker address, each a connected `Channel` and its health.
//! A maintenance task per link connects, probes with `FindBrokerLeader`, and reconnects with
//! backoff after any call reports a broken connection; calls to a link that is down fail at
//! once instead of each waiting out a connect timeout. Only the core's thread touches them.

use super::error::{SeaweedError, SeaweedResult};
use super::pb::messaging_pb::seaweed_messaging_client::SeaweedMessagingClient;
use super::pb::messaging_pb::FindBrokerLeaderRequest;
use super::SeaweedOptions;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub(crate) type Client = SeaweedMessagingClient<Channel>;

/// What links need of the core's options.
#[derive(Clone, Copy)]
pub(crate) struct LinkOptions {
    connect_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    max_message_bytes: usize,
}

impl LinkOptions {
    pub(crate) fn new(opts: &SeaweedOptions) -> Self {
        let backoff_min = Duration::from_millis(opts.backoff_min_ms.max(1));
        LinkOptions {
            connect_timeout: Duration::from_millis(opts.connect_timeout_ms),
            backoff_min,
            backoff_max: Duration::from_millis(opts.backoff_max_ms).max(backoff_min),
            max_message_bytes: opts.max_message_bytes,
        }
    }

    fn client(&self, channel: Channel) -> Client {
        SeaweedMessagingClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }
}

/// Every link the core has opened, by broker address.
pub(crate) struct Links {
    opts: LinkOptions,
    links: RefCell<HashMap<String, Rc<Link>>>,
}

impl Links {
    pub(crate) fn new(opts: LinkOptions) -> Self {
        Links {
            opts,
            links: RefCell::new(HashMap::new()),
        }
    }

    /// Opens the link to `addr` (connecting in the background) if it is not open yet.
    pub(crate) fn open(&self, addr: &str) {
        self.link(addr);
    }

    /// The link to `addr`, created (and its maintenance task started) on first use.
    fn link(&self, addr: &str) -> Rc<Link> {
        if let Some(link) = self.links.borrow().get(addr) {
            return link.clone();
        }
        let (state, _) = watch::channel(LinkState::Connecting);
        let link = Rc::new(Link {
            addr: addr.to_string(),
            state,
            suspect: Notify::new(),
        });
        self.links
            .borrow_mut()
            .insert(addr.to_string(), link.clone());
        tokio::task::spawn_local(maintain(self.opts, link.clone()));
        link
    }

    /// A client on the link to `addr`: at once when it is up, an `Unavailable` error at once
    /// when it is down, and after at most the connect timeout while it is first connecting.
    pub(crate) async fn client(&self, addr: &str) -> SeaweedResult<Client> {
        let link = self.link(addr);
        let mut state = link.state.subscribe();
        let connect_timeout = self.opts.connect_timeout;
        let settled = tokio::time::timeout(
            connect_timeout,
            state.wait_for(|s| !matches!(s, LinkState::Connecting)),
        )
        .await;
        let unavailable = |reason: String| SeaweedError::Unavailable {
            addr: addr.to_string(),
            reason,
        };
        match settled {
            Err(_) => Err(unavailable("still connecting".to_string())),
            Ok(Err(_)) => Err(unavailable("link closed".to_string())),
            Ok(Ok(state)) => match &*state {
                LinkState::Up(channel) => Ok(self.new_client(channel.clone())),
                LinkState::Down(reason) => Err(unavailable(reason.clone())),
                LinkState::Connecting => unreachable!("waited for it to settle"),
            },
        }
    }

    fn new_client(&self, channel: Channel) -> Client {
        self.opts.client(channel)
    }

    /// Something on the link to `addr` failed the way a broken connection does: have its
    /// maintenance task check it now.
    pub(crate) fn suspect(&self, addr: &str) {
        if let Some(link) = self.links.borrow().get(addr) {
            link.suspect.notify_one();
        }
    }
}

#[derive(Clone)]
enum LinkState {
    /// The first connection attempt is under way: calls wait for it (up to the connect timeout).
    Connecting,
    Up(Channel),
    /// Reconnecting in the background; calls fail at once with the reason.
    Down(String),
}

/// One broker address and the health of our connection to it.
struct Link {
    addr: String,
    state: watch::Sender<LinkState>,
    /// Signalled by calls that saw a broken connection.
    suspect: Notify,
}

/// Keeps `link` connected for the life of the core.
async fn maintain(opts: LinkOptions, link: Rc<Link>) {
    let backoff_min = opts.backoff_min;
    let backoff_max = opts.backoff_max;
    let mut backoff = backoff_min;
    let mut failures: u64 = 0;
    loop {
        match connect(opts, &link.addr).await {
            Ok(channel) => {
                if failures > 0 {
                    log::info!("SeaweedMQ broker {}: reconnected", link.addr);
                } else {
                    log::info!("SeaweedMQ broker {}: connected", link.addr);
                }
                failures = 0;
                backoff = backoff_min;
                link.state.send_replace(LinkState::Up(channel.clone()));
                // Healthy until a call says otherwise and a probe confirms it.
                loop {
                    link.suspect.notified().await;
                    match probe(opts, channel.clone()).await {
                        Ok(()) => continue,
                        Err(reason) => {
                            log::warn!("SeaweedMQ broker {}: connection lost: {reason}", link.addr);
                            link.state.send_replace(LinkState::Down(reason));
                            break;
                        }
                    }
                }
            }
            Err(reason) => {
                failures += 1;
                // Lines after 1, 2, 4, 8... tries, so that a long outage does not flood the log.
                if failures.is_power_of_two() {
                    log::warn!(
                        "SeaweedMQ broker {}: cannot connect ({failures} tries, next in {} ms): {reason}",
                        link.addr,
                        backoff.as_millis()
                    );
                }
                link.state.send_replace(LinkState::Down(reason));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}

/// A new connection to `addr`, checked with one `FindBrokerLeader`.
async fn connect(opts: LinkOptions, addr: &str) -> Result<Channel, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let connect_timeout = opts.connect_timeout;
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("bad broker address: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // Within SeaweedFS's keepalive enforcement (pings no closer than 20 s apart).
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // Room for large fetch responses without waiting on window updates.
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20));
    let channel = match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
        Err(_) => {
            return Err(format!(
                "connect timed out after {} ms",
                connect_timeout.as_millis()
            ))
        }
        Ok(Err(e)) => return Err(error_chain(&e)),
        Ok(Ok(channel)) => channel,
    };
    probe(opts, channel.clone()).await?;
    Ok(channel)
}

/// Whether the connection carries calls: one `FindBrokerLeader`. An error status from the broker
/// itself (for instance no balancer elected yet, which lasts a while after a broker restart)
/// still proves the connection, and calls that do not need the balancer (publish and fetch on a
/// partition's leader) work meanwhile; only transport failures count against the link.
async fn probe(opts: LinkOptions, channel: Channel) -> Result<(), String> {
    let mut client = opts.client(channel);
    let call = client.find_broker_leader(FindBrokerLeaderRequest::default());
    match tokio::time::timeout(opts.connect_timeout, call).await {
        Err(_) => Err("health check timed out".to_string()),
        Ok(Err(status)) if is_transport_failure(&status) => {
            Err(format!("health check: {}", status.message()))
        }
        Ok(Err(status)) => {
            log::debug!("health check answered with an error: {}", status.message());
            Ok(())
        }
        Ok(Ok(_)) => Ok(()),
    }
}

/// A status that says the call never reached the broker, or the connection died under it.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => true,
        Code::Unknown | Code::Internal => looks_like_transport(status.message()),
        _ => false,
    }
}

/// An error and its sources on one line (tonic's transport errors say little at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn looks_like_transport(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("transport") || m.contains("connection") || m.contains("h2 protocol")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_told_from_broker_errors() {
        assert!(looks_like_transport("transport error"));
        assert!(!looks_like_transport("topic kafka.x: not found"));
        assert!(is_transport_failure(&Status::unavailable("broker gone")));
        assert!(is_transport_failure(&Status::unknown("h2 protocol error")));
        assert!(!is_transport_failure(&Status::unknown(
            "no balancer elected yet"
        )));
        assert!(!is_transport_failure(&Status::not_found("no such topic")));
    }
}
