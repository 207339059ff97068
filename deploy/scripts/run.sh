#!/usr/bin/env bash
# Installs dependencies, builds, and starts the structd daemon in the
# foreground with its embedded defaults (socket and state under
# $XDG_RUNTIME_DIR/structd, /tmp/structd-UID, or /run/structd for root).
# Extra arguments go to structd, e.g. --log-level debug. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/build.sh
build_dir=${STRUCTD_BUILD_DIR:-build}
exec "$build_dir/server/structd" "$@"
