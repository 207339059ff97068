#!/usr/bin/env bash
# Installs the build tree BUILD into a temp prefix and builds the consumer
# project CONSUMER against it twice: with find_package(structd) and with
# pkg-config. Each consumer must run and print "consumer ok". FLAGS (optional,
# e.g. -fsanitize=address) go to the consumer's compile and link, to match a
# sanitizer build's instrumented libraries.
set -euo pipefail
build=$1
consumer=$2
flags=${3:-}
# The consumer is not linked with cmake/tsan_default_options.cc: give it the
# same default (uninstrumented gRPC; see that file).
if [[ "$flags" == *thread* ]]; then
  export TSAN_OPTIONS="ignore_noninstrumented_modules=1 ${TSAN_OPTIONS:-}"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
for f in bin/structd bin/structctl lib/libstructd_client.a lib/libstructd_shm.a \
         lib/cmake/structd/structdConfig.cmake lib/pkgconfig/structd.pc \
         include/structd/client/client.h include/structd/shm/arena.h; do
  [ -e "$tmp/prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
if find "$tmp/prefix/include" -name '*.pb.h' | grep -q .; then
  echo "generated protobuf headers were installed"; exit 1
fi

echo "== find_package(structd)"
cmake -S "$consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" > "$tmp/configure.log"
cmake --build "$tmp/cmake-build" -j2 > "$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
"$tmp/cmake-build/consumer" | tee "$tmp/out1"
grep -q "consumer ok" "$tmp/out1"

echo "== pkg-config structd"
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
# shellcheck disable=SC2046,SC2086
g++ $flags -o "$tmp/consumer-pc" "$consumer/main.cc" $(pkg-config --cflags --libs structd)
"$tmp/consumer-pc" | tee "$tmp/out2"
grep -q "consumer ok" "$tmp/out2"
