#!/usr/bin/env bash
# hack/test.sh — the project's test command (README): installs what the tests need,
# then runs rustfmt, clippy and every test in the workspace.
#
# Needs root: the tests make network namespaces and run OVS/OVN daemons in them.
# Extra arguments go to `cargo test` (e.g. `hack/test.sh testbed`).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(openvswitch-switch ovn-central ovn-host iproute2 iputils-ping ethtool iperf3
  nftables containernetworking-plugins procps)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v kubectl >/dev/null || missing+=(kubectl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  # Packages only: their system services (ovs, ovn) must not start; the tests run their own.
  policy=/usr/sbin/policy-rc.d
  had_policy=false
  [ -e $policy ] && had_policy=true
  $had_policy || { printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    # kubectl may be packaged as kubernetes-client on some Debian releases.
    apt-get install -y -qq --no-install-recommends "${missing[@]/kubectl/kubernetes-client}"
  fi
  $had_policy || rm -f $policy
fi

export PATH=$HOME/.cargo/bin:$PATH
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo's last line is often a doc-test run of 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
