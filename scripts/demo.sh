#!/usr/bin/env bash
# One command for the offline demo: install, precompute cache/seam.duckdb, then start the dashboard.
# Extra arguments go to `seam demo` (e.g. --no-app, --samples 40, --port 8600).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec .venv/bin/seam demo "$@"
