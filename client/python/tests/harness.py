"""What the Python tests share: a daemon of their own and the C++ partner.

Each test class starts one structd (socket and state directory in a fresh
temporary directory, loopback only) and stops it afterwards. The paths of
the programs come from the environment that ctest sets (see
client/python/CMakeLists.txt): STRUCTD_DAEMON, STRUCTD_CTL,
STRUCTD_PY_PARTNER.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import structd

DAEMON = os.environ.get("STRUCTD_DAEMON", "")
STRUCTCTL = os.environ.get("STRUCTD_CTL", "")
PARTNER = os.environ.get("STRUCTD_PY_PARTNER", "")


class Daemon:
    """A structd in a temporary directory; stop() ends it and removes it."""

    def __init__(self, *extra_args):
        if not DAEMON:
            raise RuntimeError("STRUCTD_DAEMON is not set (run the tests through ctest)")
        self.dir = tempfile.mkdtemp(prefix="structd-py-")
        self.socket = os.path.join(self.dir, "structd.sock")
        self.log_path = os.path.join(self.dir, "structd.log")
        self.args = [DAEMON, "--socket", self.socket, "--state-dir",
                     os.path.join(self.dir, "state"), "--extent-size", "1048576",
                     "--log-level", "warn", *extra_args]
        self.start()

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.process.poll() is not None:
                raise RuntimeError("structd exited during start-up:\n" + self.log())
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("structd did not start within 20 s")
            time.sleep(0.005)

    def kill9(self):
        """kill -9 of the daemon; start() brings it back on the same state."""
        self.process.kill()
        self.process.wait()
        os.unlink(self.socket)

    def env(self):
        return dict(os.environ, STRUCTD_SOCKET=self.socket)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def structctl(self, *args):
        """structctl --json ARGS against this daemon, parsed."""
        out = subprocess.run([STRUCTCTL, "--socket", self.socket, "--json", *args],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"structctl {' '.join(args)}: {out.stdout}{out.stderr}")
        return json.loads(out.stdout)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class DaemonTest(unittest.TestCase):
    """A daemon per test class; a client connected to it per test, and a
    channel of its own (self.ch, with self.member_cap) per test."""

    daemon_args = ()

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(*cls.daemon_args)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def setUp(self):
        self.client = structd.connect(socket=self.daemon.socket, name=self.id())
        self.channel_name = "py-" + uuid.uuid4().hex[:12]
        self.ch, self.owner_cap, self.member_cap = self.client.create_channel(self.channel_name)

    def tearDown(self):
        self.client.close()
        if sys.exc_info()[0] is not None:
            print(self.daemon.log(), file=sys.stderr)

    def partner(self, *args, check=True, timeout=120):
        """Runs the C++ partner against this test's channel; its stdout."""
        out = subprocess.run([PARTNER, args[0], self.channel_name, self.member_cap, *args[1:]],
                             capture_output=True, text=True, timeout=timeout,
                             env=self.daemon.env())
        if check and out.returncode != 0:
            self.fail(f"partner {' '.join(args)} exited {out.returncode}: "
                      f"{out.stdout}{out.stderr}")
        return out.stdout

    def start_partner(self, *args):
        return subprocess.Popen([PARTNER, args[0], self.channel_name, self.member_cap,
                                 *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=self.daemon.env())

    def instance_counts(self):
        """{type key: live instance count} in this test's channel."""
        listing = self.daemon.structctl("instances", self.channel_name, "--limit", "0")
        return {c["key"]: c["count"] for c in listing["counts"]}

    def refcount(self, ref):
        listing = self.daemon.structctl("instances", self.channel_name, "--limit", "100000")
        for entry in listing["instances"]:
            if entry["ref"] == str(ref):
                return entry["refcount"]
        return 0

    def wait_until(self, predicate, timeout=20.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)
