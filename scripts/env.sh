# Sourced by the scripts: one target directory outside the checkout, so a fresh clone on the
# same machine (CI's included) reuses the slow RocksDB build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/hc-bridge-target}"
mkdir -p "$CARGO_TARGET_DIR"
