#!/usr/bin/env bash
# The demo, from a fresh clone, as root: installs what it needs, then runs `sandgate demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/provision.sh
exec node dist/cli.js demo "$@"
