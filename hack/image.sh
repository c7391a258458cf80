#!/usr/bin/env bash
# hack/image.sh [--tag kube-ovn:VERSION] [--out DIR] [--check] — builds the image of
# hack/Containerfile on this machine with no registry, only the Debian package source apt already
# uses here: the binary from a local `cargo build --release`, a Debian bookworm root filesystem
# from debootstrap, hack/image-packages.txt installed by hack/image-install.sh, packed with buildah
# into the local container storage, where `podman run` finds it.
# --out DIR also writes it as DIR/kube-ovn-VERSION.oci.tar (`podman load -i` that file elsewhere).
# --check then runs it with podman: kube-ovn version, the OVS/OVN programs the roles run, the
# binary's libraries; exit status 1 if any fails.
# Root only. The root filesystem is built once per package list (a tar under
# $KUBE_OVN_IMAGE_CACHE, then the image localhost/kube-ovn-rootfs:bookworm-KEY), so a second run
# only rebuilds the binary and adds it as the top layer.
set -euo pipefail
shopt -s inherit_errexit

repo=$(cd "$(dirname "$0")/.." && pwd)
suite=bookworm
cache=${KUBE_OVN_IMAGE_CACHE:-/var/cache/kube-ovn-image}
# Must agree with hack/Containerfile (tests/image_recipe.rs checks it).
entrypoint='["tini","--","kube-ovn"]'
description="Kube-OVN secondary-network mode: OVN interfaces for pods next to any primary CNI, as one operator binary"
licenses="Apache-2.0"

usage() { echo "usage: hack/image.sh [--tag NAME:TAG] [--out DIR] [--check]" >&2; exit 2; }
tag="" out="" check=false
while [ $# -gt 0 ]; do
  case $1 in
    --check) check=true; shift ;;
    --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "image.sh: needs root (debootstrap, chroot, container storage)" >&2; exit 1; }

# The tools, from Debian, if missing (as hack/install-deps.sh does); runc for --check where crun
# cannot run containers (below).
install_tools() {
  local missing=() p
  for p in debootstrap buildah podman runc binutils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "image.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# "URI SUITE" for every enabled deb source of $suite (bookworm, bookworm-updates,
# bookworm-security…) in apt's configuration, one-line .list and deb822 .sources alike, so the
# image comes from the package source this machine already uses; no host name lives in the repo.
apt_sources() {
  local dir list f
  eval "$(apt-config shell dir Dir::Etc::sourceparts/d list Dir::Etc::sourcelist/f)"
  for f in "$list" "$dir"*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }; print $i, $(i + 1) }' "$f"
  done
  for f in "$dir"*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() {
           if (types ~ /(^| )deb( |$)/ && enabled != "no")
             for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) print uris[u], suites[s]
           types = ""; enabled = ""; nu = 0; ns = 0 }
         /^[[:space:]]*$/ { flush(); next }
         /^#/ { next }
         { key = tolower($1); sub(/:$/, "", key); $1 = "" }
         key == "types" { types = $0 }
         key == "enabled" { enabled = tolower($2) }
         key == "uris" { nu = split($0, uris, " ") }
         key == "suites" { ns = split($0, suites, " ") }
         END { flush() }' "$f"
  done
}

# The installed root filesystem as a tar, built once per KEY (package list, install steps, sources).
rootfs_tar() {
  local sources=$1 key=$2 mirror tar work rootfs
  mirror=$(awk -v s="$suite" '$2 == s { print $1; exit }' <<<"$sources")
  [ -n "$mirror" ] || { echo "image.sh: apt has no source for $suite (/etc/apt/sources.list*)" >&2; exit 1; }
  tar=$cache/rootfs-$suite-$key.tar
  if [ -f "$tar" ]; then echo "$tar"; return; fi

  mkdir -p "$cache"
  work=$(mktemp -d "$cache/build.XXXXXX")
  rootfs=$work/rootfs
  # Unmount and drop the half-built tree whatever happens.
  trap 'umount -l "'"$rootfs"'/proc" 2>/dev/null || true; rm -rf "'"$work"'"' EXIT
  echo "image.sh: debootstrap $suite from $mirror" >&2
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >&2
  awk '{ print "deb", $1, $2, "main" }' <<<"$sources" >"$rootfs/etc/apt/sources.list"
  # The host's own apt settings for these sources (snapshot mirrors need Check-Valid-Until "false").
  apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
    >"$rootfs/etc/apt/apt.conf.d/99host" || true
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  cp "$repo/hack/image-packages.txt" "$repo/hack/image-install.sh" "$rootfs/tmp/"
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" sh /tmp/image-install.sh /tmp/image-packages.txt >&2
  umount "$rootfs/proc"
  # A container runtime provides resolv.conf and hostname; the host's do not belong in the image.
  rm -f "$rootfs/tmp/image-packages.txt" "$rootfs/tmp/image-install.sh" "$rootfs/etc/apt/apt.conf.d/99host"
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' -cf "$work/rootfs.tar" .
  rm -f "$cache"/rootfs-"$suite"-*.tar
  mv "$work/rootfs.tar" "$tar"
  rm -rf "$work"
  trap - EXIT
  echo "$tar"
}

install_tools
sources=$(apt_sources | awk -v s="$suite" '$2 == s || index($2, s "-") == 1' | sort -u)
key=$(cat "$repo/hack/image-packages.txt" "$repo/hack/image-install.sh" <(echo "$sources") | sha256sum | cut -c1-16)
# Two layers: the root filesystem, shared by every build of the same package list (a cluster
# pulls it once), and the binary.
base=localhost/kube-ovn-rootfs:$suite-$key
if ! podman image exists "$base"; then
  tar=$(rootfs_tar "$sources" "$key")
  echo "image.sh: packing $base"
  ctr=$(buildah from scratch)
  trap 'buildah rm "$ctr" >/dev/null' EXIT
  buildah add --quiet "$ctr" "$tar" /
  buildah commit --quiet --rm "$ctr" "$base" >/dev/null
  trap - EXIT
  # Earlier package lists' root filesystems, unless an image still builds on them.
  podman images --format '{{.Repository}}:{{.Tag}}' localhost/kube-ovn-rootfs |
    grep -vxF "$base" | xargs -r podman rmi >/dev/null 2>&1 || true
fi

echo "image.sh: cargo build --release"
(cd "$repo" && cargo build --release --bin kube-ovn)
built=${CARGO_TARGET_DIR:-$repo/target}/release/kube-ovn
version=$("$built" version | awk '{ print $2 }')
tag=${tag:-kube-ovn:$version}
# Without the release profile's line tables (140 MiB of the 170); symbols stay for backtraces.
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
objcopy --strip-debug "$built" "$bin"

echo "image.sh: packing $tag"
old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
ctr=$(buildah from --pull=never "$base")
trap 'buildah rm "$ctr" >/dev/null; rm -f "$bin"' EXIT
buildah copy --quiet "$ctr" "$bin" /usr/local/bin/kube-ovn
buildah config \
  --entrypoint "$entrypoint" --workingdir / \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --label org.opencontainers.image.title=kube-ovn \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.description="$description" \
  --label org.opencontainers.image.licenses="$licenses" \
  "$ctr"
new=$(buildah commit --quiet --rm "$ctr" "$tag")
trap - EXIT
rm -f "$bin"
# The previous build of this tag, now untagged, unless a container still uses it.
if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
if [ -n "$out" ]; then
  mkdir -p "$out"
  rm -f "$out/kube-ovn-$version.oci.tar"
  buildah push --quiet "$tag" "oci-archive:$out/kube-ovn-$version.oci.tar:$tag"
  echo "image.sh: wrote $out/kube-ovn-$version.oci.tar"
fi
echo "image.sh: built $tag ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.1f MiB", $1 / 1048576 }'))"

$check || exit 0
# What the roles need from the image, run as a user would (no network: nothing here uses it).
podman=(podman) run=(run --rm --network none)
if ! podman "${run[@]}" --entrypoint true "$tag" >/dev/null 2>&1; then
  # Where root lacks CAP_SYS_RESOURCE, podman's default limits (nofile 1048576…) are refused;
  # crun refuses hybrid cgroups with a controller on the v2 hierarchy, runc does not.
  run+=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
  ! command -v runc >/dev/null || podman+=(--runtime runc)
  if ! out=$("${podman[@]}" "${run[@]}" --entrypoint true "$tag" 2>&1); then
    echo "image.sh: podman cannot run containers here: $out" >&2; exit 1
  fi
  echo "image.sh: running with ${podman[*]} ${run[*]}"
fi
failed=0
expect() { # WHAT PATTERN PODMAN_RUN_ARGS…
  local what=$1 pattern=$2 out
  shift 2
  if out=$("${podman[@]}" "${run[@]}" "$@" 2>&1) && grep -Eq -- "$pattern" <<<"$out"; then
    echo "ok    $what: $(head -n1 <<<"$out")"
  else
    echo "FAIL  $what:"; sed 's/^/      /' <<<"$out"; failed=1
  fi
}
expect "kube-ovn version" "^kube-ovn $version( |\$)" "$tag" version
expect "ovsdb-server" "^ovsdb-server \\(Open vSwitch\\) " --entrypoint ovsdb-server "$tag" --version
expect "ovs-vswitchd" "^ovs-vswitchd \\(Open vSwitch\\) " --entrypoint ovs-vswitchd "$tag" --version
expect "ovn-northd" "^ovn-northd " --entrypoint ovn-northd "$tag" --version
expect "ovn-controller" "^ovn-controller " --entrypoint ovn-controller "$tag" --version
expect "ovn-nbctl" "^ovn-nbctl " --entrypoint ovn-nbctl "$tag" --version
expect "nft" "^nftables " --entrypoint nft "$tag" --version
# The databases the roles create, from the schemas where src/ovn/daemons.rs expects them.
expect "ovsdb-tool create" "^created$" --entrypoint sh "$tag" -ec '
  for s in /usr/share/openvswitch/vswitch.ovsschema /usr/share/ovn/ovn-nb.ovsschema \
           /usr/share/ovn/ovn-sb.ovsschema; do ovsdb-tool create /tmp/$(basename $s).db $s; done
  echo created'
# Every library resolves, glibc symbol versions included (ldd reports both as "not found").
libs=$("${podman[@]}" "${run[@]}" --entrypoint ldd "$tag" /usr/local/bin/kube-ovn 2>&1) || true
if grep -q 'libc\.so\.6 =>' <<<"$libs" && ! grep -q 'not found' <<<"$libs"; then
  echo "ok    ldd kube-ovn: $(awk '{ print $1 }' <<<"$libs" | paste -sd' ')"
else
  echo "FAIL  ldd kube-ovn:"; sed 's/^/      /' <<<"$libs"; failed=1
fi
expect "no python3" "^none$" --entrypoint sh "$tag" -c 'command -v python3 || echo none'
[ $failed = 0 ] && echo "image.sh: $tag passed its checks" || echo "image.sh: $tag FAILED its checks" >&2
exit $failed
