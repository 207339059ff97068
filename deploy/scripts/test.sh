#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit, integration,
# fault, benchmark smoke). Set STRUCTD_TEST_LABEL=unit to run one kind only,
# and pass CMake options as arguments (e.g. -DSTRUCTD_SANITIZE=address).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/build.sh "$@"
build_dir=${STRUCTD_BUILD_DIR:-build}
label_args=()
if [ -n "${STRUCTD_TEST_LABEL:-}" ]; then label_args=(-L "$STRUCTD_TEST_LABEL"); fi
ctest --test-dir "$build_dir" --output-on-failure -j "${STRUCTD_JOBS:-2}" "${label_args[@]}"
