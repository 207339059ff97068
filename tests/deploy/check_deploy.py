#!/usr/bin/env python3
"""Checks the deployment files in deploy/: each check can fail.

  check_deploy.py --source DIR --structd PATH

- systemd: the unit keeps shared memory safe (RemoveIPC=no,
  RuntimeDirectoryPreserve=yes, ...) and `systemd-analyze verify` accepts it
  (run on a copy whose ExecStart names the built daemon) where available.
- kubernetes: every YAML document parses (schema-free); the DaemonSet has
  probes on the health service, resource requests and limits, and the
  client mounts the same host path.
- container: a multi-stage Dockerfile with a non-root runtime user; the
  compose file parses and shares one volume.
- config: every key of deploy/config/structd.toml is a documented daemon
  option (`structd --help`), and the daemon accepts the file.
"""
import argparse
import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest

import yaml

ARGS = None


def read(rel):
    with open(os.path.join(ARGS.source, rel), encoding="utf-8") as f:
        return f.read()


class SystemdUnit(unittest.TestCase):
    def unit(self):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read_string(read("deploy/systemd/structd.service"))
        return parser

    def test_shared_memory_is_never_removed_under_clients(self):
        service = self.unit()["Service"]
        self.assertEqual(service.get("RemoveIPC"), "no")
        self.assertEqual(service.get("RuntimeDirectory"), "structd")
        self.assertEqual(service.get("RuntimeDirectoryPreserve"), "yes")
        self.assertNotEqual(service.get("PrivateIPC", "no"), "yes")
        self.assertEqual(service.get("Restart"), "on-failure")
        exec_start = service.get("ExecStart")
        self.assertIn("--socket /run/structd/", exec_start)
        self.assertIn("--state-dir /run/structd/", exec_start)
        self.assertIn("/run/structd", service.get("ReadWritePaths"))
        self.assertNotEqual(service.get("User", "root"), "root")
        # Clients of other uids come in through the group (doc/security.md).
        self.assertIn("--socket-mode 0660", exec_start)
        self.assertIn("--socket-group " + service.get("Group"), exec_start)
        self.assertEqual(service.get("RuntimeDirectoryMode"), "0710")
        # Sealed memfds need the descriptor store to survive restarts.
        if "--arena-backing memfd" in exec_start:
            self.assertGreater(int(service.get("FileDescriptorStoreMax", "0")), 0)
            self.assertIn(service.get("NotifyAccess"), ("main", "all"))

    def test_systemd_analyze_verify(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            print("systemd-analyze not installed: verify not run (the key checks above still ran)")
            return
        with tempfile.TemporaryDirectory() as d:
            text = read("deploy/systemd/structd.service").replace(
                "/usr/local/bin/structd", ARGS.structd)
            path = os.path.join(d, "structd.service")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            r = subprocess.run([analyze, "verify", path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertNotIn("structd.service:", r.stdout + r.stderr)


class Kubernetes(unittest.TestCase):
    def docs(self, name):
        return [d for d in yaml.safe_load_all(read("deploy/kubernetes/" + name)) if d]

    def test_every_document_parses_with_kind_and_api_version(self):
        for name in os.listdir(os.path.join(ARGS.source, "deploy/kubernetes")):
            if name.endswith((".yaml", ".yml")):
                for doc in self.docs(name):
                    self.assertIn("apiVersion", doc, name)
                    self.assertIn("kind", doc, name)
                    self.assertIn("name", doc["metadata"], name)

    def test_daemonset_probes_resources_and_host_path(self):
        ds = next(d for d in self.docs("structd-daemonset.yaml") if d["kind"] == "DaemonSet")
        spec = ds["spec"]["template"]["spec"]
        self.assertTrue(spec["securityContext"]["runAsNonRoot"])
        # Client pods' pids must be visible to the daemon (resume after restart).
        self.assertTrue(spec["hostPID"])
        container = spec["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertEqual(container[probe]["exec"]["command"], ["structctl", "health"])
        for kind in ("requests", "limits"):
            self.assertIn("memory", container["resources"][kind])
            self.assertIn("cpu", container["resources"][kind])
        volumes = {v["name"]: v for v in spec["volumes"]}
        mount = container["volumeMounts"][0]
        self.assertEqual(mount["mountPath"], "/run/structd")
        self.assertEqual(volumes[mount["name"]]["hostPath"]["path"], "/run/structd")
        self.assertIn("/run/structd/structd.sock", container["args"])

    def test_client_mounts_the_same_host_path(self):
        dep = next(d for d in self.docs("client-deployment.yaml") if d["kind"] == "Deployment")
        spec = dep["spec"]["template"]["spec"]
        self.assertEqual(spec["volumes"][0]["hostPath"]["path"], "/run/structd")
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
        self.assertEqual(env["STRUCTD_SOCKET"], "/run/structd/structd.sock")
        ds = next(d for d in self.docs("structd-daemonset.yaml") if d["kind"] == "DaemonSet")
        daemon = ds["spec"]["template"]["spec"]["securityContext"]
        client = spec["securityContext"]
        # Clients run as their own uid, in the daemon's socket group, and
        # trust the daemon's uid explicitly.
        self.assertNotEqual(client["runAsUser"], daemon["runAsUser"])
        self.assertIn(daemon["runAsGroup"], client["supplementalGroups"])
        self.assertEqual(env["STRUCTD_DAEMON_UID"], str(daemon["runAsUser"]))
        args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertEqual(args[args.index("--socket-group") + 1], str(daemon["runAsGroup"]))
        self.assertEqual(args[args.index("--socket-mode") + 1], "0660")


class Container(unittest.TestCase):
    def test_multi_stage_non_root(self):
        text = read("deploy/container/Dockerfile")
        stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
        self.assertGreaterEqual(len(stages), 2)
        self.assertTrue(stages[0][0].startswith("debian:12"))
        self.assertTrue(stages[-1][0].startswith("debian:12-slim"))
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        self.assertTrue(users and not users[-1].startswith(("root", "0")))
        self.assertIn("COPY --from=build", text)

    def test_compose_shares_one_volume(self):
        doc = yaml.safe_load(read("deploy/container/compose.yaml"))
        mounts = [s["volumes"][0] for s in doc["services"].values()]
        self.assertEqual(len(set(mounts)), 1)
        self.assertEqual(doc["volumes"]["structd-run"]["driver_opts"]["type"], "tmpfs")


class Config(unittest.TestCase):
    def test_every_key_is_a_daemon_option_and_the_daemon_accepts_the_file(self):
        text = read("deploy/config/structd.toml")
        config = tomllib.loads(text)
        help_text = subprocess.run([ARGS.structd, "--help"], capture_output=True,
                                   text=True).stdout
        # Every option, commented out or not, is documented with its default.
        keys = set(config) | set(re.findall(r"^#\s*([a-z_]+)\s*=", text, re.M))
        self.assertGreater(len(keys), 5)
        for key in keys:
            self.assertIn("--" + key.replace("_", "-"), help_text, key)
        path = os.path.join(ARGS.source, "deploy/config/structd.toml")
        r = subprocess.run([ARGS.structd, "--config", path, "--check-config"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        effective = tomllib.loads(r.stdout)
        for key, value in config.items():
            self.assertEqual(effective[key], value, key)
        bad = subprocess.run([ARGS.structd, "--extent-size", "1000", "--check-config"],
                             capture_output=True, text=True)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("extent_size", bad.stderr)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--structd", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
