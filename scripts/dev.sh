#!/usr/bin/env bash
# Runs one local allocator replica with its data in ./hc-data:
# REST on 127.0.0.1:7380 (try `curl localhost:7380/v1/pools`), gRPC on 127.0.0.1:7381.
# Extra arguments go to hc-allocator (e.g. --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
. scripts/env.sh
cargo build -p hc-allocator -p hc-ops
exec "$CARGO_TARGET_DIR/debug/hc-allocator" --dev --data-dir hc-data "$@"
