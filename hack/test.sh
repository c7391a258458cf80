#!/usr/bin/env bash
# hack/test.sh — the project's test command (README): installs what the tests need,
# then runs rustfmt, clippy and every test in the workspace.
#
# Needs root: the tests make network namespaces and run OVS/OVN daemons in them.
# Extra arguments go to `cargo test` (e.g. `hack/test.sh testbed`).
set -euo pipefail
cd "$(dirname "$0")/.."

hack/install-deps.sh

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
