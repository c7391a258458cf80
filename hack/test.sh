#!/usr/bin/env bash
# hack/test.sh — the project's test command (README): installs what the tests need,
# then runs rustfmt, clippy, every test in the workspace and hack/demo.sh.
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
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# The README's main command is a test too: the user guide end to end (skipped when a
# filter was given, i.e. when running a subset of the tests).
if [ $# -eq 0 ]; then
  if hack/demo.sh; then
    echo "test result: ok. 1 passed; 0 failed; (hack/demo.sh)" >>"$log"
  else
    echo "test result: FAILED. 0 passed; 1 failed; (hack/demo.sh)" >>"$log"
    rc=1
  fi
fi
set -e
# One closing line over every test binary (cargo's last line is often a doc-test run of 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
