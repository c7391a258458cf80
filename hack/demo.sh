#!/usr/bin/env bash
# hack/demo.sh — the user guide (shared/seed), end to end, on this machine, installed the way
# a user installs it.
#
# Starts kube-sim with two nodes (each a network namespace whose kubelet+Multus emulation gives
# pods eth0 from Debian's bridge plugin and execs /opt/cni/bin/kube-ovn for kube-ovn NADs; the
# image kube-ovn:dev runs as this build's binary, in the pod's network namespace and its
# node's mount namespace). Then does what a user does: `kube-ovn crd` and `kube-ovn render`
# piped to kubectl (the operator's Deployment and RBAC, as OLM would install them), a
# `KubeOvn` object, and a wait for Available: the operator renders OVN central, the ovs-ovn
# and kube-ovn-cni DaemonSets, and kube-sim runs them as processes. No OVN, node or operator
# process is started by hand. Then applies the guide's manifests verbatim (hack/demo/seed)
# plus the networks they name without defining (hack/demo/extra), prints every pod's
# interfaces, addresses and network-status, pings inside a VPC (must work) and across
# tenants (must fail), runs the guide's VPC NAT gateway on kube-sim's external network (SNAT,
# DNAT and FIP checked with real traffic from and to an external host), and uninstalls by deleting the KubeOvn: nothing of ours stays on the
# nodes. Exit 0 only if all of it worked. Needs root. KEEP=1 leaves everything up for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
failed=''
fail() { failed=$*; printf '\n\033[31mDEMO FAILED: %s\033[0m\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces, OVS)"
hack/install-deps.sh
export PATH=$HOME/.cargo/bin:$PATH
say "building"
cargo build -q --bin kube-ovn -p kube-ovn
cargo build -q --bin kube-sim -p kube-sim
bin=$repo/target/debug/kube-ovn
sim=$repo/target/debug/kube-sim

work=$(mktemp -d /tmp/kovn-demo.XXXX)
sim_pid=''
cleanup() {
  rc=$?
  if [ "${KEEP:-0}" = 1 ]; then
    echo "KEEP=1: left running; KUBECONFIG=$work/kubeconfig; stop with: kill $sim_pid"
    exit $rc
  fi
  [ $rc -ne 0 ] && { kubectl get kubeovn -o wide 2>&1 || true
                     kubectl get kubeovn kube-ovn -o jsonpath='{.status}' 2>&1; echo
                     kubectl get pods -n kube-system -o wide 2>&1 || true
                     for w in deployment/kube-ovn-operator statefulset/ovn-central daemonset/ovs-ovn daemonset/kube-ovn-cni; do
                       echo "--- $w log (tail)"; kubectl logs -n kube-system "$w" --tail 20 2>&1 || true; done
                     # Last, so that a log's tail (CI keeps only the end) still names what failed.
                     echo "DEMO FAILED: ${failed:-a command failed (exit $rc), see above}" >&2; }
  # Stopping kube-sim stops every process it runs.
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
# A command failing outside check (set -e) is named too.
trap '[ -n "$failed" ] || failed="line $LINENO: $BASH_COMMAND"' ERR

say "kube-sim: API server and two nodes (kube-ovn:dev runs as $bin) on an external network"
"$sim" serve --kubeconfig "$work/kubeconfig" --nodes 2 --state-dir "$work/nodes" \
  --image-map "kube-ovn:dev=$bin" --external-net 172.18.0.0 >"$work/kube-sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
export KUBECONFIG=$work/kubeconfig
for _ in $(seq 1 300); do [ "$(kubectl get nodes -o name 2>/dev/null | wc -l)" = 2 ] && break; sleep 0.1; done
kubectl get nodes -o wide

say "install: CRDs, the operator (kube-ovn render), a KubeOvn"
"$bin" crd | kubectl apply -f - >/dev/null
kubectl get crd -o name
"$bin" render --image kube-ovn:dev --no-crds --no-sample | kubectl apply -f -
kubectl rollout status -n kube-system deployment/kube-ovn-operator --timeout=120s
# The tunnel address of each node: kube-sim leaves its tunnel NIC ul1 without one (OVS
# userspace tunnelling wants the address on the bridge holding the NIC).
for i in 1 2; do kubectl annotate --overwrite node "node-$i" "kube-ovn.io/tunnel-address=172.31.1.$((9 + i))/24"; done
start=$(date +%s%N)
kubectl apply -f - <<EOF
apiVersion: operator.kubeovn.io/v1alpha1
kind: KubeOvn
metadata:
  name: kube-ovn
spec:
  nonPrimaryCNI: true
  datapath: Netdev
  tunnelInterface: ul1
  # kube-sim's external network: each node's ext0, router 172.18.0.1 (the external host).
  natGateway:
    externalNetwork:
      interface: ext0
      cidr: 172.18.0.0/24
      gateway: 172.18.0.1
      excludeIps:
      - 172.18.0.1..172.18.0.9
EOF
kubectl wait --for=condition=Available kubeovn/kube-ovn --timeout=120s
echo "KubeOvn Available after $(( ($(date +%s%N) - start) / 1000000 )) ms"
kubectl get kubeovn
kubectl get pods -n kube-system -o wide
echo "# kubectl logs -n kube-system daemonset/kube-ovn-cni --tail 3"
kubectl logs -n kube-system daemonset/kube-ovn-cni --tail 3

say "the guide's manifests, verbatim"
for f in 01-nad.yaml 02-vpc-subnet.yaml; do echo "# hack/demo/seed/$f"; kubectl apply -f "hack/demo/seed/$f"; done
kubectl apply -f hack/demo/extra/networks.yaml >/dev/null
echo "# hack/demo/extra/networks.yaml (networks the guide names without defining)"
kubectl get subnets
for f in 03-multi-network-pod.yaml 04-frontend.yaml 05-tenants.yaml; do
  echo "# hack/demo/seed/$f"; kubectl apply -f "hack/demo/seed/$f"
done
# The guide's annotation fragments (multiple providers, static IP, QoS), verbatim, in pods.
compose() { # name fragment [extra annotation line]
  { printf 'apiVersion: v1\nkind: Pod\n'; grep -v '^#' "hack/demo/seed/$2"
    [ -n "${3:-}" ] && printf '    %s\n' "$3"
    printf '  name: %s\nspec:\n  containers:\n  - name: app\n    image: nginx\n' "$1"; } | kubectl apply -f -
}
compose multi-provider-pod fragment-multi-provider.yaml
compose static-ip-pod fragment-static-ip.yaml
compose qos-pod fragment-qos.yaml 'k8s.v1.cni.cncf.io/networks: default/kube-ovn-vpc-network'
echo "# hack/demo/extra/dual-stack.yaml"
kubectl apply -f hack/demo/extra/dual-stack.yaml
echo "# hack/demo/seed/06-vpc-nat-gw.yaml"
kubectl apply -f hack/demo/seed/06-vpc-nat-gw.yaml

node_of() { kubectl get pod "$1" -o jsonpath='{.spec.nodeName}'; }
other_node() { [ "$(node_of "$1")" = node-1 ] && echo node-2 || echo node-1; }
wait_running() {
  for p in "$@"; do
    for _ in $(seq 1 600); do
      [ "$(kubectl get pod "$p" -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ] && continue 2
      sleep 0.1
    done
    kubectl get events --field-selector "involvedObject.name=$p" || true
    fail "pod $p is not Running"
  done
}
wait_running multi-network-pod frontend tenant-a-app tenant-b-app multi-provider-pod static-ip-pod qos-pod

# Second pods of each tenant, on the other node than the first: pods of one tenant talk
# across nodes, over geneve.
for t in a b; do
  kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: tenant-$t-app-2
  annotations:
    k8s.v1.cni.cncf.io/networks: default/tenant-$t-network
spec:
  nodeName: $(other_node tenant-$t-app)
  containers:
  - name: app
    image: nginx
EOF
done
wait_running tenant-a-app-2 tenant-b-app-2 dual-1 dual-2
kubectl get pods -o wide

netns_of() { # the pod's network namespace (kube-sim records its name)
  local n; n=$(kubectl get pod "$1" -o jsonpath='{.metadata.annotations.kube-sim\.dev/netns}')
  case $n in /*) echo "$n" ;; *) echo "/run/netns/$n" ;; esac
}
in_pod() { local p=$1; shift; nsenter --net="$(netns_of "$p")" "$@"; }
ip_of() { # pod provider
  kubectl get pod "$1" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['metadata']['annotations']['$2.kubernetes.io/ip_address'])"
}

say "every pod: interfaces, addresses, routes and network-status"
for p in multi-network-pod frontend tenant-a-app tenant-a-app-2 tenant-b-app tenant-b-app-2 multi-provider-pod static-ip-pod qos-pod dual-1 dual-2; do
  echo "--- $p on $(node_of "$p")"
  in_pod "$p" ip -br addr show
  in_pod "$p" ip route show
  kubectl get pod "$p" -o json | python3 -c "
import json, sys
a = json.load(sys.stdin)['metadata']['annotations']
print('network-status:', a.get('k8s.v1.cni.cncf.io/network-status'))"
done

say "checks"
check() { if "$@"; then echo "ok: ${desc}"; else fail "$desc"; fi; }
quiet() { "$@" >/dev/null 2>&1; }
addr=$(ip_of multi-network-pod kube-ovn-vpc-network.default.ovn)
desc="multi-network-pod's net1 is in 10.100.0.0/16 ($addr)"; check python3 -c "import ipaddress,sys; sys.exit(ipaddress.ip_address('$addr') not in ipaddress.ip_network('10.100.0.0/16'))"
desc="static-ip-pod has exactly 10.100.0.100"; check [ "$(ip_of static-ip-pod kube-ovn-network.default.ovn)" = 10.100.0.100 ]
desc="frontend has net1 and net2"; check in_pod frontend ip link show net2
desc="eth0 of every pod is untouched (default route via eth0)"; check sh -c "nsenter --net=$(netns_of frontend) ip route show default | grep -q 'dev eth0'"
d2=$(ip_of dual-2 dual-network.default.ovn)
desc="dual-stack pods ping each other across nodes over IPv4 (${d2%,*})"; check quiet in_pod dual-1 ping -c 3 -i 0.2 -W 2 "${d2%,*}"
desc="dual-stack pods ping each other across nodes over IPv6 (${d2#*,})"; check quiet in_pod dual-1 ping -c 3 -i 0.2 -W 2 "${d2#*,}"
desc="the dual-stack subnet's MTU 1300 is on net1"; check sh -c "nsenter --net=$(netns_of dual-1) ip link show net1 | grep -q 'mtu 1300'"
a1=$(ip_of tenant-a-app tenant-a-network.default.ovn); a2=$(ip_of tenant-a-app-2 tenant-a-network.default.ovn)
b1=$(ip_of tenant-b-app tenant-b-network.default.ovn)
desc="tenant A pods ping each other across nodes ($a1 -> $a2)"; check quiet in_pod tenant-a-app ping -c 3 -i 0.2 -W 2 "$a2"
b2=$(ip_of tenant-b-app-2 tenant-b-network.default.ovn)
desc="tenant B pods ping each other across nodes ($b1 -> $b2)"; check quiet in_pod tenant-b-app ping -c 3 -i 0.2 -W 2 "$b2"
# Give tenant A a route to tenant B through its own VPC router: the router has none onward.
in_pod tenant-a-app ip route add 10.220.0.0/24 via 10.210.0.1 dev net1
desc="tenant A reaches its VPC gateway 10.210.0.1"; check quiet in_pod tenant-a-app ping -c 2 -i 0.2 -W 2 10.210.0.1
desc="tenant A cannot reach tenant B ($a1 -> $b1)"; check sh -c "! nsenter --net=$(netns_of tenant-a-app) ping -c 3 -i 0.2 -W 1 $b1 >/dev/null"
qos_node=$(node_of qos-pod)
rate=$(ovs-vsctl --db="unix:$work/nodes/$qos_node/run-openvswitch/db.sock" --bare --columns=ingress_policing_rate find interface external_ids:pod_name=qos-pod)
desc="qos-pod's egress is policed at 1000 Mbit/s (ingress_policing_rate=$rate kbit/s)"; check [ "$rate" = 1000000 ]
say "VPC NAT gateway (hack/demo/seed/06-vpc-nat-gw.yaml) on kube-sim's external network"
retry() { for _ in $(seq 1 100); do "$@" && return 0; sleep 0.2; done; return 1; }
peer=$repo/hack/demo/tools/peer.py
gw_pod=vpc-nat-gw-vpc-nat-gw-0
node_netns() { # kube-sim names each node's network namespace on its Node object
  kubectl get node "$1" -o jsonpath='{.metadata.annotations.kube-sim\.dev/netns}'
}
ext_ns=$(node_netns node-1); ext_ns=${ext_ns%-node-1}-external
for _ in $(seq 1 600); do
  [ "$(kubectl get pod -n kube-system "$gw_pod" -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ] && break
  sleep 0.1
done
kubectl get vpc-nat-gw
kubectl get pod -n kube-system "$gw_pod" -o wide
gw_ns=$(kubectl get pod -n kube-system "$gw_pod" -o jsonpath='{.metadata.annotations.kube-sim\.dev/netns}')
case $gw_ns in /*) ;; *) gw_ns=/run/netns/$gw_ns ;; esac
in_gw() { nsenter --net="$gw_ns" "$@"; }
in_gw ip -br -4 addr show
in_gw ip rule show
desc="the gateway's LAN leg holds lanIp 10.100.0.254"; check sh -c "nsenter --net=$gw_ns ip -4 -o addr | grep -q ' 10.100.0.254/'"
desc="the gateway has an address on the external network"; check sh -c "nsenter --net=$gw_ns ip -4 -o addr | grep -q ' 172.18.0.'"
desc="the gateway keeps eth0's default route (forwarded traffic: policy routing)"; check sh -c "nsenter --net=$gw_ns ip route show default | grep -q 'dev eth0'"
nb=$(kubectl get kubeovn kube-ovn -o jsonpath='{.status.central.nbAddress}')
nbctl() { kubectl exec -n kube-system ovn-central-0 -- ovn-nbctl --db="$nb" "$@"; }
vpc_routes() { nbctl lr-route-list vpc-secondary; }
desc="the VPC routes 0.0.0.0/0 via lanIp"; check bash -c "$(declare -f nbctl vpc_routes); nb=$nb; vpc_routes | grep -q '0.0.0.0/0 .*10.100.0.254'"
gw_node=$(kubectl get pod -n kube-system "$gw_pod" -o jsonpath='{.spec.nodeName}')
[ "$gw_node" = node-1 ] && app_node=node-2 || app_node=node-1
# A VPC pod on the other node; eth0 keeps its default route, so what goes out through the
# gateway (and the replies to what comes in) is routed via net1's gateway.
kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: nat-app
  annotations:
    k8s.v1.cni.cncf.io/networks: default/kube-ovn-vpc-network
    kube-ovn-vpc-network.default.ovn.kubernetes.io/routes: '[{"dst": "172.18.0.0/24", "gw": "10.100.0.1"}, {"dst": "198.51.100.0/24", "gw": "10.100.0.1"}]'
spec:
  nodeName: $app_node
  containers:
  - name: app
    image: nginx
EOF
wait_running nat-app
app=$(ip_of nat-app kube-ovn-vpc-network.default.ovn)
eip_of() { kubectl get iptables-eip "$1" -o jsonpath='{.status.ip}'; }
ready() { [ "$(kubectl get "$1" "$2" -o jsonpath='{.status.ready}')" = true ]; }
kubectl apply -f - <<EOF
apiVersion: kubeovn.io/v1
kind: IptablesEIP
metadata:
  name: eip-snat
spec:
  natGwDp: vpc-nat-gw
---
apiVersion: kubeovn.io/v1
kind: IptablesSnatRule
metadata:
  name: snat-vpc
spec:
  eip: eip-snat
  internalCIDR: 10.100.0.0/16
EOF
desc="SNAT rule ready"; check retry ready iptables-snat-rule snat-vpc
# Two tiny TCP servers answering with the client's address: on the host beyond the router
# and in nat-app (stopped below: a process would keep the pod's namespace alive).
ip netns exec "$ext_ns" python3 "$peer" serve 198.51.100.1 9000 & servers=$!
nsenter --net="$(netns_of nat-app)" python3 "$peer" serve "$app" 80 & servers="$servers $!"
seen=$(retry in_pod nat-app python3 "$peer" ask 198.51.100.1 9000 2>/dev/null || true)
desc="nat-app ($app_node; the gateway is on $gw_node) reaches 198.51.100.1 beyond the router, which sees EIP $(eip_of eip-snat) ($seen)"; check [ "$seen" = "$(eip_of eip-snat)" ]
desc="nat-app pings 198.51.100.1 through SNAT"; check quiet in_pod nat-app ping -c 3 -i 0.2 -W 2 198.51.100.1
kubectl apply -f - <<EOF
apiVersion: kubeovn.io/v1
kind: IptablesEIP
metadata:
  name: eip-dnat
spec:
  natGwDp: vpc-nat-gw
---
apiVersion: kubeovn.io/v1
kind: IptablesDnatRule
metadata:
  name: dnat-web
spec:
  eip: eip-dnat
  externalPort: "8080"
  protocol: tcp
  internalIp: $app
  internalPort: "80"
---
apiVersion: kubeovn.io/v1
kind: IptablesEIP
metadata:
  name: eip-fip
spec:
  natGwDp: vpc-nat-gw
---
apiVersion: kubeovn.io/v1
kind: IptablesFIPRule
metadata:
  name: fip-app
spec:
  eip: eip-fip
  internalIp: $app
EOF
desc="DNAT and FIP rules ready"; check retry bash -c "$(declare -f ready); ready iptables-dnat-rule dnat-web && ready iptables-fip-rule fip-app"
dnat=$(eip_of eip-dnat); fip=$(eip_of eip-fip)
seen=$(retry ip netns exec "$ext_ns" python3 "$peer" ask "$dnat" 8080 2>/dev/null || true)
desc="the external host reaches nat-app through DNAT $dnat:8080 -> $app:80 (nat-app sees $seen)"; check [ "$seen" = 172.18.0.1 ]
seen=$(retry ip netns exec "$ext_ns" python3 "$peer" ask "$fip" 80 2>/dev/null || true)
desc="the external host reaches nat-app through FIP $fip (nat-app sees $seen)"; check [ "$seen" = 172.18.0.1 ]
desc="the external host pings the FIP $fip"; check quiet ip netns exec "$ext_ns" ping -c 3 -i 0.2 -W 2 "$fip"
kubectl get iptables-eips,iptables-snat-rules,iptables-dnat-rules,iptables-fip-rules
echo "# nft list table ip kube-ovn-nat (in the gateway pod)"
in_gw nft list table ip kube-ovn-nat
kubectl delete iptables-dnat-rule dnat-web
desc="deleting the DNAT rule cuts it"; check retry sh -c "! ip netns exec '$ext_ns' python3 '$peer' ask '$dnat' 8080 >/dev/null 2>&1"
kill $servers; wait $servers 2>/dev/null || true
kubectl delete iptables-fip-rules,iptables-snat-rules --all
kubectl delete iptables-eips --all
kubectl delete vpc-nat-gw vpc-nat-gw
desc="the VPC's default route goes with the gateway"; check retry bash -c "$(declare -f nbctl vpc_routes); nb=$nb; ! vpc_routes | grep -q '0.0.0.0/0'"
desc="the gateway's pod goes with it"; check retry sh -c "! kubectl get pod -n kube-system $gw_pod >/dev/null 2>&1"


say "OVN northbound (central runs on the nodes' host network)"
# Whole output to a file first: `nbctl show | head` under pipefail fails the demo whenever head
# exits before kubectl exec has written its last chunk (SIGPIPE), which a loaded machine does.
nbctl show >"$work/nb-show.txt"
sed -n 1,60p "$work/nb-show.txt"

say "deleting the pods frees their ports and addresses"
kubectl delete pod --all >/dev/null
for _ in $(seq 1 600); do [ -z "$(kubectl get pods -o name)" ] && break; sleep 0.1; done
left=$(nbctl --bare --columns=name list logical_switch_port | grep -c '\.default\.' || true)
desc="no pod ports left in NB ($left)"; check [ "$left" = 0 ]
say "troubleshooting, as the guide shows it: the operator's log"
kubectl logs -n kube-system deployment/kube-ovn-operator --tail 15

say "uninstall: delete the KubeOvn; nothing of ours stays on the nodes"
leftovers() { # our binary in the nodes' CNI dirs, OVS files, bridges, veths of ours
  for n in node-1 node-2; do
    ls "$work/nodes/$n/opt-cni-bin" | grep -x kube-ovn || true
    ls -A "$work/nodes/$n/run-openvswitch"
    ip netns exec "$(node_netns "$n")" ip -br link | grep -E '^(br-int|br-phy|genev_sys|ovs-|[^ @]*_[ph][@ ])' || true
  done
}
desc="before: the inventory sees the install ($(leftovers | wc -l) items)"; check [ -n "$(leftovers)" ]
start=$(date +%s%N)
kubectl delete kubeovn kube-ovn --timeout=120s
echo "uninstalled in $(( ($(date +%s%N) - start) / 1000000 )) ms"
kubectl get pods -n kube-system -o wide
left=$(leftovers | tr '\n' ' ')
desc="no kube-ovn binary, OVS file, bridge or veth left on the nodes ($left)"; check [ -z "$left" ]
desc="Vpcs and Subnets stay"; check [ -n "$(kubectl get subnets -o name)" ]

echo
echo "DEMO OK"
