#!/usr/bin/env bash
# One command: set up and run the store on its embedded default (private PostgreSQL and NATS
# on loopback, data under ./.activity-store). Extra arguments go to `activity-store up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
exec target/release/activity-store up "$@"
