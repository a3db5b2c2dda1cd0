//! The SeaweedFS filer, as the gRPC core uses it: its key-value store (where kelp keeps each
//! partition's mark, see [`super::marks`]), its distributed locks and directory entries (kelp's
//! cluster membership, `crate::cluster`). The channel is created lazily and reconnects by
//! itself; every call is bounded by the request timeout and fails with a retriable error while
//! the filer is away.

use super::error::{SeaweedError, SeaweedResult};
use super::pb::filer_pb::seaweed_filer_client::SeaweedFilerClient;
use super::pb::filer_pb::{
    CreateEntryRequest, DeleteEntryRequest, Entry, FindLockOwnerRequest, FuseAttributes,
    KvGetRequest, KvPutRequest, ListEntriesRequest, LockRequest, UnlockRequest,
};
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

    /// The same filer, with calls bounded by `timeout` instead.
    pub(crate) fn with_timeout(&self, timeout: Duration) -> Filer {
        Filer {
            timeout,
            ..self.clone()
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

/// What a lock call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAnswer {
    /// Taken or renewed: renew with this token (the filer changes it on every renewal).
    Held { renew_token: String },
    /// Someone else holds it.
    HeldBy(String),
    /// The renewal was refused: the lock expired, or the filer forgot it (a restart).
    Lost(String),
}

impl Filer {
    /// Takes (`renew_token` empty) or renews the lock `name` for `seconds`, as `owner`.
    pub(crate) async fn lock(
        &self,
        name: &str,
        seconds: i64,
        renew_token: &str,
        owner: &str,
    ) -> SeaweedResult<LockAnswer> {
        let mut client = self.client.clone();
        let request = LockRequest {
            name: name.to_string(),
            seconds_to_lock: seconds,
            renew_token: renew_token.to_string(),
            is_moved: false,
            owner: owner.to_string(),
        };
        let r = self.bounded(client.distributed_lock(request)).await?;
        if r.error.is_empty() && !r.renew_token.is_empty() {
            return Ok(LockAnswer::Held {
                renew_token: r.renew_token,
            });
        }
        // The lock manager's words (weed/cluster/lock_manager): "lock already owned by X" for
        // a new lock someone holds; "token mismatch", "non-empty token on an expired lock" or
        // "... on a new lock" for a renewal of a lock that is no longer ours.
        if r.error.contains("already owned") {
            return Ok(LockAnswer::HeldBy(r.lock_owner));
        }
        if !renew_token.is_empty() && r.error.contains("token") {
            return Ok(LockAnswer::Lost(r.error));
        }
        Err(self.unavailable(format!("lock {name}: {}", r.error)))
    }

    /// Lets go of the lock `name` (held with `renew_token`).
    pub(crate) async fn unlock(&self, name: &str, renew_token: &str) -> SeaweedResult<()> {
        let mut client = self.client.clone();
        let request = UnlockRequest {
            name: name.to_string(),
            renew_token: renew_token.to_string(),
            is_moved: false,
        };
        let r = self.bounded(client.distributed_unlock(request)).await?;
        if !r.error.is_empty() {
            return Err(self.unavailable(format!("unlock {name}: {}", r.error)));
        }
        Ok(())
    }

    /// Who holds the lock `name` now (empty: nobody, or it expired).
    pub(crate) async fn lock_owner(&self, name: &str) -> SeaweedResult<String> {
        let mut client = self.client.clone();
        let request = FindLockOwnerRequest {
            name: name.to_string(),
            is_moved: false,
        };
        match tokio::time::timeout(self.timeout, client.find_lock_owner(request)).await {
            Err(_) => Err(SeaweedError::Timeout {
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            // The filer answers "not found" for a lock nobody holds.
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => Ok(String::new()),
            Ok(Err(status)) => Err(self.unavailable(status.message().to_string())),
            Ok(Ok(r)) => Ok(r.into_inner().owner),
        }
    }

    /// Writes (or replaces) the file `directory/name` with `content`; with `exclusive`, only
    /// if it does not exist yet. Whether it was written (`false`: it existed, left as it was).
    pub(crate) async fn put_entry(
        &self,
        directory: &str,
        name: &str,
        content: Bytes,
        exclusive: bool,
    ) -> SeaweedResult<bool> {
        let mut client = self.client.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let request = CreateEntryRequest {
            directory: directory.to_string(),
            entry: Some(Entry {
                name: name.to_string(),
                is_directory: false,
                attributes: Some(FuseAttributes {
                    file_size: content.len() as u64,
                    mtime: now,
                    file_mode: 0o644,
                    crtime: now,
                }),
                content,
            }),
            o_excl: exclusive,
        };
        let r = self.bounded(client.create_entry(request)).await?;
        if exclusive && r.error.contains("already exists") {
            return Ok(false);
        }
        if !r.error.is_empty() {
            return Err(self.unavailable(format!("create {directory}/{name}: {}", r.error)));
        }
        Ok(true)
    }

    /// The files in `directory` named after `start_after` (all: empty), in name order, with
    /// their contents (up to `limit`); an absent directory has none.
    pub(crate) async fn list_entries(
        &self,
        directory: &str,
        start_after: &str,
        limit: u32,
    ) -> SeaweedResult<Vec<(String, Bytes)>> {
        let mut client = self.client.clone();
        let request = ListEntriesRequest {
            directory: directory.to_string(),
            start_from_file_name: start_after.to_string(),
            inclusive_start_from: false,
            limit,
            ..ListEntriesRequest::default()
        };
        let listed = async {
            let mut stream = client.list_entries(request).await?.into_inner();
            let mut out = Vec::new();
            while let Some(r) = stream.message().await? {
                if let Some(e) = r.entry.filter(|e| !e.is_directory) {
                    out.push((e.name, e.content));
                }
            }
            Ok::<_, tonic::Status>(out)
        };
        match tokio::time::timeout(self.timeout, listed).await {
            Err(_) => Err(SeaweedError::Timeout {
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => Ok(Vec::new()),
            Ok(Err(status)) if status.message().contains("no entry is found") => Ok(Vec::new()),
            Ok(Err(status)) => Err(self.unavailable(status.message().to_string())),
            Ok(Ok(out)) => Ok(out),
        }
    }

    /// Removes the file `directory/name` (absent: nothing to do).
    pub(crate) async fn delete_entry(&self, directory: &str, name: &str) -> SeaweedResult<()> {
        let mut client = self.client.clone();
        let request = DeleteEntryRequest {
            directory: directory.to_string(),
            name: name.to_string(),
            is_delete_data: true,
        };
        let r = self.bounded(client.delete_entry(request)).await?;
        if !r.error.is_empty() && !r.error.contains("not found") {
            return Err(self.unavailable(format!("delete {directory}/{name}: {}", r.error)));
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
