#!/usr/bin/env bash
# The HA pair's figures for BENCHMARKS.md, in the network namespaces of tests/ha_pair.rs (root):
# - VIP takeover time after `kill -9` of mailns on the node holding the VIP, and after that node
#   dies (keepalived killed, links down), median and max over HA_KILLS kills (default 20), at
#   keepalived's default advert_int 1 and at 0.1 s;
# - the relay's CPU per connection through the SMTP VIP, transparent against plain, alternating
#   rounds (HA_ROUNDS, default 3, of HA_CONNS connections, default 3000).
# Usage: bench/ha.sh [takeover|transparent]   (both when no argument)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
run() { cargo test -q --release --test ha_pair -- --ignored --nocapture --exact "$1" 2>&1 | grep -E "^(takeover|transparent|round)"; }
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%FT%TZ)"
if [ "$what" = all ] || [ "$what" = takeover ]; then
  for kill in mailns node; do
    for advert in 1 0.1; do
      HA_KILL=$kill HA_ADVERT=$advert run takeover_times
    done
  done
fi
if [ "$what" = all ] || [ "$what" = transparent ]; then
  run transparent_cost
fi
