//! Whether the client's threads share cores with the broker's shards, from the broker's
//! `/metrics` (`--broker-metrics`): kelp publishes `kelp_shard_core{shard="N"} CORE` and
//! `kelp_spin_backoffs_total`. Spinning client threads on a broker's cores time-slice with its
//! shards, which shows as a latency cliff that is the setup's, not the broker's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What the broker's metrics say about its placement.
pub struct BrokerPlacement {
    pub shard_cores: Vec<usize>,
    pub spin_backoffs: Option<u64>,
}

/// Scrapes `url` (http://HOST:PORT/PATH) once.
pub fn scrape(url: &str) -> Result<BrokerPlacement, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
    let addr = host
        .parse()
        .map_err(|e| format!("{url}: {host} is not HOST:PORT ({e})"))?;
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| format!("{url}: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(parse(&body))
}

fn parse(text: &str) -> BrokerPlacement {
    let mut shard_cores = Vec::new();
    let mut spin_backoffs = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("kelp_shard_core{") {
            if let Some(core) = rest.rsplit(' ').next().and_then(|v| v.parse().ok()) {
                shard_cores.push(core);
            }
        } else if let Some(v) = line.strip_prefix("kelp_spin_backoffs_total ") {
            spin_backoffs = v.trim().parse().ok();
        }
    }
    shard_cores.sort_unstable();
    shard_cores.dedup();
    BrokerPlacement {
        shard_cores,
        spin_backoffs,
    }
}

/// The warning to print before a run, if any: spinning client threads on cores the broker's
/// shards use (`client_cores` None: unpinned, so any core).
pub fn overlap_warning(
    broker: &BrokerPlacement,
    client_cores: Option<&[usize]>,
    spinning: bool,
) -> Option<String> {
    if !spinning || broker.shard_cores.is_empty() {
        return None;
    }
    let shared: Vec<usize> = match client_cores {
        Some(cores) => broker
            .shard_cores
            .iter()
            .copied()
            .filter(|c| cores.contains(c))
            .collect(),
        None => broker.shard_cores.clone(),
    };
    if shared.is_empty() {
        return None;
    }
    let how = if client_cores.is_some() {
        "are pinned to"
    } else {
        "are not pinned and may run on"
    };
    Some(format!(
        "warning: the client's spinning threads {how} cores {shared:?}, where the broker's shards \
         run (its shards are on {:?}): they will time-slice with the broker and the latency \
         measured is partly the scheduler's. Pin the client with --core to other cores, or use \
         --no-spin.",
        broker.shard_cores
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# HELP kelp_shard_core x\n# TYPE kelp_shard_core gauge\n\
        kelp_shard_core{shard=\"0\"} 0\nkelp_shard_core{shard=\"1\"} 1\n\
        kelp_spin_backoffs_total 7\n";

    #[test]
    fn parses_the_shard_cores_and_backoffs() {
        let p = parse(METRICS);
        assert_eq!(p.shard_cores, vec![0, 1]);
        assert_eq!(p.spin_backoffs, Some(7));
        let none = parse("kelp_topics 3\n");
        assert!(none.shard_cores.is_empty());
        assert_eq!(none.spin_backoffs, None);
    }

    #[test]
    fn warns_only_for_spinning_threads_on_the_brokers_cores() {
        let p = parse(METRICS);
        assert!(overlap_warning(&p, None, true).is_some());
        assert!(overlap_warning(&p, Some(&[1]), true).is_some());
        assert!(overlap_warning(&p, Some(&[1]), false).is_none());
        let one = BrokerPlacement {
            shard_cores: vec![0],
            spin_backoffs: None,
        };
        assert!(overlap_warning(&one, Some(&[1]), true).is_none());
        assert!(overlap_warning(&one, Some(&[0, 1]), true).is_some());
    }
}
