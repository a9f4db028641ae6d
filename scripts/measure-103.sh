#!/usr/bin/env bash
# Times a baseline sync and no-change syncs of the 103-link sandbox with the release build.
# Usage: cargo build --release && scripts/measure-103.sh
set -euo pipefail
B="$(cd "$(dirname "$0")/.." && pwd)/target/release/singapay-sync"
D=$(mktemp -d)
trap 'kill $SB 2>/dev/null || true; rm -rf "$D"' EXIT
cat > "$D/cfg.toml" <<TOML
[ledger]
path = "$D/ledger.db"
[singapay]
base_url = "http://127.0.0.1:18788"
partner_id = "sandbox-partner-id"
client_id = "sandbox-client-id"
client_secret = "sandbox-client-secret"
[[accounts]]
id = "01K7P073Q8RE2A9PQT8Q7MXPN4"
[http]
admin_token = "0123456789abcdef0123"
[log]
level = "warn"
TOML
"$B" sandbox --listen 127.0.0.1:18788 >/dev/null 2>&1 & SB=$!
sleep 0.5
for i in 1 2 3 4 5 6; do
  /usr/bin/time -f "process wall %e s, max RSS %M KB" "$B" --config "$D/cfg.toml" sync
done
