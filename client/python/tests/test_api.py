"""The Python API on its own: types, instances, fields, refs, roots,
synchronization, behavior, and every error path with its exception."""

import asyncio
import gc
import os
import select
import threading
import time
import unittest

import structd
from harness import Daemon, DaemonTest


class Order(structd.Struct):
    price: structd.f64
    qty: structd.i64
    side: structd.u8
    flags: structd.u32
    live: structd.bool_
    symbol: structd.string(8)
    blob: structd.bytes_(4)
    levels: structd.array(structd.i32, 3)
    next: structd.ref("Order")
    lock: structd.mutex
    changed: structd.condition


class Plain(structd.Struct):
    n: structd.i64


class Big(structd.Struct):
    data: structd.bytes_(60000)


class TypesTest(DaemonTest):
    def test_same_key_and_fields_meet_and_another_layout_is_refused(self):
        first = self.ch.register(Order)
        same = [(name, text) for name, text, _, _ in Order.__structd_type__.fields]
        again = self.ch.register(structd.struct("Order", same))
        self.assertEqual(first.token, again.token)
        self.assertEqual(first.fingerprint, Order.__structd_type__.fingerprint)
        Other = structd.struct("Order", [("price", "f32")])
        with self.assertRaises(structd.FailedPrecondition) as e:
            self.ch.register(Other)
        self.assertEqual(e.exception.code, "FAILED_PRECONDITION")
        self.assertIn("differs from channel", e.exception.message)

    def test_field_texts_and_annotated_forms(self):
        import typing
        T = structd.struct("Texts", {"a": "u16", "b": "string[5]", "c": "array<f64,2>"})
        self.assertEqual([f[1] for f in T.__structd_type__.fields],
                         ["u16", "string[5]", "array<f64,2>"])

        class A(structd.Struct, key="ann.A"):
            x: typing.Annotated[int, structd.u32]
            y: typing.Annotated[str, "string[3]"]
        self.assertEqual(A.__structd_type__.key, "ann.A")
        self.assertEqual([f[1] for f in A.__structd_type__.fields], ["u32", "string[3]"])

    def test_bad_declarations_are_clear_errors(self):
        with self.assertRaises(structd.InvalidArgument) as e:
            structd.struct("Bad", [("x", "u33")])
        self.assertIn("'x'", str(e.exception))
        with self.assertRaises(TypeError):
            class Clash(structd.Struct):
                ref: structd.u32
        with self.assertRaises(TypeError):
            class Empty(structd.Struct):
                pass
        with self.assertRaises(TypeError) as e:
            Plain()
        self.assertIn("channel.allocate", str(e.exception))

    def test_join_from_another_session_and_drop(self):
        with structd.connect(socket=self.daemon.socket) as other:
            joined = other.join(self.channel_name, self.member_cap)
            self.assertEqual(joined.id, self.ch.id)
            with self.assertRaises(structd.PermissionDenied):
                other.drop_channel(self.channel_name, self.member_cap)  # owners only
        self.client.drop_channel(self.channel_name, self.owner_cap)
        with structd.connect(socket=self.daemon.socket) as late:
            with self.assertRaises(structd.NotFound):
                late.join(self.channel_name, self.member_cap)

    def test_types_lists_what_was_registered(self):
        self.ch.register(Plain)
        self.assertIn("Plain", [t.key for t in self.ch.types()])


class InstancesTest(DaemonTest):
    def test_allocate_view_retain_clone_release(self):
        o = self.ch.allocate(Order)
        self.assertTrue(o.owned)
        self.assertEqual(o.qty, 0)  # zero-filled
        o.qty = 5
        v = self.ch.view(Order, o.ref)
        self.assertFalse(v.owned)
        self.assertEqual(v.qty, 5)
        r = self.ch.retain(Order, o.ref)
        c = o.clone()
        self.ch.flush()
        # The retain is a reference of the session's own; the clone shares
        # o's (counted in this process, not by the daemon).
        self.assertEqual(self.refcount(o.ref), 2)
        r.release()
        c.release()
        self.ch.flush()
        self.assertEqual(self.refcount(o.ref), 1)
        with self.assertRaises(structd.FailedPrecondition):
            v.release()  # a view owns nothing

    def test_with_block_releases_and_later_access_is_an_error(self):
        with self.ch.allocate(Plain) as p:
            ref = p.ref
            p.n = 3
        self.assertTrue(p.released)
        with self.assertRaises(structd.FailedPrecondition) as e:
            p.n
        self.assertIn("released", e.exception.message)
        self.ch.flush()
        with self.assertRaises(structd.NotFound):
            self.ch.view(Plain, ref)  # freed (or recycled into the stock: not live)

    def test_batch_allocate_and_release(self):
        batch = self.ch.allocate_batch(Plain, 100)
        self.assertEqual(len({b.ref for b in batch}), 100)
        for i, b in enumerate(batch):
            b.n = i
        self.assertEqual(sum(b.n for b in batch), sum(range(100)))
        self.ch.release(batch)
        self.assertTrue(all(b.released for b in batch))
        retained = self.ch.retain_batch(Plain, [self.ch.allocate(Plain)])
        self.assertEqual(len(retained), 1)

    def test_bad_refs(self):
        with self.assertRaises(structd.InvalidArgument):
            self.ch.view(Order, structd.Ref(0xDEADBEEF))
        o = self.ch.allocate(Order)
        with self.assertRaises(structd.FailedPrecondition) as e:
            self.ch.view(Plain, o.ref)
        self.assertIn("not a 'Plain'", e.exception.message)
        with self.assertRaises(TypeError):
            self.ch.view(Order, "r:0:0:0")
        self.assertEqual(structd.Ref.parse(str(o.ref)), o.ref)
        with self.assertRaises(structd.InvalidArgument):
            structd.Ref.parse("nonsense")


class FieldsTest(DaemonTest):
    def setUp(self):
        super().setUp()
        self.o = self.ch.allocate(Order)

    def test_scalars_round_trip_and_are_range_checked(self):
        o = self.o
        o.price, o.qty, o.side, o.flags, o.live = 1.25, -7, 255, 2**32 - 1, True
        self.assertEqual((o.price, o.qty, o.side, o.flags, o.live), (1.25, -7, 255, 2**32 - 1, True))
        with self.assertRaises(OverflowError):
            o.side = 256
        with self.assertRaises(OverflowError):
            o.flags = -1
        with self.assertRaises(TypeError):
            o.qty = 1.5
        with self.assertRaises(TypeError):
            o.price = "1"
        self.assertEqual(o.side, 255)  # a refused store changed nothing

    def test_atomics_with_orders(self):
        qty = self.o.field("qty")
        self.assertEqual(qty.fetch_add(10, order="relaxed"), 0)
        self.assertEqual(qty.fetch_sub(3), 10)
        self.assertEqual(qty.exchange(100, order="acq_rel"), 7)
        self.assertEqual(qty.compare_exchange(1, 2), (False, 100))
        self.assertEqual(qty.compare_exchange(100, 2, order="seq_cst"), (True, 100))
        self.assertEqual(qty.load(order="acquire"), 2)
        qty.store(9, order="release")
        self.assertEqual(self.o.qty, 9)
        with self.assertRaises(ValueError):
            qty.load(order="release")
        with self.assertRaises(ValueError):
            qty.store(1, order="acquire")
        with self.assertRaises(ValueError):
            qty.load(order="sideways")
        with self.assertRaises(TypeError):
            self.o.field("price").fetch_add(1.0)

    def test_strings_bytes_arrays(self):
        o = self.o
        o.symbol = "ÄCME"  # 5 bytes of UTF-8
        self.assertEqual(o.symbol, "ÄCME")
        with self.assertRaises(structd.InvalidArgument):
            o.symbol = "123456789"
        self.assertEqual(o.symbol, "ÄCME")
        with self.assertRaises(TypeError):
            o.symbol = b"bytes"
        o.blob = b"\x00\xff"
        self.assertEqual(o.blob, b"\x00\xff")
        self.assertEqual(o.field("blob").capacity, 4)
        self.assertEqual(len(o.levels), 3)
        o.levels[0] = 5
        o.levels[-1] = -5
        self.assertEqual(o.levels.tolist(), [5, 0, -5])
        o.levels = [1, 2, 3]
        self.assertEqual(list(o.levels), [1, 2, 3])
        self.assertEqual(o.levels.at(1).fetch_add(5), 2)
        with self.assertRaises(IndexError):
            o.levels[3]
        with self.assertRaises(ValueError):
            o.levels = [1, 2]

    def test_ref_fields_copy_move_clear(self):
        a, b = self.o, self.ch.allocate(Order)
        a.next = b  # a new reference: b keeps its own
        self.ch.flush()
        self.assertEqual(a.next, b.ref)
        self.assertEqual(self.refcount(b.ref), 2)
        c = self.ch.allocate(Order)
        c_ref = c.ref
        self.ch.store(a.field("next"), c, move=True)  # c's reference moves in
        self.assertTrue(c.released)
        self.assertEqual(a.next, c_ref)
        self.assertEqual(self.refcount(b.ref), 1)  # the field released b
        self.assertEqual(self.refcount(c_ref), 1)
        a.next = None
        self.assertFalse(a.next)
        self.assertEqual(self.refcount(c_ref), 0)  # freed with the field's reference
        with self.assertRaises(TypeError):
            self.ch.store(a.field("next"), self.ch.view(Order, b.ref), move=True)
        with self.assertRaises(AttributeError):
            a.lock = 1

    def test_roots(self):
        self.ch.set_root("top", self.o)
        self.assertEqual(self.ch.get_root("top"), self.o.ref)
        self.assertEqual(self.ch.roots(), {"top": self.o.ref})
        self.ch.delete_root("top")
        with self.assertRaises(structd.NotFound):
            self.ch.get_root("top")

    def test_mutex_and_condition(self):
        o = self.o
        with o.lock:
            self.assertTrue(o.lock.held)
            with self.assertRaises(structd.FailedPrecondition):
                o.lock.acquire()  # not recursive
        self.assertFalse(o.lock.held)
        with self.assertRaises(structd.FailedPrecondition):
            o.lock.release()

        got = []

        def other_thread():
            got.append(o.lock.acquire(timeout=0.05))  # held by the main thread
            got.append(o.lock.acquire(blocking=False))
        with o.lock:
            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
        self.assertEqual(got, [False, False])

        def waiter():
            with o.lock:
                while o.qty == 0:
                    o.changed.wait(o.lock, timeout=5)
                got.append(o.qty)
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.05)
        with o.lock:
            o.qty = 42
        o.changed.notify_all()
        t.join(10)
        self.assertEqual(got[-1], 42)
        with o.lock:
            self.assertFalse(o.changed.wait(o.lock, timeout=0.01))  # timed out
        with self.assertRaises(structd.FailedPrecondition):
            o.changed.wait(o.lock)  # not held

    def test_wait_changed_and_notify(self):
        flags = self.o.field("flags")
        self.assertIsNone(flags.wait_changed(0, timeout=0.01))
        result = []
        t = threading.Thread(target=lambda: result.append(flags.wait_changed(0, timeout=10)))
        t.start()
        deadline = time.monotonic() + 10
        woke = 0
        flags.store(7)
        while woke == 0 and time.monotonic() < deadline and t.is_alive():
            woke = flags.notify_all()
            time.sleep(0.001)
        t.join(10)
        self.assertEqual(result, [7])
        with self.assertRaises(TypeError):
            self.o.field("side").wait_changed(0, timeout=0)  # one byte: not waitable


class FieldWatchTest(DaemonTest):
    """The event-loop hook: structd.FieldWatch and wait_changed_async."""

    def setUp(self):
        super().setUp()
        self.o = self.ch.allocate(Order)

    def test_a_watched_field_makes_the_descriptor_readable(self):
        flags, qty = self.o.field("flags"), self.o.field("qty")  # 4 and 8 bytes
        with structd.FieldWatch() as w:
            on_flags = w.watch(flags, 0)
            on_qty = w.watch(qty, 0)
            self.assertEqual(w.armed, 2)
            self.assertEqual(select.select([w.fd], [], [], 0.05)[0], [])

            def writer():
                time.sleep(0.02)
                qty.store(1 << 40)  # only the high half changes
                qty.notify_all()
            t = threading.Thread(target=writer)
            t.start()
            self.assertEqual(select.select([w.fd], [], [], 10)[0], [w.fd])
            t.join()
            self.assertEqual(w.take_fired(), [on_qty])
            self.assertEqual(w.armed, 1)  # one-shot
            self.assertTrue(w.unwatch(on_flags))
            self.assertFalse(w.unwatch(on_flags))
            flags.store(3)
            at_once = w.watch(flags, 0)  # differs already: fires within watch()
            self.assertEqual(w.take_fired(), [at_once])
            with self.assertRaises(TypeError):
                w.watch(self.o.field("side"), 0)  # one byte: not waitable
            with self.assertRaises(TypeError):
                w.watch(self.o.field("symbol"), "x")  # not a scalar
        with self.assertRaises(ValueError):
            w.take_fired()  # closed

    def test_wait_changed_async_waits_without_blocking_the_loop(self):
        flags, qty = self.o.field("flags"), self.o.field("qty")

        async def main():
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)
            ticking = asyncio.create_task(ticker())
            timed_out = await structd.wait_changed_async(flags, 0, timeout=0.05)
            loop = asyncio.get_running_loop()
            watches = structd._loop_watches[loop]._watches
            armed_after_timeout = sum(w.armed for w in watches)

            def writer():  # another thread, as another process would be
                time.sleep(0.05)
                flags.store(9)
                flags.notify_all()
                qty.store(-5)
                qty.notify_all()
            threading.Thread(target=writer).start()
            got = await asyncio.gather(
                structd.wait_changed_async(flags, 0, timeout=10),
                *[structd.wait_changed_async(qty, 0, timeout=10) for _ in range(3)])
            ticking.cancel()
            return timed_out, armed_after_timeout, got, ticks

        timed_out, armed_after_timeout, got, ticks = asyncio.run(main())
        self.assertIsNone(timed_out)
        self.assertEqual(armed_after_timeout, 0, "a timed-out wait left its watch armed")
        self.assertEqual(got, [9, -5, -5, -5])
        self.assertGreater(ticks, 20, "the event loop was blocked while waiting")


    def test_wait_changed_async_leaves_no_thread_behind(self):
        flags = self.o.field("flags")
        threads_before = len(os.listdir("/proc/self/task"))
        for _ in range(3):  # a loop each, as asyncio.run makes
            self.assertIsNone(asyncio.run(structd.wait_changed_async(flags, 0, timeout=0.01)))
        gc.collect()
        self.assertEqual(len(os.listdir("/proc/self/task")), threads_before,
                         "a FieldWatch thread outlived its event loop")


class BehaviorTest(DaemonTest):
    def test_bind_call_unbound_and_seal(self):
        o = self.ch.allocate(Order)
        o.price, o.qty = 2.5, 4
        with self.assertRaises(structd.UnboundMethod) as e:
            o.notional()
        self.assertIsInstance(e.exception, AttributeError)
        self.assertIn("no behavior bound for type 'Order'", e.exception.message)
        self.assertFalse(hasattr(o, "notional"))

        class Methods:
            @staticmethod
            def notional(order):
                return order.price * order.qty

            @staticmethod
            def scaled(order, k):
                return order.qty * k
        self.ch.bind(Order, Methods)
        self.assertEqual(o.notional(), 10.0)
        self.assertEqual(o.call("scaled", 3), 12)
        with self.assertRaises(structd.UnboundMethod) as e:
            o.missing()
        self.assertIn("no method 'missing'", e.exception.message)
        self.ch.bind(Order, {"notional": lambda order: -1})  # rebinding replaces
        self.assertEqual(o.notional(), -1)
        self.client.seal_bindings()
        with self.assertRaises(structd.FailedPrecondition):
            self.ch.bind(Order, Methods)


class ErrorsTest(DaemonTest):
    daemon_args = ("--max-bytes-per-channel", "8388608")

    def test_every_code_maps_to_its_documented_class(self):
        from structd import errors
        expected = {
            1: errors.Internal, 2: errors.Internal, 3: errors.InvalidArgument,
            4: errors.Timeout, 5: errors.NotFound, 6: errors.AlreadyExists,
            7: errors.PermissionDenied, 8: errors.ResourceExhausted,
            9: errors.FailedPrecondition, 10: errors.FailedPrecondition,
            11: errors.InvalidArgument, 12: errors.Internal, 13: errors.Internal,
            14: errors.Unavailable, 15: errors.Internal, 16: errors.PermissionDenied,
        }
        for code, cls in expected.items():
            self.assertIs(errors._class_for_code(code), cls, code)
            self.assertTrue(issubclass(cls, structd.Error))
        self.assertTrue(issubclass(structd.Timeout, TimeoutError))
        self.assertTrue(issubclass(structd.Unavailable, ConnectionError))
        self.assertTrue(issubclass(structd.NotFound, LookupError))
        self.assertTrue(issubclass(structd.InvalidArgument, ValueError))

    def test_real_failures_raise_their_class_with_code_and_message(self):
        cases = []

        def expect(cls, code, action):
            with self.assertRaises(cls) as e:
                action()
            self.assertEqual(e.exception.code, code)
            self.assertTrue(e.exception.message)
            cases.append(code)

        expect(structd.AlreadyExists, "ALREADY_EXISTS",
               lambda: self.client.create_channel(self.channel_name))
        other = structd.connect(socket=self.daemon.socket)
        expect(structd.PermissionDenied, "PERMISSION_DENIED",
               lambda: other.join(self.channel_name, "0" * 64))
        other.close()
        expect(structd.NotFound, "NOT_FOUND",
               lambda: self.client.join("no-such-channel", self.member_cap))
        expect(structd.InvalidArgument, "INVALID_ARGUMENT",
               lambda: self.ch.set_root("bad name with spaces/", None))
        expect(structd.ResourceExhausted, "RESOURCE_EXHAUSTED",
               lambda: self.ch.allocate_batch(Big, 200))
        expect(structd.Unavailable, "UNAVAILABLE",
               lambda: structd.connect(socket=self.daemon.socket + ".absent",
                                       connect_timeout=0.2))
        self.ch.register(Plain)
        self.ch.seal_registry()
        expect(structd.FailedPrecondition, "FAILED_PRECONDITION",
               lambda: self.ch.register(structd.struct("Late", [("x", "u8")])))
        self.client.close()
        expect(structd.FailedPrecondition, "FAILED_PRECONDITION",
               lambda: self.client.join(self.channel_name, self.member_cap))
        self.assertEqual(len(cases), 8)


class StubsTest(unittest.TestCase):
    """The .pyi editors read names every public name, and every method it
    promises on Channel, Client, Struct and the field classes exists."""

    def test_stubs_match_the_package(self):
        import ast
        import os
        path = os.path.join(os.path.dirname(structd.__file__), "__init__.pyi")
        with open(path) as f:
            tree = ast.parse(f.read())
        top, methods = set(), {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                top.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                top.update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.ImportFrom):
                top.update(a.asname or a.name for a in node.names)
            if isinstance(node, ast.ClassDef):
                methods[node.name] = {n.name for n in node.body
                                      if isinstance(n, ast.FunctionDef)}
        self.assertEqual(set(structd.__all__) - top, set(), "missing from the stubs")
        for cls_name in ("Channel", "Client", "Struct", "Scalar", "Array", "Text", "Mutex",
                         "Condition", "RefField", "Ref", "FieldWatch"):
            runtime = getattr(structd, cls_name)
            for method in methods[cls_name]:
                if method.startswith("__") and method not in ("__enter__", "__exit__"):
                    continue
                self.assertTrue(hasattr(runtime, method), f"{cls_name}.{method}")


class ConnectTest(unittest.TestCase):
    def test_default_socket_comes_from_the_environment(self):
        import os
        daemon = Daemon()
        try:
            old = os.environ.get("STRUCTD_SOCKET")
            os.environ["STRUCTD_SOCKET"] = daemon.socket
            try:
                with structd.connect() as client:
                    self.assertEqual(client.socket, daemon.socket)
                    self.assertTrue(client.attached)
                    self.assertTrue(client.session_id)
            finally:
                if old is None:
                    del os.environ["STRUCTD_SOCKET"]
                else:
                    os.environ["STRUCTD_SOCKET"] = old
        finally:
            daemon.stop()


if __name__ == "__main__":
    unittest.main()
