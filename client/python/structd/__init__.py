"""structd for Python: share structs with other processes (C++ or Python).

    import structd

    class Order(structd.Struct):          # registered under the key "Order"
        price: structd.f64
        qty: structd.i64
        symbol: structd.string(8)
        next: structd.ref("Order")
        lock: structd.mutex

    client = structd.connect()            # $STRUCTD_SOCKET or the default
    ch, owner_cap, member_cap = client.create_channel("orders")
    with ch.allocate(Order) as o:         # released at the end of the block
        o.price = 101.5                   # an atomic store (release)
        o.field("qty").fetch_add(3)       # atomic read-modify-write
        ch.set_root("first", o)

The same key and fields declared in C++ (STRUCTD_STRUCT) and here give the
same layout and token. See doc/python.md for the whole API.
"""

import asyncio
import collections
import sys
import typing
import weakref

from . import errors
from ._structd import (  # noqa: F401  (re-exported)
    Array, Channel, Condition, FieldDescriptor, FieldWatch, Mutex, Ref, RefField, Scalar,
    StructType, Text, TypeInfo,
)
from ._structd import _Instance, _behavior
from ._structd import connect as _connect
from .errors import (  # noqa: F401
    AlreadyExists, Error, FailedPrecondition, Internal, InvalidArgument, NotFound,
    OwnerDied, PermissionDenied, ResourceExhausted, Timeout, UnboundMethod, Unavailable,
)


class FieldType:
    """A field's type, as written in annotations: ``structd.u32``,
    ``structd.string(16)``, ``structd.array(structd.f64, 4)``. ``text`` is
    structd's spelling (``"string[16]"``), the one C++ and structctl use."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"structd.FieldType({self.text!r})"


bool_ = FieldType("bool")
i8, i16, i32, i64 = (FieldType(t) for t in ("i8", "i16", "i32", "i64"))
u8, u16, u32, u64 = (FieldType(t) for t in ("u8", "u16", "u32", "u64"))
f32, f64 = FieldType("f32"), FieldType("f64")
anyref = FieldType("ref")
mutex = FieldType("mutex")
condition = FieldType("condition")


def string(capacity: int) -> FieldType:
    """A UTF-8 string of at most ``capacity`` bytes (reads are never torn)."""
    return FieldType(f"string[{int(capacity)}]")


def bytes_(capacity: int) -> FieldType:
    """At most ``capacity`` bytes (reads are never torn)."""
    return FieldType(f"bytes[{int(capacity)}]")


def array(element: FieldType, count: int) -> FieldType:
    """``count`` scalars of type ``element``, each accessed atomically."""
    return FieldType(f"array<{element.text},{int(count)}>")


def ref(target=None) -> FieldType:
    """A reference to another instance. The target (a Struct subclass or
    its name) documents what it points to; like C++, the channel registers
    the field untyped, so both languages meet on the same layout."""
    return FieldType("ref")


_RESERVED = {"ref", "owned", "released", "type_index", "channel", "release", "clone",
             "field", "call"}


def _field_type(owner: type, name: str, annotation) -> str:
    """The structd type text of one annotation (a FieldType, its text, an
    Annotated[...] carrying either, or a string to evaluate)."""
    if isinstance(annotation, FieldType):
        return annotation.text
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, FieldType):
            return meta.text
        if isinstance(meta, str):
            return meta
    if isinstance(annotation, str):
        # "from __future__ import annotations" leaves the source text.
        try:
            value = eval(annotation, vars(sys.modules[owner.__module__]), dict(vars(owner)))
        except Exception:
            return annotation  # structd's own spelling: "u32", "string[16]"
        return _field_type(owner, name, value)
    raise TypeError(
        f"{owner.__name__}.{name}: annotate fields with structd types "
        f"(structd.u32, structd.string(16), ...), not {annotation!r}")


class Struct(_Instance):
    """Base of struct types. Subclass it with annotated fields, in order:

        class Point(structd.Struct, key="geo.Point"):   # key defaults to the class name
            x: structd.f64
            y: structd.f64

    Instances are never constructed directly: ``channel.allocate(Point)``,
    ``channel.view(Point, ref)`` or ``channel.retain(Point, ref)``.
    Reading a field is an acquire load, assigning it a release store;
    ``instance.field(name)`` gives the field object with every atomic
    operation and memory order. Methods bound with ``channel.bind`` are
    called as ``instance.name(...)``.
    """

    __structd_type__: StructType

    def __init_subclass__(cls, key: typing.Optional[str] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        annotations = cls.__dict__.get("__annotations__", {})
        fields = []
        for name, annotation in annotations.items():
            if typing.get_origin(annotation) is typing.ClassVar or name.startswith("__"):
                continue
            if name in _RESERVED or name.startswith("_"):
                raise TypeError(f"{cls.__name__}.{name}: the name is taken by structd.Struct "
                                f"(or starts with _): rename the field")
            fields.append((name, _field_type(cls, name, annotation)))
        if not fields:
            raise TypeError(f"{cls.__name__}: a struct needs at least one annotated field")
        cls.__structd_type__ = StructType(key or cls.__name__, fields)
        for index, (name, _) in enumerate(fields):
            setattr(cls, name, FieldDescriptor(cls.__structd_type__, index))

    def field(self, name: str):
        """The field object: Scalar, Array, Text, RefField, Mutex or Condition."""
        return self._field(name)

    def call(self, method: str, *args, **kwargs):
        """Calls the method this process bound to the instance's type."""
        return _behavior(self, method)(self, *args, **kwargs)

    def __getattr__(self, name: str):
        # Only for names that are not fields or attributes: bound behavior.
        if name.startswith("__"):
            raise AttributeError(name)
        method = _behavior(self, name)
        return lambda *args, **kwargs: method(self, *args, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.owned:
            self.release()
        return False

    def __repr__(self) -> str:
        if self.released:
            return f"<{type(self).__name__} (released)>"
        kind = "owned" if self.owned else "view"
        return f"<{type(self).__name__} {self.ref} ({kind})>"


def struct(name: str, fields, key: typing.Optional[str] = None) -> type:
    """A Struct subclass from a field list: ``[("price", "f64"), ...]``, a
    dict, or FieldTypes instead of the texts."""
    items = fields.items() if isinstance(fields, dict) else fields
    annotations = {n: (t if isinstance(t, FieldType) else FieldType(t)) for n, t in items}
    return type(name, (Struct,), {"__annotations__": annotations, "__module__": __name__},
                key=key or name)


CreatedChannel = collections.namedtuple(
    "CreatedChannel", ["channel", "owner_capability", "member_capability"])


class Client:
    """A session with the daemon: one per process is enough. Close it (or
    leave its ``with`` block) to end the session; the daemon then releases
    every reference it held."""

    def __init__(self, native):
        self._native = native

    def create_channel(self, name: str) -> CreatedChannel:
        """Creates a channel and joins it as its owner."""
        return CreatedChannel(*self._native.create_channel(name))

    def join(self, channel: str, capability: str) -> Channel:
        """Joins a channel by name or id with its owner or member capability."""
        return self._native.join(channel, capability)

    def drop_channel(self, channel: str, owner_capability: str) -> None:
        self._native.drop_channel(channel, owner_capability)

    def seal_bindings(self) -> None:
        """Makes this process's behavior bindings final: later binds fail."""
        self._native.seal_bindings()

    @property
    def session_id(self) -> str:
        return self._native.session_id

    @property
    def attached(self) -> bool:
        return self._native.attached

    @property
    def socket(self) -> str:
        return self._native.socket

    def close(self) -> None:
        self._native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def connect(socket: typing.Optional[str] = None, name: typing.Optional[str] = None,
            call_timeout: float = 10.0, connect_timeout: float = 5.0,
            reconnect: bool = True) -> Client:
    """Connects to the daemon at ``socket`` (default: ``$STRUCTD_SOCKET``,
    else the daemon's default path). Raises Unavailable if none answers
    within ``connect_timeout`` seconds."""
    return Client(_connect(socket, name, call_timeout, connect_timeout, reconnect))


class _LoopWatches:
    """The FieldWatches of one asyncio event loop: each one's descriptor is
    registered with the loop (add_reader), and a fired watch resolves its
    future. A new FieldWatch is made when the others are full."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        # The loop is held weakly (it is the key of _loop_watches, whose
        # values must not keep it alive); the watches' threads stop when
        # it is collected.
        self._loop = weakref.ref(loop)
        self._watches: typing.List[FieldWatch] = []
        self._futures: typing.Dict[typing.Tuple[int, int], asyncio.Future] = {}
        weakref.finalize(loop, _close_watches, self._watches)

    def arm(self, field: Scalar, seen) -> typing.Tuple[FieldWatch, int, asyncio.Future]:
        for watch in self._watches:
            try:
                return self._arm_in(watch, field, seen)
            except ResourceExhausted:
                continue
        watch = FieldWatch()
        self._watches.append(watch)
        self._loop().add_reader(watch.fd, self._on_readable, watch)
        return self._arm_in(watch, field, seen)

    def _arm_in(self, watch: FieldWatch, field: Scalar, seen):
        future = self._loop().create_future()
        watch_id = watch.watch(field, seen)
        self._futures[(id(watch), watch_id)] = future
        # A field that already differs has fired inside watch(): the
        # reader callback resolves it on the loop's next turn.
        return watch, watch_id, future

    def disarm(self, watch: FieldWatch, watch_id: int) -> None:
        watch.unwatch(watch_id)
        self._futures.pop((id(watch), watch_id), None)

    def _on_readable(self, watch: FieldWatch) -> None:
        for watch_id in watch.take_fired():
            future = self._futures.pop((id(watch), watch_id), None)
            if future is not None and not future.done():
                future.set_result(None)


def _close_watches(watches: typing.List[FieldWatch]) -> None:
    for watch in watches:
        watch.close()


_loop_watches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWatches]" = (
    weakref.WeakKeyDictionary())


async def wait_changed_async(field: Scalar, seen, timeout: typing.Optional[float] = None):
    """The asyncio form of ``Scalar.wait_changed``: waits, without blocking
    the event loop, until ``field`` (a 4- or 8-byte Scalar field object,
    ``instance.field(name)``) no longer holds ``seen``, and returns what it
    holds; None if it still holds ``seen`` after ``timeout`` seconds.
    Writers store, then notify. Under it, one FieldWatch (one thread) per
    event loop serves up to 127 fields (a new one is made past that)."""
    loop = asyncio.get_running_loop()
    watches = _loop_watches.get(loop)
    if watches is None:
        watches = _loop_watches[loop] = _LoopWatches(loop)
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        watch, watch_id, future = watches.arm(field, seen)
        left = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            await asyncio.wait_for(future, left)
        except asyncio.TimeoutError:
            watches.disarm(watch, watch_id)
            return None
        except BaseException:
            watches.disarm(watch, watch_id)  # cancelled: nothing left armed
            raise
        now = field.load("acquire")
        if now != seen:  # else it changed back before we looked: wait again
            return now


__all__ = [
    "connect", "Client", "CreatedChannel", "Channel", "Struct", "struct", "FieldType",
    "Ref", "TypeInfo", "StructType", "Scalar", "Array", "Text", "RefField", "Mutex",
    "Condition", "bool_", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32",
    "f64", "string", "bytes_", "array", "ref", "anyref", "mutex", "condition",
    "Error", "InvalidArgument", "NotFound", "AlreadyExists", "PermissionDenied",
    "FailedPrecondition", "UnboundMethod", "ResourceExhausted", "Unavailable", "Timeout",
    "Internal", "OwnerDied", "errors", "FieldWatch", "wait_changed_async",
]
