#!/usr/bin/env bash
# One command: set up and run the whole test suite against real PostgreSQL and nats-server,
# which the tests start themselves on free loopback ports (or take from DATABASE_URL/NATS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test "$@"
