#!/usr/bin/env bash
# Configures and builds structd into ${STRUCTD_BUILD_DIR:-build}.
# Extra arguments go to the CMake configure step (e.g. -DSTRUCTD_SANITIZE=address).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/install-deps.sh
build_dir=${STRUCTD_BUILD_DIR:-build}
generator=()
if command -v ninja >/dev/null && [ ! -f "$build_dir/Makefile" ]; then generator=(-G Ninja); fi
cmake -S . -B "$build_dir" "${generator[@]}" "$@"
cmake --build "$build_dir" -j "${STRUCTD_JOBS:-2}"
