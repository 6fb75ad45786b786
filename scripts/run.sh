#!/usr/bin/env bash
# Builds hark (release) after installing what it needs, then runs it with the given arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p hark --quiet
exec target/release/hark "$@"
