#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need (idempotent; no-op when present).
#   libclang-dev       bindgen for RocksDB (librocksdb-sys)
#   protobuf-compiler  protoc for the gRPC definitions in api/proto
#   iproute2 iptables  network namespaces and partitions in the tests
set -euo pipefail
need=()
for p in libclang-dev protobuf-compiler iproute2 iptables; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
fi
