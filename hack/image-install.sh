#!/bin/sh
# hack/image-install.sh PACKAGE_LIST — runs inside the image's root filesystem (a Containerfile
# RUN step, or hack/image.sh's chroot) and installs the listed Debian packages, small:
# no recommends, no docs, man pages or translations, no apt lists or caches left behind.
# The same steps for both builds, so they make the same image.
set -eu
list=$1

# Package scripts must not start services: the roles start their own daemons.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d

# Never unpack docs (except licences), man pages or translations.
cat >/etc/dpkg/dpkg.cfg.d/kube-ovn-image <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No pseudo-terminal for dpkg's output: a chroot has no /dev/pts.
grep -v -e '^#' -e '^[[:space:]]*$' "$list" |
  xargs apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0
apt-get clean

# Python 3 (~45 MiB, a quarter of the image) comes with Debian's OVS/OVN packages for their
# helper scripts (ovs-tcpdump, ovn-detrace, ovs-bugtool…); the programs kube-ovn runs
# (ovsdb-server, ovs-vswitchd, ovn-controller, ovn-northd, ovsdb-tool) are C and never need it.
# Purged, and the scripts that would need it with it. dpkg then records python3 as missing, so
# apt-get inside the image refuses new packages: add them to the package list instead.
# Dependants first: their prerm cleans its byte code while python3 is still there.
purge() { # REGEX [-v EXCEPT_REGEX]
  dpkg-query -W -f='${Package}\n' | grep -E -e "$1" | grep -v -E -e "${3:-^$}" |
    xargs -r dpkg --purge --force-depends
}
purge '^python3-[a-z0-9.-]+$' -v '-minimal$'
purge '^(python3|python3\.[0-9]+|libpython3.*-stdlib|lsb-release)$'
purge '^(python3|libpython3|python3\.[0-9]+|libpython3\.[0-9]+)-minimal'
rm -rf /usr/lib/python3 /usr/lib/python3.* /usr/share/python3 /etc/python3*
for f in /usr/bin/* /usr/sbin/* /usr/share/openvswitch/scripts/* /usr/share/ovn/scripts/*; do
  [ -f "$f" ] && head -n1 "$f" | grep -q '^#!.*python' && rm -f "$f"
done
if command -v python3 >/dev/null; then echo "image-install.sh: python3 still installed" >&2; exit 1; fi

# What the base already had of the excluded paths, and what apt and dpkg leave behind.
find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/lintian/* \
  /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old \
  /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log /usr/sbin/policy-rc.d
