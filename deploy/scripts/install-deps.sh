#!/usr/bin/env bash
# Installs every build and test dependency of structd from Debian 12
# packages. Does nothing (and needs no network) when all are present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libabsl-dev libboost-dev libspdlog-dev libfmt-dev libssl-dev libsystemd-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libcli11-dev libtomlplusplus-dev prometheus-cpp-dev
  prometheus
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-yaml python3-dev pybind11-dev
  redis-server libhiredis-dev liblmdb-dev
  iceoryx libiceoryx-posh-dev
)
# The clang build (STRUCTD_CLANG=1 deploy/scripts/test.sh) checks the lock
# annotations; only then is clang needed.
if [ "${STRUCTD_CLANG:-}" = 1 ]; then packages+=(clang); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
