#!/usr/bin/env bash
# The project's test command: formatting, lints, unit/integration tests, then the interop
# matrix of real Kafka clients against the real kelp binary (scripts/interop.sh), then SASL
# logins with real clients (scripts/test-sasl.sh), then TLS on SSL and SASL_SSL listeners with
# real clients of five families, mutual TLS and certificate reload (scripts/test-tls.sh), then
# the SeaweedMQ backend against a real SeaweedFS stack (scripts/test-seaweedmq.sh; builds `weed`
# from the Go module proxy with kelp's broker patches on first use, about ten minutes), then
# the SeaweedMQ fault scenarios (scripts/test-seaweedmq-faults.sh: full stop, broker SIGKILL x3
# and SIGTERM, kelp SIGKILL), then three kelp instances as one cluster in front of one SeaweedFS
# (scripts/test-seaweedmq-cluster.sh: every client sees all three from one, a SIGKILL and a
# rolling restart during an idempotent produce with a group reading, failover time, never two
# writers of a partition).
# In CI (CI set) every interop scenario must run: a skip is an error there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh source-path=SCRIPTDIR/..
source "$ROOT/scripts/lib.sh"

banner "test: cargo fmt --check"
cargo fmt --check

banner "test: cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

banner "test: cargo test --release"
cargo test --release

banner "test: interop matrix (scripts/interop.sh)"
KELP_INTEROP_REQUIRE_ALL=${KELP_INTEROP_REQUIRE_ALL:-${CI:+1}} scripts/interop.sh

banner "test: SASL on a SASL_PLAINTEXT listener with real clients (scripts/test-sasl.sh)"
scripts/test-sasl.sh

banner "test: TLS on SSL and SASL_SSL listeners with real clients (scripts/test-tls.sh)"
scripts/test-tls.sh

banner "test: SeaweedMQ backend on a real SeaweedFS stack (scripts/test-seaweedmq.sh)"
scripts/test-seaweedmq.sh

banner "test: kelp's SeaweedFS broker patches, their Go tests (scripts/seaweedfs/test-patches.sh)"
scripts/seaweedfs/test-patches.sh

banner "test: SeaweedMQ through a full stop, broker crashes and a kelp crash (scripts/test-seaweedmq-faults.sh)"
scripts/test-seaweedmq-faults.sh

banner "test: three kelp instances as one cluster on SeaweedMQ: metadata, failover, one writer per partition (scripts/test-seaweedmq-cluster.sh)"
scripts/test-seaweedmq-cluster.sh

banner "test: all passed"
