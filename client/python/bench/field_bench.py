#!/usr/bin/env python3
"""Python field access through structd, next to what a Python programmer
would otherwise use, measured in one run (medians of REPETITIONS):

  - a plain Python attribute (an object's __dict__, and __slots__),
  - multiprocessing.shared_memory with struct.unpack_from / pack_into
    (shared, but neither atomic nor typed).

    field_bench.py STRUCTD_DAEMON [REPETITIONS]

Starts its own daemon (socket in a temp dir) and prints ns per operation and
the ratio of each structd row to its baseline. tests/bench/run.sh runs it.
"""

import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import timeit
from multiprocessing import shared_memory

import structd


class Tick(structd.Struct):
    qty: structd.i64
    price: structd.f64
    symbol: structd.string(16)


class PlainTick:
    def __init__(self):
        self.qty = 0


class SlotTick:
    __slots__ = ("qty",)

    def __init__(self):
        self.qty = 0


def ns_per_op(stmt, env, reps, number=200000):
    times = [min(timeit.repeat(stmt, globals=env, number=number, repeat=3)) / number * 1e9
             for _ in range(reps)]
    return statistics.median(times)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    daemon, reps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
    tmp = tempfile.mkdtemp(prefix="structd-pybench-")
    sock = os.path.join(tmp, "s.sock")
    proc = subprocess.Popen([daemon, "--socket", sock, "--state-dir", os.path.join(tmp, "st"),
                             "--log-level", "warn"])
    shm = None
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("structd did not start")
            time.sleep(0.01)
        client = structd.connect(socket=sock)
        ch = client.create_channel("pybench").channel
        tick = ch.allocate(Tick)
        tick.symbol = "ACME"
        qty = tick.field("qty")
        plain, slots = PlainTick(), SlotTick()
        shm = shared_memory.SharedMemory(create=True, size=64)
        buf = shm.buf
        env = dict(tick=tick, qty=qty, plain=plain, slots=slots, buf=buf, struct=struct,
                   unpack=struct.Struct("<q").unpack_from, pack=struct.Struct("<q").pack_into)
        rows = [
            ("read  tick.qty (acquire load)", "tick.qty", "plain.qty", "Python attribute"),
            ("read  tick.qty", "tick.qty", "slots.qty", "__slots__ attribute"),
            ("read  tick.qty", "tick.qty", "unpack(buf, 0)[0]",
             "shared_memory + struct.unpack_from"),
            ("write tick.qty = 1 (release store)", "tick.qty = 1", "plain.qty = 1",
             "Python attribute"),
            ("write tick.qty = 1", "tick.qty = 1", "pack(buf, 0, 1)",
             "shared_memory + struct.pack_into"),
            ("qty.fetch_add(1) (seq_cst)", "qty.fetch_add(1)", "plain.qty += 1",
             "Python += (not atomic)"),
            ("qty.load() (seq_cst)", "qty.load()", "unpack(buf, 0)[0]",
             "shared_memory + struct.unpack_from"),
            ("read  tick.symbol (torn-free string)", "tick.symbol",
             "bytes(buf[8:24]).rstrip(b'\\0').decode()", "shared_memory slice + decode"),
        ]
        print(f"{'structd':42} {'ns':>7}   {'baseline':38} {'ns':>7}  ratio")
        for label, stmt, base_stmt, base_label in rows:
            a = ns_per_op(stmt, env, reps)
            b = ns_per_op(base_stmt, env, reps)
            print(f"{label:42} {a:7.1f}   {base_label:38} {b:7.1f}  {a / b:5.2f}")
        del env, buf
        tick.release()
        client.close()
    finally:
        if shm is not None:
            shm.close()
            shm.unlink()
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
