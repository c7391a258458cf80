#!/usr/bin/env bash
# hack/bench.sh NAME — run one benchmark (benches/NAME.rs, release build).
# Each prints `BENCH NAME key=value …` lines, with its baseline measured in the
# same run and the ratio between them. Needs root where the bench uses the OVN
# test bed or network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
names=$(ls benches/*.rs 2>/dev/null | xargs -rn1 basename | sed 's/\.rs$//' | tr '\n' ' ')
if [ $# -ne 1 ] || [ ! -f "benches/$1.rs" ]; then
  echo "usage: hack/bench.sh NAME   (one of: ${names:-none yet})" >&2
  exit 2
fi
export PATH=$HOME/.cargo/bin:$PATH
exec cargo bench -q --bench "$1"
