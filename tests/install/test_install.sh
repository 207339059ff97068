#!/usr/bin/env bash
# Installs the build tree BUILD into a temp prefix and builds the consumer
# project CONSUMER against it twice: with find_package(structd) and with
# pkg-config. Each consumer must run and print "consumer ok".
set -euo pipefail
build=$1
consumer=$2
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
cmake -S "$consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$tmp/prefix" > "$tmp/configure.log"
cmake --build "$tmp/cmake-build" -j2 > "$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
"$tmp/cmake-build/consumer" | tee "$tmp/out1"
grep -q "consumer ok" "$tmp/out1"

echo "== pkg-config structd"
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
g++ -o "$tmp/consumer-pc" "$consumer/main.cc" $(pkg-config --cflags --libs structd)
"$tmp/consumer-pc" | tee "$tmp/out2"
grep -q "consumer ok" "$tmp/out2"
