#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need (idempotent; no-op when present).
#   libclang-dev                     bindgen for RocksDB (librocksdb-sys)
#   protobuf-compiler                protoc for the gRPC definitions in api/proto and etcd-client
#   iproute2 iptables procps         network namespaces, partitions, sysctl in the tests
#   iputils-ping tcpdump             reachability and 802.1Q tags in the datapath tests
#   user-mode-linux kmod gcc         the VLAN datapath tests run under user-mode-linux
#   etcd-server etcd-client          the peer store the benchmarks compare against
#   containernetworking-plugins      the reference CNI plugins (baseline and chaining partner)
#   podman runc busybox-static       a real container runtime calling our CNI plugin
set -euo pipefail
want=(libclang-dev protobuf-compiler iproute2 iptables procps iputils-ping tcpdump
      user-mode-linux kmod gcc etcd-server etcd-client containernetworking-plugins
      podman runc busybox-static)
need=()
for p in "${want[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
fi
