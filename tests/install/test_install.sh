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

# The Python package, when the build has it (STRUCTD_BUILD_PYTHON): in the
# prefix's dist-packages, importable from there, with its stubs.
if compgen -G "$build/client/python/structd/_structd*.so" > /dev/null; then
  echo "== python package"
  site="$tmp/prefix/lib/python3/dist-packages"
  for f in structd/__init__.py structd/errors.py structd/__init__.pyi structd/py.typed; do
    [ -e "$site/$f" ] || { echo "missing after install: lib/python3/dist-packages/$f"; exit 1; }
  done
  python=$(sed -n 's/^_Python3_EXECUTABLE:INTERNAL=//p' "$build/CMakeCache.txt")
  (cd "$tmp" && PYTHONPATH="$site" "${python:-python3}" -c \
    'import structd, sys; assert structd.__file__.startswith(sys.argv[1]), structd.__file__; print("python ok", structd.StructType("P", [("x", "u32")]).fingerprint)' \
    "$site") | tee "$tmp/out-py"
  grep -q "python ok" "$tmp/out-py"
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
