#!/usr/bin/env bash
# Line coverage of src/ with cargo-llvm-cov (installed on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rustup component list --installed | grep -q llvm-tools || rustup component add llvm-tools-preview
command -v cargo-llvm-cov >/dev/null || cargo install cargo-llvm-cov --locked
exec cargo llvm-cov --ignore-filename-regex '(tests|benches)/' --summary-only "$@"
