#!/usr/bin/env bash
# ovn-sandbox.sh — a local OVN test bed on one machine, all under one directory.
#
# Central: NB and SB ovsdb-server (unix sockets DIR/central/{nb,sb}.sock) and
# ovn-northd, in the host network namespace (they only speak over unix sockets).
# Nodes: each a network namespace "<prefix>-n<i>" with its own ovsdb-server,
# ovs-vswitchd (netdev datapath: no kernel module needed) and ovn-controller;
# a veth underlay into a shared Linux bridge in namespace "<prefix>-ul"; the
# node's underlay address 172.30.0.<10+i>/24 sits on the netdev bridge br-phy and
# is its ovn-encap-ip (userspace tunnelling routes through it). Geneve between
# nodes. Nothing is added to the host's own network.
#
# Usage:
#   ovn-sandbox.sh up DIR [NODES]           bring up central and NODES nodes (default 1)
#   ovn-sandbox.sh down DIR                 stop everything and delete DIR and the namespaces
#   ovn-sandbox.sh pod DIR NODE NAME IFACE_ID MAC IP/PLEN [MTU]
#                                           a netns "pod" <prefix>-<NAME> with net1 plugged
#                                           into br-int of node NODE, waits for ovn-installed
#   ovn-sandbox.sh env DIR [NODE]           print shell exports to use ovn-nbctl/ovs-vsctl here
#   ovn-sandbox.sh prefix DIR               print the namespace prefix of DIR
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "ovn-sandbox: $*" >&2; exit 1; }

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2

# Unique, short namespace prefix derived from the directory: parallel sandboxes never collide.
prefix_of() { printf 'kovn%s' "$(printf '%s' "$1" | sha1sum | cut -c1-8)"; }

ovs_schema=/usr/share/openvswitch/vswitch.ovsschema
nb_schema=/usr/share/ovn/ovn-nb.ovsschema
sb_schema=/usr/share/ovn/ovn-sb.ovsschema
underlay_mtu=1500

node_ip() { echo "172.30.0.$((10 + $1))"; }

# ovs-vsctl against node N's database.
vsctl() { local n=$1; shift; ovs-vsctl --timeout=20 --db="unix:$dir/n$n/db.sock" "$@"; }

in_node() { local n=$1; shift; ip netns exec "$P-n$n" env OVS_RUNDIR="$dir/n$n" OVN_RUNDIR="$dir/n$n" "$@"; }

start_central() {
  local c=$dir/central
  mkdir -p "$c"
  ovsdb-tool create "$c/nb.db" "$nb_schema"
  ovsdb-tool create "$c/sb.db" "$sb_schema"
  for db in nb sb; do
    ovsdb-server --detach --no-chdir -vconsole:off --pidfile="$c/$db.pid" --log-file="$c/$db.log" \
      --unixctl="$c/$db.ctl" --remote="punix:$c/$db.sock" "$c/$db.db"
  done
  ovn-nbctl --db="unix:$c/nb.sock" --timeout=20 init
  ovn-sbctl --db="unix:$c/sb.sock" --timeout=20 init
  ovn-northd --detach --no-chdir -vconsole:off --pidfile="$c/northd.pid" --log-file="$c/northd.log" \
    --unixctl="$c/northd.ctl" --ovnnb-db="unix:$c/nb.sock" --ovnsb-db="unix:$c/sb.sock"
}

start_node() {
  local n=$1 d=$dir/n$1 ns=$P-n$1 ip
  ip=$(node_ip "$n")
  mkdir -p "$d"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ovsdb-tool create "$d/conf.db" "$ovs_schema"
  in_node "$n" ovsdb-server --detach --no-chdir -vconsole:off --pidfile="$d/ovsdb-server.pid" \
    --log-file="$d/ovsdb-server.log" --unixctl="$d/ovsdb-server.ctl" \
    --remote="punix:$d/db.sock" "$d/conf.db"
  vsctl "$n" --no-wait init
  in_node "$n" ovs-vswitchd --detach --no-chdir -vconsole:off --pidfile="$d/ovs-vswitchd.pid" \
    --log-file="$d/ovs-vswitchd.log" --unixctl="$d/ovs-vswitchd.ctl" "unix:$d/db.sock"

  # Underlay: veth from the node into the shared bridge, on a netdev bridge carrying the node IP.
  ip link add ul0 netns "$ns" mtu "$underlay_mtu" type veth peer name "v$n" netns "$P-ul" mtu "$underlay_mtu"
  ip -n "$P-ul" link set "v$n" master br0 up
  ip netns exec "$ns" ethtool -K ul0 tx off >/dev/null
  ip netns exec "$P-ul" ethtool -K "v$n" tx off >/dev/null
  ip -n "$ns" link set ul0 up
  vsctl "$n" add-br br-phy -- set bridge br-phy datapath_type=netdev \
    -- add-port br-phy ul0
  ip -n "$ns" addr add "$ip/24" dev br-phy
  ip -n "$ns" link set br-phy up

  vsctl "$n" add-br br-int -- set bridge br-int datapath_type=netdev fail-mode=secure \
    other_config:disable-in-band=true
  vsctl "$n" set open_vswitch . external_ids:system-id="node$n" \
    external_ids:hostname="node$n" \
    external_ids:ovn-remote="unix:$dir/central/sb.sock" \
    external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip="$ip" \
    external_ids:ovn-bridge-datapath-type=netdev external_ids:ovn-bridge=br-int
  in_node "$n" ovn-controller --detach --no-chdir -vconsole:off --pidfile="$d/ovn-controller.pid" \
    --log-file="$d/ovn-controller.log" "unix:$d/db.sock"
}

wait_chassis() {
  local want=$1 i
  for i in $(seq 1 200); do
    [ "$(ovn-sbctl --db="unix:$dir/central/sb.sock" --bare --columns=name list chassis | grep -c .)" -ge "$want" ] && return 0
    sleep 0.1
  done
  die "only $(ovn-sbctl --db="unix:$dir/central/sb.sock" --bare --columns=name list chassis | grep -c .) of $want chassis registered"
}

cmd_up() {
  local nodes=${1:-1} n
  [ -e "$dir/prefix" ] && die "$dir already holds a sandbox; run down first"
  for t in ovsdb-server ovs-vswitchd ovn-northd ovn-controller ethtool; do
    command -v "$t" >/dev/null || die "$t not found: run hack/test.sh (or install openvswitch-switch ovn-central ovn-host ethtool)"
  done
  mkdir -p "$dir"
  echo "$P" >"$dir/prefix"
  echo "$nodes" >"$dir/nodes"
  ip netns add "$P-ul"
  ip -n "$P-ul" link add br0 type bridge
  ip -n "$P-ul" link set br0 up
  start_central
  for n in $(seq 1 "$nodes"); do start_node "$n"; done
  wait_chassis "$nodes"
}

cmd_down() {
  local f pid ns
  # Daemons first (they hold sockets in DIR), then anything left in our namespaces.
  for f in "$dir"/*/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$dir"/*/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null || continue
    # Still there after 2.5 s (a loaded machine): kill it and wait until it is gone, so
    # that `down` returning means no daemon of the sandbox runs.
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$dir"
}

cmd_pod() {
  [ $# -ge 5 ] || usage
  local n=$1 name=$2 iface_id=$3 mac=$4 addr=$5 mtu=${6:-1400}
  local ns=$P-$name host=${name:0:12}_h
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$P-n$n" link add "$host" mtu "$mtu" type veth peer name net1 netns "$ns" mtu "$mtu"
  ip netns exec "$P-n$n" ethtool -K "$host" tx off >/dev/null
  ip netns exec "$ns" ethtool -K net1 tx off >/dev/null
  ip -n "$ns" link set net1 address "$mac"
  ip -n "$ns" addr add "$addr" dev net1
  ip -n "$ns" link set net1 up
  ip -n "$P-n$n" link set "$host" up
  vsctl "$n" add-port br-int "$host" -- set interface "$host" external_ids:iface-id="$iface_id"
  vsctl "$n" wait-until interface "$host" external_ids:ovn-installed=true
}

cmd_env() {
  local P; P=$(prefix_of "$dir")
  echo "export OVN_NB_DB=unix:$dir/central/nb.sock OVN_SB_DB=unix:$dir/central/sb.sock"
  if [ $# -ge 1 ]; then
    echo "export OVS_RUNDIR=$dir/n$1 OVN_RUNDIR=$dir/n$1 DB_SOCK=unix:$dir/n$1/db.sock NETNS=$P-n$1"
  fi
}

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces)"
case $cmd in
  up)
    dir=$(realpath -m "$dir"); P=$(prefix_of "$dir")
    # A failed bring-up leaves nothing behind.
    trap 'rc=$?; [ $rc -ne 0 ] && cmd_down; exit $rc' EXIT
    cmd_up "$@"
    trap - EXIT ;;
  down) dir=$(realpath -m "$dir"); P=$(prefix_of "$dir"); cmd_down ;;
  pod) dir=$(realpath -m "$dir"); P=$(prefix_of "$dir"); cmd_pod "$@" ;;
  env) dir=$(realpath -m "$dir"); cmd_env "$@" ;;
  prefix) prefix_of "$(realpath -m "$dir")"; echo ;;
  *) usage ;;
esac
