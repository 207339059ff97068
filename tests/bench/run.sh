#!/usr/bin/env bash
# Runs every structd benchmark side by side and prints one table of medians
# and ratios (each ratio measured within one program run). Installs what it
# needs (Redis, hiredis, LMDB and the build dependencies, from Debian
# packages), builds with benchmarks on, and starts and stops its own
# servers (structd, redis-server) on Unix sockets in temp dirs.
#
#   tests/bench/run.sh [REPETITIONS]      default 5; the median is used
#
# Method and the latest figures: BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-5}
build=${STRUCTD_BUILD_DIR:-build}
STRUCTD_BUILD_DIR=$build bash deploy/scripts/build.sh -DSTRUCTD_BUILD_BENCHMARKS=ON >/dev/null

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true
       --benchmark_color=false)

echo "== machine"
model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "$model, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"

for prog in shm/shm_bench tests/bench/client_bench tests/bench/compare_bench tests/bench/port_bench; do
  name=$(basename "$prog")
  echo "== $name (medians of $reps repetitions)"
  "$build/$prog" "${flags[@]}" | tee "$out/$name.txt" | grep -E '_median|^BM_' || true
done
echo "== compare_bench --scale"
"$build/tests/bench/compare_bench" --scale 1000000 16 | tee "$out/scale.txt"

echo
echo "================ summary: structd / baseline ================"
for name in shm_bench client_bench compare_bench port_bench; do
  echo "-- $name"
  sed -n '/^structd \/ baseline/,$p' "$out/$name.txt" | tail -n +2
done
echo "-- scale"
grep -E 'bytes per added instance|ratio CPU per op|ns each' "$out/scale.txt"

echo
echo "== Python field access (client/python/bench/field_bench.py, medians of $reps)"
python=$(sed -n 's/^_Python3_EXECUTABLE:INTERNAL=//p' "$build/CMakeCache.txt")
if [ -e "$build/client/python/structd/__init__.py" ] && [ -n "$python" ]; then
  PYTHONPATH="$build/client/python" "$python" client/python/bench/field_bench.py \
    "$build/server/structd" "$reps"
else
  echo "(not built: configure with -DSTRUCTD_BUILD_PYTHON=ON)"
fi
