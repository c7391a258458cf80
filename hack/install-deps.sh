#!/usr/bin/env bash
# hack/install-deps.sh — installs the Debian packages the tests and the demo need, if missing,
# without starting their system services (the tests and the demo run their own daemons).
set -euo pipefail

apt_packages=(openvswitch-switch ovn-central ovn-host iproute2 iputils-ping ethtool iperf3
  nftables containernetworking-plugins procps curl busybox python3)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v kubectl >/dev/null || missing+=(kubectl)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
had_policy=false
[ -e $policy ] && had_policy=true
$had_policy || { printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; }
trap '$had_policy || rm -f '"$policy" EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  # kubectl is packaged as kubernetes-client on some Debian releases.
  apt-get install -y -qq --no-install-recommends "${missing[@]/kubectl/kubernetes-client}"
fi
