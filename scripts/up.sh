#!/usr/bin/env bash
# One command: set up and run the store on its embedded default (private PostgreSQL and NATS
# on loopback, data under ./.activity-store). Extra arguments go to `activity-store up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ ! -x target/release/activity-store ]; then
  echo "building activity-store in release mode: the first build takes about 10 minutes on 2 cores" >&2
fi
cargo build --release
exec target/release/activity-store up "$@"
