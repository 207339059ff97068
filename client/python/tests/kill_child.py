"""The victim of test_kill.py: takes references and a mutex, says "ready",
then waits to be killed."""

import sys
import time

import structd
from test_kill import Guarded, Item

channel, capability = sys.argv[1], sys.argv[2]
client = structd.connect()
ch = client.join(channel, capability)
guarded = ch.view(Guarded, ch.get_root("guarded"))
shared = ch.retain(Item, ch.get_root("shared"))   # a second reference to it
mine = ch.allocate_batch(Item, 50)                # instances only this process holds
for i, item in enumerate(mine):
    item.n = i
guarded.lock.acquire()
guarded.value = -1                                # half-way through an update
ch.flush()
print("ready", flush=True)
time.sleep(600)
