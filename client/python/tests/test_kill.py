"""kill -9 of a Python client that holds references and a mutex: the daemon
releases exactly what it held, and the next locker is told the owner died,
holding the lock, as for a C++ client."""

import os
import signal
import subprocess
import sys
import unittest

import structd
from harness import DaemonTest


class Guarded(structd.Struct):
    lock: structd.mutex
    value: structd.i64


class Item(structd.Struct):
    n: structd.i64


class KillTest(DaemonTest):
    def test_kill_9_releases_references_and_marks_the_mutex_owner_dead(self):
        guarded = self.ch.allocate(Guarded)
        shared = self.ch.allocate(Item)
        self.ch.set_root("guarded", guarded)
        self.ch.set_root("shared", shared)
        # Ours, with the spares this process allocated ahead (Channel.allocate's
        # stock): what must be left when the child is gone.
        before = self.instance_counts()["Item"]
        here = os.path.dirname(os.path.abspath(__file__))
        child = subprocess.Popen(
            [sys.executable, os.path.join(here, "kill_child.py"), self.channel_name,
             self.member_cap], stdout=subprocess.PIPE, text=True, env=self.daemon.env())
        try:
            self.assertEqual(child.stdout.readline().strip(), "ready")
            # The child's references count: its retain, its 50 items.
            self.assertEqual(self.refcount(shared.ref), 3)  # ours, the root's, the child's
            self.assertGreaterEqual(self.instance_counts()["Item"], before + 50)
            self.assertEqual(guarded.lock.owner_pid, child.pid)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        self.wait_until(lambda: self.instance_counts().get("Item") == before,
                        what="the dead client's items released")
        self.assertEqual(self.refcount(shared.ref), 2)
        with self.assertRaises(structd.OwnerDied) as e:
            guarded.lock.acquire()
        self.assertTrue(guarded.lock.held)  # the exception leaves it held
        self.assertIs(e.exception.mutex.held, True)
        self.assertEqual(guarded.value, -1)  # the half-update is there to repair
        guarded.value = 0
        e.exception.mutex.release()
        self.assertFalse(guarded.lock.held)
        with guarded.lock:  # consistent again: no second OwnerDied
            pass
        self.assertEqual(self.daemon.structctl("check", self.channel_name).get("ok", True), True)


if __name__ == "__main__":
    unittest.main()
