#!/usr/bin/env bash
# The fault scenarios of scripts/test-seaweedmq-faults.sh against stock SeaweedFS (weed built
# without kelp's patches), which loses acknowledged records and reuses offsets. Not part of
# scripts/test.sh: it checks what kelp promises on a broker it cannot fix (no record is ever
# acknowledged at an offset another record holds; a full stop is read back or refused with a
# fence naming the bug), and ARCHITECTURE.md ("SeaweedMQ backend") records what it shows.
#
#   scripts/test-seaweedmq-faults-stock.sh        (KELP_FAULTS, KELP_FAULT_RECORDS as there)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KELP_FAULTS_STOCK=1
# A fenced partition takes nothing more: fewer records keep the refused tail short.
export KELP_FAULT_RECORDS=${KELP_FAULT_RECORDS:-40000}
exec scripts/test-seaweedmq-faults.sh "$@"
