#!/usr/bin/env bash
# Sets up .venv if needed, then runs a complete local federation: `fx quickstart [flags]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fx quickstart "$@"
