#!/usr/bin/env bash
# The test suite: system packages (scripts/setup.sh), the numpy reference reproducing the
# committed frontend fixtures, onnxruntime against tract on an exported model, then every
# Rust test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 runtime/tests/reference/logmel_reference.py --check
python3 tests/onnxruntime_parity.py
cargo test --workspace --locked
