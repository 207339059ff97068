#!/usr/bin/env bash
# Regenerates the seed corpora from readable text (protoc --encode). The
# generated files are committed; run this after changing the seeds.
set -euo pipefail
cd "$(dirname "$0")"
out=corpus/fuzz_requests
rm -f "$out"/seed-*
n=0
seed() {  # seed SELECTOR MESSAGE TEXT
  n=$((n + 1))
  { printf "\\x$(printf %02x "$1")"; printf '%s' "$3" | protoc --encode="structd.v1.$2" \
      -I ../../proto ../../proto/structd/v1/registry.proto ../../proto/structd/v1/instances.proto \
      ../../proto/structd/v1/admin.proto; } > "$out/seed-$(printf %02d $n)-$2"
}
seed 0 CreateChannelRequest 'name: "g"'
seed 1 JoinChannelRequest 'channel: "f" capability: "M"'
seed 2 DropChannelRequest 'channel: "f" owner_capability: "O"'
seed 3 RegisterTypeRequest 'channel: "f" key: "K" fields { name: "a" type: "u32" } fields { name: "b" type: "ref<T0>" }'
seed 3 RegisterTypeRequest 'channel: "f" key: "N" fields { name: "v" type: "u64" }'
seed 4 DescribeTypeRequest 'channel: "f" token: "T1"'
seed 5 ListTypesRequest 'channel: "f"'
seed 6 SealRegistryRequest 'channel: "f" owner_capability: "O"'
seed 7 AllocateRequest 'channel: "f" token: "T0"'
seed 8 AllocateBatchRequest 'channel: "f" token: "T1" count: 5'
seed 9 RetainRequest 'channel: "f" refs: 0 refs: 1 refs: 5'
seed 10 ReleaseRequest 'channel: "f" refs: 2'
seed 11 StoreRefsRequest 'channel: "f" stores { target: 0 field: 1 value: 3 move: true } stores { target: 4 field: 1 value: 0 }'
seed 11 StoreRefsRequest 'channel: "f" stores { target: 3 field: 1 value: 3 }'
seed 12 SetRootRequest 'channel: "f" name: "r" ref: 1'
seed 13 GetRootRequest 'channel: "f" name: "r"'
seed 14 DeleteRootRequest 'channel: "f" name: "r"'
seed 15 ListRootsRequest 'channel: "f"'
seed 16 ListChannelsRequest ''
seed 18 ListInstancesRequest 'channel: "f" limit: 10'
seed 19 InspectInstanceRequest 'channel: "f" ref: 0 depth: 8'
seed 21 GetMemoryRequest 'channel: "f"'
seed 22 CheckArenaRequest 'channel: "f"'

# Arena patches: offset (2 bytes LE, top bit = header), length, bytes;
# offset 0xffff = a ref to resolve (8 bytes LE).
a=corpus/fuzz_arena
rm -f "$a"/seed-*
printf '\x00\x80\x04\xde\xad\xbe\xef' > "$a/seed-01-header-magic"
printf '\x08\x80\x08\xff\xff\xff\xff\xff\xff\xff\xff' > "$a/seed-02-header-extent-count"
printf '\x00\x08\x10AAAAAAAAAAAAAAAA' > "$a/seed-03-extent-bytes"
printf '\x00\x00\x40%064d' 0 > "$a/seed-04-extent-zero"
printf '\xff\xff\x00\x01\x10\x00\x00\x00\x00\x00\x00' > "$a/seed-05-probe-ref"
