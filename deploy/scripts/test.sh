#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit, integration,
# fault, benchmark smoke). Set STRUCTD_TEST_LABEL=unit to run one kind only,
# and pass CMake options as arguments (e.g. -DSTRUCTD_SANITIZE=address).
# STRUCTD_CLANG=1 builds with clang into build-clang instead, where every
# lock annotation (ABSL_GUARDED_BY, ...) is checked (-Wthread-safety as an
# error), and runs the same tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${STRUCTD_CLANG:-}" = 1 ]; then
  export CC=clang CXX=clang++
  export STRUCTD_BUILD_DIR=${STRUCTD_BUILD_DIR:-build-clang}
fi
bash deploy/scripts/build.sh "$@"
build_dir=${STRUCTD_BUILD_DIR:-build}
label_args=()
if [ -n "${STRUCTD_TEST_LABEL:-}" ]; then label_args=(-L "$STRUCTD_TEST_LABEL"); fi
ctest --test-dir "$build_dir" --output-on-failure -j "${STRUCTD_JOBS:-2}" "${label_args[@]}"
