"""A C++ process (partner.cc) and this Python process share structs: the
same token for the same declaration, exact counter totals under concurrent
fetch_add from both, strings never torn either way, and graphs built in one
language walked in the other."""

import threading
import unittest

import structd
from harness import DaemonTest


# Field for field the STRUCTD_STRUCTs of partner.cc.
class Counter(structd.Struct):
    hits: structd.u64
    total: structd.i64


class Note(structd.Struct):
    version: structd.u32
    text: structd.string(64)


class Node(structd.Struct):
    value: structd.i64
    next: structd.ref("Node")


PY_NOTES = ("p" * 64, "q" * 33 + "1")


def whole(text):
    """What either side may have written (partner.cc's WholeNote)."""
    return (text in ("", "a" * 64, "p" * 64)
            or (len(text) == 19 and text.startswith("Z" * 17 + "-"))
            or (len(text) == 34 and text.startswith("q" * 33)))


class CrossLanguageTest(DaemonTest):
    def test_same_declaration_same_token_other_layout_refused(self):
        tokens = {t.key: t.token for t in (self.ch.register(Counter), self.ch.register(Note),
                                           self.ch.register(Node))}
        lines = self.partner("types").split()
        cpp = dict(zip(lines[0::2], lines[1::2]))
        self.assertEqual(cpp, tokens)

        class Shape(structd.Struct):  # partner.cc's Shape is (area f64, sides u32)
            sides: structd.u32
            area: structd.f64
        self.ch.register(Shape)
        out = self.partner("shape", check=False)
        self.assertIn("FAILED_PRECONDITION", out)
        self.assertIn("differs from channel", out)

    def test_counter_totals_are_exact_under_both_languages(self):
        counter = self.ch.allocate(Counter)
        self.ch.set_root("counter", counter)
        per_process, python_threads, per_thread = 200000, 2, 50000
        partners = [self.start_partner("count", "counter", str(per_process)) for _ in range(2)]
        hits, total = counter.field("hits"), counter.field("total")

        def work():
            for _ in range(per_thread):
                hits.fetch_add(1)
                total.fetch_add(2)
        threads = [threading.Thread(target=work) for _ in range(python_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in partners:
            out, _ = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, out)
        expected = 2 * per_process + python_threads * per_thread
        self.assertEqual(counter.hits, expected)
        self.assertEqual(counter.total, 2 * expected)

    def test_strings_are_never_torn_either_way(self):
        note = self.ch.allocate(Note)
        self.ch.set_root("note", note)
        # C++ writes while Python reads.
        writer = self.start_partner("write", "note", "20000")
        reads = 0
        while writer.poll() is None:
            text = note.text
            self.assertTrue(whole(text), f"torn read in Python: {text!r}")
            reads += 1
        out, _ = writer.communicate()
        self.assertEqual(writer.returncode, 0, out)
        self.assertGreater(reads, 0)
        self.assertTrue(whole(note.text))
        # Python writes while C++ reads.
        reader = self.start_partner("read", "note", "200000")
        i = 0
        while reader.poll() is None:
            note.text = PY_NOTES[i % 2]
            i += 1
        out, _ = reader.communicate()
        self.assertEqual(reader.returncode, 0, out)
        self.assertIn("read 200000 whole", out)
        self.assertGreater(i, 0)

    def test_graph_built_in_python_is_walked_in_cpp(self):
        n = 500
        head = None
        for value in range(n, 0, -1):
            node = self.ch.allocate(Node)
            node.value = value
            if head is not None:
                self.ch.store(node.field("next"), head, move=True)
            head = node
        self.ch.set_root("list", head)
        self.assertEqual(self.partner("walk", "list").strip(),
                         f"nodes {n} sum {n * (n + 1) // 2}")

    def test_graph_built_in_cpp_is_walked_in_python(self):
        n = 500
        self.assertEqual(self.partner("build", "list", str(n)).strip(), f"built {n}")
        count, total = 0, 0
        ref = self.ch.get_root("list")
        while ref:
            node = self.ch.view(Node, ref)
            count += 1
            total += node.value
            ref = node.next
        self.assertEqual((count, total), (n, n * (n + 1) // 2))
        # The partner has exited: its references went with its session, and
        # the root alone holds the list together.
        self.ch.delete_root("list")
        self.wait_until(lambda: self.instance_counts().get("Node", 0) == 0,
                        what="the list freed once its root is gone")


if __name__ == "__main__":
    unittest.main()
