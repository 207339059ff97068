"""The example of doc/python.md: the C++ order book writer with the Python
analyst as one more reader."""

import os
import subprocess
import sys
import unittest

from harness import DaemonTest

ORDER_BOOK = os.environ.get("STRUCTD_ORDER_BOOK", "")
ANALYST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                       "order_book_analyst.py")


class ExampleTest(DaemonTest):
    def test_python_analyst_follows_the_cpp_writer_with_its_own_behavior(self):
        out = subprocess.run([ORDER_BOOK, "60", "--", sys.executable, ANALYST],
                             capture_output=True, text=True, timeout=120,
                             env=self.daemon.env())
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        python_lines = [l for l in out.stdout.splitlines() if l.startswith("[python analyst")]
        self.assertTrue(python_lines, out.stdout)
        # Its own behavior: the symbol the C++ writer set, and an imbalance
        # no C++ reader computes.
        self.assertIn("ACME spread", python_lines[-1])
        self.assertIn("imbalance", python_lines[-1])
        # The last update reached it (whenever it started: a slow start
        # may find the book closed already).
        self.assertIn("v60 ", python_lines[-1])
        self.assertIn("readers done", out.stdout)


if __name__ == "__main__":
    unittest.main()
