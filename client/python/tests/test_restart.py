"""A Python client through a kill -9 of the daemon: mapped fields keep
working while it is gone, calls fail fast with Unavailable, and once it is
back the session resumes with everything it owned (the C++ library's
re-attach, seen from Python)."""

import time
import unittest

import structd
from harness import DaemonTest


class Cell(structd.Struct):
    n: structd.i64
    name: structd.string(16)


class RestartTest(DaemonTest):
    def test_the_daemon_is_killed_and_restarted_under_a_python_client(self):
        kept = self.ch.allocate(Cell)
        kept.n, kept.name = 41, "before"
        self.ch.set_root("kept", kept)
        spare = self.ch.allocate(Cell)  # owned only by this session
        spare.n = 7

        self.daemon.kill9()
        kept.field("n").fetch_add(1)  # shared memory: no daemon needed
        kept.name = "during"
        self.assertEqual((kept.n, kept.name, spare.n), (42, "during", 7))
        with self.assertRaises(structd.Unavailable):
            self.ch.get_root("kept")

        self.daemon.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                root = self.ch.get_root("kept")
                break
            except structd.Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.assertTrue(self.client.attached)
        self.assertEqual(root, kept.ref)
        again = self.ch.view(Cell, root)
        self.assertEqual((again.n, again.name), (42, "during"))
        # What the session owned before the kill it still owns.
        self.assertEqual(self.ch.view(Cell, spare.ref).n, 7)
        self.assertEqual(self.refcount(spare.ref), 1)
        spare_ref = spare.ref
        spare.release()
        self.ch.flush()
        self.wait_until(lambda: self.refcount(spare_ref) == 0, what="the spare dropped")
        with self.assertRaises(structd.NotFound):
            self.ch.view(Cell, spare_ref)
        self.assertTrue(self.daemon.structctl("check", self.channel_name).get("ok", True))


if __name__ == "__main__":
    unittest.main()
