//! The SeaweedFS filer, as the gRPC core uses it: its key-value store (where kelp keeps each
//! partition's mark, see [`super::marks`]). The channel is created lazily and reconnects by
//! itself; every call is bounded by the request timeout and fails with a retriable error while
//! the filer is away.

use super::error::{SeaweedError, SeaweedResult};
use super::pb::filer_pb::seaweed_filer_client::SeaweedFilerClient;
use super::pb::filer_pb::{KvGetRequest, KvPutRequest};
use bytes::Bytes;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The filer's gRPC address from how SeaweedFS names a filer: `host:port` is its HTTP port and
/// gRPC listens 10000 above it (`weed shell -filer=host:8888` talks to 18888); `host:port.grpc`
/// names the gRPC port itself.
pub fn grpc_address(filer: &str) -> Result<String, String> {
    let (host, ports) = filer
        .rsplit_once(':')
        .ok_or_else(|| format!("filer address {filer:?} is not HOST:PORT"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("filer address {filer:?} has a bad port {p:?}"))
    };
    let grpc = match ports.split_once('.') {
        Some((_, grpc)) => port(grpc)?,
        None => port(ports)?
            .checked_add(10_000)
            .ok_or_else(|| format!("filer address {filer:?}: no gRPC port above {ports}"))?,
    };
    if host.is_empty() {
        return Err(format!("filer address {filer:?} has no host"));
    }
    Ok(format!("{host}:{grpc}"))
}

/// A client of one filer.
#[derive(Clone)]
pub(crate) struct Filer {
    addr: String,
    client: SeaweedFilerClient<Channel>,
    timeout: Duration,
}

impl Filer {
    /// A lazily connecting client of the filer whose gRPC service is at `addr`.
    pub(crate) fn new(
        addr: &str,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Filer, String> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad filer address {addr:?}: {e}"))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        Ok(Filer {
            addr: addr.to_string(),
            client: SeaweedFilerClient::new(endpoint.connect_lazy()),
            timeout,
        })
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    fn unavailable(&self, reason: String) -> SeaweedError {
        SeaweedError::Unavailable {
            addr: format!("filer {}", self.addr),
            reason,
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> SeaweedResult<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(SeaweedError::Timeout {
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            Ok(Err(status)) => Err(self.unavailable(status.message().to_string())),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// The value stored under `key`; empty when there is none.
    pub(crate) async fn kv_get(&self, key: &str) -> SeaweedResult<Bytes> {
        let mut client = self.client.clone();
        let request = KvGetRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
        };
        let response = self.bounded(client.kv_get(request)).await?;
        if !response.error.is_empty() {
            return Err(self.unavailable(format!("KvGet {key}: {}", response.error)));
        }
        Ok(response.value)
    }

    /// Stores `value` under `key` (an empty value deletes the key).
    pub(crate) async fn kv_put(&self, key: &str, value: Bytes) -> SeaweedResult<()> {
        let mut client = self.client.clone();
        let request = KvPutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value,
        };
        let response = self.bounded(client.kv_put(request)).await?;
        if !response.error.is_empty() {
            return Err(self.unavailable(format!("KvPut {key}: {}", response.error)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filer_addresses_follow_seaweedfs() {
        assert_eq!(grpc_address("127.0.0.1:8888").unwrap(), "127.0.0.1:18888");
        assert_eq!(grpc_address("filer:8888.19000").unwrap(), "filer:19000");
        assert!(grpc_address("filer").is_err());
        assert!(grpc_address(":8888").is_err());
        assert!(grpc_address("h:60000").is_err());
        assert!(grpc_address("h:x").is_err());
    }
}
