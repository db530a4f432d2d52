#!/usr/bin/env bash
# The Docker cluster fault test (tests/docker/test_cluster_faults.py) with the repository venv.
# Skipped, not failed, when Docker is not usable.
#
#   tests/docker/run.sh [PYTEST ARGS...]
#   AIGW_BIN=/path/to/aigw tests/docker/run.sh    # default target/debug/aigw; aigw-mock next to it
#
# Build the binaries first (`cargo build --bin aigw --bin aigw-mock`) or use `make test-docker`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export AIGW_BIN="${AIGW_BIN:-target/debug/aigw}"
py="${VENV:-.venv}/bin/python"
[[ -x "$py" ]] || {
  echo "run.sh: $py not found; run \`make venv\` first" >&2
  exit 1
}
# -s: print the measured resume times as they happen; no .pytest_cache in the source tree.
exec "$py" -m pytest -q -s -ra -p no:cacheprovider tests/docker "$@"
