#!/usr/bin/env bash
# Installs dependencies, builds, and runs structd's main program.
# Until the daemon lands this is the shm demo: two processes sharing one
# struct through the shm library.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/build.sh "$@"
build_dir=${STRUCTD_BUILD_DIR:-build}
exec "$build_dir/shm/shm_demo"
