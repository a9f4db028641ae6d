#!/usr/bin/env bash
# Idle daemon footprint: starts the sandbox and `singapay-sync run` (one account), waits for the
# first pass (doorbell listener on), then samples RSS (VmRSS) and CPU time (utime+stime from /proc/PID/stat) over 30 s.
# Usage: cargo build --release && scripts/measure-idle.sh
set -euo pipefail
B="$(cd "$(dirname "$0")/.." && pwd)/target/release/singapay-sync"
D=$(mktemp -d)
trap 'kill $SB $DM 2>/dev/null || true; rm -rf "$D"' EXIT
cat > "$D/cfg.toml" <<TOML
[ledger]
path = "$D/ledger.db"
[singapay]
base_url = "http://127.0.0.1:18789"
partner_id = "sandbox-partner-id"
client_id = "sandbox-client-id"
client_secret = "sandbox-client-secret"
[sync]
schedule = "0 */5 * * * *"
[[accounts]]
id = "01K7P073Q8RE2A9PQT8Q7MXPN4"
[http]
listen = "127.0.0.1:18790"
admin_token = "0123456789abcdef0123"
[inbound]
listen = "127.0.0.1:18791"
[log]
level = "warn"
TOML
"$B" sandbox --listen 127.0.0.1:18789 >/dev/null 2>&1 & SB=$!
sleep 0.5
"$B" --config "$D/cfg.toml" run 2>/dev/null & DM=$!
sleep 1
curl -s -X POST -H "Authorization: Bearer 0123456789abcdef0123" http://127.0.0.1:18790/resync; echo
sleep 2
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$DM/stat"; }
c0=$(cpu); t0=$(date +%s.%N)
for i in 1 2 3; do sleep 10; grep VmRSS "/proc/$DM/status"; done
c1=$(cpu); t1=$(date +%s.%N)
echo "CPU over the idle window: $(echo "($c1-$c0)/$ticks" | bc -l | cut -c1-6) s in $(echo "$t1-$t0" | bc | cut -c1-5) s wall"
grep -E "VmHWM|Threads" "/proc/$DM/status"
