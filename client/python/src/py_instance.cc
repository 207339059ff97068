#include "client/python/src/py_instance.h"

#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "client/python/src/py_status.h"
#include "structd/shm/field_wait.h"
#include "structd/shm/field_watch.h"

namespace py = pybind11;

namespace structd::python {
namespace {

using shm::FieldKind;

// ---- Values ----

std::string FieldLabel(const shm::Field& f) {
  return absl::StrCat("field '", f.name(), "' (", shm::FieldTypeName(f.spec), ")");
}

// Calls f(T{}) with T the C++ type of scalar kind `kind`.
template <typename F>
decltype(auto) VisitScalar(FieldKind kind, F&& f) {
  switch (kind) {
    case FieldKind::kBool: return f(bool{});
    case FieldKind::kI8: return f(int8_t{});
    case FieldKind::kI16: return f(int16_t{});
    case FieldKind::kI32: return f(int32_t{});
    case FieldKind::kI64: return f(int64_t{});
    case FieldKind::kU8: return f(uint8_t{});
    case FieldKind::kU16: return f(uint16_t{});
    case FieldKind::kU32: return f(uint32_t{});
    case FieldKind::kU64: return f(uint64_t{});
    case FieldKind::kF32: return f(float{});
    case FieldKind::kF64: return f(double{});
    default: throw py::type_error("not a scalar field");
  }
}

bool IsScalar(FieldKind kind) {
  return kind >= FieldKind::kBool && kind <= FieldKind::kF64;
}

// A Python number as T, or TypeError / OverflowError naming the field.
template <typename T>
T FromPy(py::handle v, const shm::Field& field) {
  // The label is built on the error paths only: this is every field store.
  auto label = [&] { return FieldLabel(field); };
  PyObject* o = v.ptr();
  if constexpr (std::is_same_v<T, bool>) {
    if (!PyBool_Check(o) && !PyLong_Check(o)) {
      throw py::type_error(absl::StrCat(label(), " takes a bool, not ",
                                        std::string(py::str(v.get_type().attr("__name__")))));
    }
    int truth = PyObject_IsTrue(o);
    if (truth < 0) throw py::error_already_set();
    return truth != 0;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!PyFloat_Check(o) && !PyLong_Check(o)) {
      throw py::type_error(absl::StrCat(label(), " takes a float or an int, not ",
                                        std::string(py::str(v.get_type().attr("__name__")))));
    }
    double d = PyFloat_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return static_cast<T>(d);
  } else {
    if (!PyLong_Check(o)) {
      throw py::type_error(absl::StrCat(label(), " takes an int, not ",
                                        std::string(py::str(v.get_type().attr("__name__")))));
    }
    if constexpr (std::is_signed_v<T>) {
      int overflow = 0;
      long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
      if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
      if (overflow == 0 && x >= std::numeric_limits<T>::min() &&
          x <= std::numeric_limits<T>::max()) {
        return static_cast<T>(x);
      }
    } else {
      unsigned long long x = PyLong_AsUnsignedLongLong(o);
      if (!(x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) &&
          x <= std::numeric_limits<T>::max()) {
        return static_cast<T>(x);
      }
      PyErr_Clear();
    }
    PyErr_SetString(PyExc_OverflowError,
                    absl::StrCat(label(), ": ", std::string(py::str(v)), " is out of range ",
                                 std::to_string(+std::numeric_limits<T>::min()), "..",
                                 std::to_string(+std::numeric_limits<T>::max()))
                        .c_str());
    throw py::error_already_set();
  }
}

template <typename T>
py::object ToPy(T v) {
  if constexpr (std::is_same_v<T, bool>) {
    return py::bool_(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    return py::float_(static_cast<double>(v));
  } else {
    return py::int_(v);
  }
}

std::memory_order ParseOrder(const std::string& name, bool load, bool store) {
  std::memory_order order;
  if (name == "relaxed") {
    order = std::memory_order_relaxed;
  } else if (name == "acquire") {
    order = std::memory_order_acquire;
  } else if (name == "release") {
    order = std::memory_order_release;
  } else if (name == "acq_rel") {
    order = std::memory_order_acq_rel;
  } else if (name == "seq_cst") {
    order = std::memory_order_seq_cst;
  } else {
    throw py::value_error(absl::StrCat("memory order '", name,
                                       "': use relaxed, acquire, release, acq_rel or seq_cst"));
  }
  // The C++ rules: a load is never release, a store never acquire.
  bool bad_load = load && !store &&
                  (order == std::memory_order_release || order == std::memory_order_acq_rel);
  bool bad_store = store && !load &&
                   (order == std::memory_order_acquire || order == std::memory_order_acq_rel);
  if (bad_load || bad_store) {
    throw py::value_error(absl::StrCat("memory order '", name, "' is not allowed for a ",
                                       load ? "load" : "store",
                                       " (C++ rules: loads relaxed/acquire/seq_cst, stores "
                                       "relaxed/release/seq_cst)"));
  }
  return order;
}

std::chrono::nanoseconds Timeout(const py::object& seconds) {
  if (seconds.is_none()) return shm::kWaitForever;
  double s = seconds.cast<double>();
  if (std::isnan(s)) throw py::value_error("timeout is NaN");
  if (s <= 0) return std::chrono::nanoseconds(0);
  if (s > 1e9) return shm::kWaitForever;
  return std::chrono::nanoseconds(static_cast<int64_t>(s * 1e9));
}

// ---- Fields ----

// Where a field object points: the owning instance object (kept alive), the
// field (in an interned DynamicStruct: lives forever), and its bytes.
struct FieldPlace {
  py::object instance;
  const shm::Field* field;
  uint8_t* address;

  std::string label() const { return FieldLabel(*field); }
};

FieldPlace PlaceOf(py::handle instance_object, size_t index) {
  PyInstance& inst = instance_object.cast<PyInstance&>();
  const DynamicView& v = inst.view();
  return {py::reinterpret_borrow<py::object>(instance_object), &v.field(index),
          v.field_address(index)};
}

// A scalar field or one array element.
class PyScalar {
 public:
  PyScalar(FieldPlace place, FieldKind kind, uint8_t* address)
      : place_(std::move(place)), kind_(kind), address_(address) {}

  py::object Load(const std::string& order) const {
    std::memory_order o = ParseOrder(order, true, false);
    return VisitScalar(kind_, [&](auto t) -> py::object {
      using T = decltype(t);
      return ToPy(shm::Scalar<T>(address_).load(o));
    });
  }
  void Store(py::handle value, const std::string& order) {
    std::memory_order o = ParseOrder(order, false, true);
    VisitScalar(kind_, [&](auto t) {
      using T = decltype(t);
      shm::Scalar<T>(address_).store(FromPy<T>(value, *place_.field), o);
    });
  }
  py::object Exchange(py::handle value, const std::string& order) {
    std::memory_order o = ParseOrder(order, true, true);
    return VisitScalar(kind_, [&](auto t) -> py::object {
      using T = decltype(t);
      return ToPy(shm::Scalar<T>(address_).exchange(FromPy<T>(value, *place_.field), o));
    });
  }
  // (True, expected) if it held `expected` and now holds `desired`, else
  // (False, what it holds).
  py::tuple CompareExchange(py::handle expected, py::handle desired, const std::string& order) {
    std::memory_order o = ParseOrder(order, true, true);
    return VisitScalar(kind_, [&](auto t) -> py::tuple {
      using T = decltype(t);
      T e = FromPy<T>(expected, *place_.field);
      bool ok = shm::Scalar<T>(address_).compare_exchange(e, FromPy<T>(desired, *place_.field),
                                                          o);
      return py::make_tuple(ok, ToPy(e));
    });
  }
  py::object FetchAdd(py::handle delta, const std::string& order, bool subtract) {
    std::memory_order o = ParseOrder(order, true, true);
    return VisitScalar(kind_, [&](auto t) -> py::object {
      using T = decltype(t);
      if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        shm::Scalar<T> s(address_);
        T d = FromPy<T>(delta, *place_.field);
        return ToPy(subtract ? s.fetch_sub(d, o) : s.fetch_add(d, o));
      } else {
        throw py::type_error(
            absl::StrCat(place_.label(), ": fetch_add/fetch_sub need an integer field"));
      }
    });
  }
  // The new value, or None after `timeout` seconds with `seen` still there.
  py::object WaitChanged(py::handle seen, const py::object& timeout) const {
    std::chrono::nanoseconds t = Timeout(timeout);
    return VisitScalar(kind_, [&](auto tag) -> py::object {
      using T = decltype(tag);
      if constexpr (sizeof(T) == 4 || sizeof(T) == 8) {
        T s = FromPy<T>(seen, *place_.field);
        absl::StatusOr<T> now;
        {
          py::gil_scoped_release nogil;
          now = shm::Scalar<T>(address_).WaitChanged(s, t);
        }
        if (absl::IsDeadlineExceeded(now.status())) return py::none();
        return ToPy(Unwrap(std::move(now)));
      } else {
        throw py::type_error(absl::StrCat(place_.label(),
                                          ": wait_changed needs a 4- or 8-byte field"));
      }
    });
  }
  // Arms a one-shot watch of this field in `watch` (shm::FieldWatch).
  uint64_t WatchWith(shm::FieldWatch& watch, py::handle seen) const {
    return VisitScalar(kind_, [&](auto tag) -> uint64_t {
      using T = decltype(tag);
      if constexpr (sizeof(T) == 4 || sizeof(T) == 8) {
        return Unwrap(watch.Watch(shm::Scalar<T>(address_), FromPy<T>(seen, *place_.field)));
      } else {
        throw py::type_error(absl::StrCat(place_.label(), ": watch needs a 4- or 8-byte field"));
      }
    });
  }
  int Notify(int count) const {
    return VisitScalar(kind_, [&](auto tag) -> int {
      using T = decltype(tag);
      if constexpr (sizeof(T) == 4 || sizeof(T) == 8) {
        return shm::Scalar<T>(address_).Notify(count);
      } else {
        throw py::type_error(absl::StrCat(place_.label(), ": notify needs a 4- or 8-byte field"));
      }
    });
  }
  std::string Repr() const {
    return absl::StrCat("<structd.Scalar ", place_.label(), " = ",
                        std::string(py::repr(Load("acquire"))), ">");
  }

 private:
  FieldPlace place_;
  FieldKind kind_;
  uint8_t* address_;
};

// structd.FieldWatch: shm::FieldWatch, keeping each watched field object
// (and so its instance and mapping) alive until its watch fires or is
// unwatched. Thread safety: called with the GIL held; the watch's own
// thread never touches Python.
class PyFieldWatch {
 public:
  PyFieldWatch() : watch_(Unwrap(shm::FieldWatch::Create())) {}
  int fd() const { return Watch().fd(); }
  uint64_t Arm(py::object field, py::handle seen) {
    if (!py::isinstance<PyScalar>(field)) {
      throw py::type_error("FieldWatch.watch: pass a Scalar field object (instance.field(name))");
    }
    uint64_t id = field.cast<const PyScalar&>().WatchWith(Watch(), seen);
    keep_[id] = std::move(field);
    return id;
  }
  bool Unwatch(uint64_t id) {
    bool was = Watch().Unwatch(id);
    keep_.erase(id);
    return was;
  }
  std::vector<uint64_t> TakeFired() {
    std::vector<uint64_t> fired = Watch().TakeFired();
    for (uint64_t id : fired) keep_.erase(id);
    return fired;
  }
  size_t armed() const { return watch_ ? watch_->armed() : 0; }
  // Stops the thread and closes the descriptor; later calls raise.
  void Close() {
    // Taken out under the GIL, so another thread's call finds it closed
    // rather than half destroyed.
    std::unique_ptr<shm::FieldWatch> closing = std::move(watch_);
    {
      py::gil_scoped_release nogil;  // the thread may be finishing a wake-up
      closing.reset();
    }
    keep_.clear();
  }

 private:
  shm::FieldWatch& Watch() const {
    if (!watch_) throw py::value_error("FieldWatch: closed");
    return *watch_;
  }
  std::unique_ptr<shm::FieldWatch> watch_;
  std::map<uint64_t, py::object> keep_;
};

class PyArray {
 public:
  explicit PyArray(FieldPlace place) : place_(std::move(place)) {}
  uint32_t size() const { return place_.field->spec.count; }
  PyScalar At(int64_t i) const {
    int64_t n = size();
    if (i < 0) i += n;
    if (i < 0 || i >= n) {
      throw py::index_error(absl::StrCat(place_.label(), ": index ", i, " out of range (size ",
                                         n, ")"));
    }
    FieldKind element = place_.field->spec.element;
    uint32_t width = VisitScalar(element, [](auto t) { return uint32_t{sizeof(t)}; });
    return PyScalar(place_, element, place_.address + static_cast<uint64_t>(i) * width);
  }
  py::list ToList() const {
    py::list out;
    for (uint32_t i = 0; i < size(); ++i) out.append(At(i).Load("acquire"));
    return out;
  }
  void Assign(py::handle values) {
    py::sequence seq = py::reinterpret_borrow<py::sequence>(values);
    if (!py::isinstance<py::sequence>(values) || py::len(seq) != size()) {
      throw py::value_error(absl::StrCat(place_.label(), " takes a sequence of exactly ", size(),
                                         " values"));
    }
    for (uint32_t i = 0; i < size(); ++i) At(i).Store(seq[i], "release");
  }
  std::string Repr() const {
    return absl::StrCat("<structd.Array ", place_.label(), " = ",
                        std::string(py::repr(ToList())), ">");
  }

 private:
  FieldPlace place_;
};

// string[N] and bytes[N]: torn-free reads, whole-value writes.
class PyText {
 public:
  explicit PyText(FieldPlace place) : place_(std::move(place)) {}
  bool is_string() const { return place_.field->kind() == FieldKind::kString; }
  uint32_t capacity() const { return place_.field->spec.count; }
  py::object Read() const {
    std::string value;
    Check(field().Read(value));
    if (!is_string()) return py::bytes(value);
    // surrogateescape: bytes another language wrote that are not UTF-8
    // survive a read and a write back unchanged.
    PyObject* s = PyUnicode_DecodeUTF8(value.data(), static_cast<Py_ssize_t>(value.size()),
                                       "surrogateescape");
    if (s == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(s);
  }
  void Write(py::handle value) {
    std::string bytes;
    if (is_string()) {
      if (!PyUnicode_Check(value.ptr())) {
        throw py::type_error(absl::StrCat(place_.label(), " takes a str"));
      }
      PyObject* b = PyUnicode_AsEncodedString(value.ptr(), "utf-8", "surrogateescape");
      if (b == nullptr) throw py::error_already_set();
      bytes = std::string(py::reinterpret_steal<py::bytes>(b));
    } else {
      if (!PyBytes_Check(value.ptr()) && !PyByteArray_Check(value.ptr()) &&
          !PyMemoryView_Check(value.ptr())) {
        throw py::type_error(absl::StrCat(place_.label(), " takes bytes"));
      }
      bytes = std::string(py::bytes(py::reinterpret_borrow<py::object>(value)));
    }
    absl::Status s;
    {
      // Write waits while another live writer holds the field.
      py::gil_scoped_release nogil;
      s = field().Write(bytes);
    }
    Check(s);
  }

 private:
  shm::BytesField field() const { return shm::BytesField(place_.address, capacity()); }
  FieldPlace place_;
};

// A ref field: read here, stored through Channel.store.
class PyRefField {
 public:
  PyRefField(FieldPlace place, uint32_t index) : place_(std::move(place)), index_(index) {}
  shm::Ref Load() const { return shm::RefField(place_.address).load(); }
  const FieldPlace& place() const { return place_; }
  uint32_t index() const { return index_; }
  const PyInstance& instance() const { return place_.instance.cast<const PyInstance&>(); }
  client::RefTo<client::StructView> Target() const {
    return instance().view().ref_field(index_);
  }

 private:
  FieldPlace place_;
  uint32_t index_;
};

// The mutexes this thread holds, by address. Robust mutexes belong to a
// thread, so the guard lives with the thread, not with a Python object:
// any Mutex object for the same field finds it. A thread that ends holding
// one unlocks it (the guard's destructor).
std::unordered_map<const void*, shm::MutexGuard>& HeldMutexes() {
  thread_local std::unordered_map<const void*, shm::MutexGuard> held;
  return held;
}

class PyMutex {
 public:
  explicit PyMutex(FieldPlace place) : place_(std::move(place)) {}

  // True once locked; False after `timeout` seconds (None: no limit).
  // Raises OwnerDied, with the lock held, if the last holder died holding it.
  bool Acquire(py::object self, const py::object& timeout, bool blocking = true) {
    if (held()) {
      ThrowStatus(absl::FailedPreconditionError(absl::StrCat(
          place_.label(), ": this thread already holds it (structd mutexes are not recursive)")));
    }
    const bool forever = timeout.is_none();
    const std::chrono::nanoseconds limit = forever ? shm::kWaitForever : Timeout(timeout);
    absl::StatusOr<shm::MutexGuard> guard;
    {
      py::gil_scoped_release nogil;
      shm::MutexField m(place_.address);
      if (!blocking) {
        guard = m.TryLock();
      } else if (forever) {
        guard = m.Lock();
      } else {
        guard = m.LockFor(limit);
      }
    }
    if (!blocking && absl::IsUnavailable(guard.status())) return false;
    if (absl::IsDeadlineExceeded(guard.status())) return false;
    shm::MutexGuard g = Unwrap(std::move(guard));
    bool died = g.owner_died();
    HeldMutexes()[place_.address] = std::move(g);
    if (died) {
      ThrowOwnerDied(absl::StrCat(place_.label(),
                                  ": its last holder died holding it; this thread holds it now "
                                  "and the data it guards may be half-updated: repair it, then "
                                  "release the mutex"),
                     std::move(self));
    }
    return true;
  }
  void Release() {
    auto& held = HeldMutexes();
    auto it = held.find(place_.address);
    if (it == held.end()) {
      ThrowStatus(absl::FailedPreconditionError(
          absl::StrCat(place_.label(), ": release by a thread that does not hold it")));
    }
    held.erase(it);  // the guard unlocks
  }
  bool held() const { return HeldMutexes().count(place_.address) != 0; }
  uint32_t owner_pid() const { return shm::MutexField(place_.address).owner_pid(); }
  const void* address() const { return place_.address; }
  std::string label() const { return place_.label(); }

 private:
  FieldPlace place_;
};

class PyCondition {
 public:
  explicit PyCondition(FieldPlace place) : place_(std::move(place)) {}
  // Unlocks `mutex` (held by this thread), sleeps until notified or
  // `timeout` seconds pass, relocks. True if woken, False on timeout.
  bool Wait(py::object mutex_object, const py::object& timeout) {
    PyMutex& mutex = mutex_object.cast<PyMutex&>();
    auto& held = HeldMutexes();
    auto it = held.find(mutex.address());
    if (it == held.end()) {
      ThrowStatus(absl::FailedPreconditionError(
          absl::StrCat(place_.label(), ": wait needs ", mutex.label(),
                       " held by this thread (acquire it first)")));
    }
    shm::MutexGuard& guard = it->second;
    const bool forever = timeout.is_none();
    const std::chrono::nanoseconds limit = forever ? shm::kWaitForever : Timeout(timeout);
    absl::StatusOr<bool> woken;
    {
      py::gil_scoped_release nogil;
      shm::ConditionField c(place_.address);
      if (forever) {
        absl::Status s = c.Wait(guard);
        woken = s.ok() ? absl::StatusOr<bool>(true) : absl::StatusOr<bool>(s);
      } else {
        woken = c.WaitOnceFor(guard, limit);
      }
    }
    bool result = Unwrap(std::move(woken));
    if (guard.owner_died()) {
      ThrowOwnerDied(absl::StrCat(mutex.label(),
                                  ": its last holder died holding it while this thread waited; "
                                  "this thread holds it now: repair the data, then release it"),
                     mutex_object);
    }
    return result;
  }
  int Notify(int count) { return shm::ConditionField(place_.address).Notify(count); }
  int NotifyAll() { return shm::ConditionField(place_.address).NotifyAll(); }

 private:
  FieldPlace place_;
};

// The reference `value` means for a store into `field` (StoreRef says).
absl::Status StoreInto(Channel& ch, client::RefTo<client::StructView> field, py::handle value,
                       bool move) {
  if (move) {
    if (!py::isinstance<PyInstance>(value) || !value.cast<PyInstance&>().owned()) {
      throw py::type_error("store(..., move=True) takes an owned instance");
    }
    PyInstance& owner = value.cast<PyInstance&>();
    // Taken out of the instance while the GIL is held: other threads may
    // clone or release the instance during the call, and must find it
    // owning nothing rather than race the move.
    Owned<DynamicView> moving = std::move(owner.owned_ref());
    absl::Status s;
    {
      py::gil_scoped_release nogil;
      s = ch.Store(field, std::move(moving));
    }
    if (s.ok()) {
      owner.Release();
    } else if (!owner.released()) {
      owner.owned_ref() = std::move(moving);  // refused: the instance owns it again
    }  // else released meanwhile: `moving` releases it here
    return s;
  }
  shm::Ref ref = RefFrom(value);
  py::gil_scoped_release nogil;
  return ref ? ch.Store(field, ref) : ch.Clear(field);
}

// ---- Descriptors: Struct subclasses get one per field ----

class FieldDescriptor {
 public:
  FieldDescriptor(const DynamicStruct* type, size_t index) : type_(type), index_(index) {}

  const shm::Field& field() const { return type_->layout().fields()[index_]; }

  py::object Get(py::handle instance) const {
    FieldPlace place = PlaceOf(instance, index_);
    FieldKind kind = field().kind();
    if (IsScalar(kind)) {
      return VisitScalar(kind, [&](auto t) -> py::object {
        using T = decltype(t);
        return ToPy(shm::Scalar<T>(place.address).load(std::memory_order_acquire));
      });
    }
    switch (kind) {
      case FieldKind::kString:
      case FieldKind::kBytes: return PyText(std::move(place)).Read();
      case FieldKind::kRef: return py::cast(shm::RefField(place.address).load());
      case FieldKind::kArray: return py::cast(PyArray(std::move(place)));
      case FieldKind::kMutex: return py::cast(PyMutex(std::move(place)));
      case FieldKind::kCondition: return py::cast(PyCondition(std::move(place)));
      default: throw py::type_error("unknown field kind");
    }
  }

  void Set(py::handle instance, py::handle value) const {
    FieldPlace place = PlaceOf(instance, index_);
    FieldKind kind = field().kind();
    if (IsScalar(kind)) {
      VisitScalar(kind, [&](auto t) {
        using T = decltype(t);
        shm::Scalar<T>(place.address)
            .store(FromPy<T>(value, *place.field), std::memory_order_release);
      });
      return;
    }
    switch (kind) {
      case FieldKind::kString:
      case FieldKind::kBytes: PyText(std::move(place)).Write(value); return;
      case FieldKind::kArray: PyArray(std::move(place)).Assign(value); return;
      case FieldKind::kRef: {
        // A new reference for the field (the value keeps its own); None
        // clears it. Channel.store(field, owned, move=True) moves instead.
        PyInstance& inst = instance.cast<PyInstance&>();
        Check(StoreInto(*inst.channel(), inst.view().ref_field(index_), value, false));
        return;
      }
      default:
        throw py::attribute_error(
            absl::StrCat(place.label(), " cannot be assigned (use its methods)"));
    }
  }

  // The field object: Scalar for a scalar, else what attribute access gives
  // (Text for string/bytes, RefField for a ref).
  py::object Handle(py::handle instance) const {
    FieldPlace place = PlaceOf(instance, index_);
    FieldKind kind = field().kind();
    if (IsScalar(kind)) return py::cast(PyScalar(place, kind, place.address));
    switch (kind) {
      case FieldKind::kString:
      case FieldKind::kBytes: return py::cast(PyText(std::move(place)));
      case FieldKind::kRef:
        return py::cast(PyRefField(std::move(place), static_cast<uint32_t>(index_)));
      default: return Get(instance);
    }
  }

 private:
  const DynamicStruct* type_;
  size_t index_;
};

// Runs `f`, turning a C++ exception into the pending Python error; returns
// `failed` then.
template <typename R, typename F>
R CallingIntoCxx(R failed, F&& f) {
  try {
    return f();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (py::builtin_exception& e) {
    e.set_error();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return failed;
}

PyObject* DescriptorGet(PyObject* self, PyObject* instance, PyObject*) {
  if (instance == nullptr || instance == Py_None) {
    Py_INCREF(self);
    return self;
  }
  return CallingIntoCxx<PyObject*>(nullptr, [&] {
    return py::handle(self).cast<const FieldDescriptor&>().Get(instance).release().ptr();
  });
}

int DescriptorSet(PyObject* self, PyObject* instance, PyObject* value) {
  if (value == nullptr) {
    PyErr_SetString(PyExc_AttributeError, "structd fields cannot be deleted");
    return -1;
  }
  return CallingIntoCxx<int>(-1, [&] {
    py::handle(self).cast<const FieldDescriptor&>().Set(instance, value);
    return 0;
  });
}

}  // namespace

const DynamicView& PyInstance::view() const {
  if (!view_) {
    ThrowStatus(absl::FailedPreconditionError(
        "this instance object was released (release() or the end of its with block): "
        "allocate, retain or view the instance again"));
  }
  return view_;
}

void PyInstance::Release() {
  owned_.Reset();
  view_ = DynamicView();
}

void StoreRef(Channel& channel, py::handle field, py::handle value, bool move) {
  if (!py::isinstance<PyRefField>(field)) {
    throw py::type_error("store's first argument is a ref field: instance.field('name')");
  }
  const PyRefField& f = field.cast<const PyRefField&>();
  if (f.instance().channel().get() != &channel) {
    ThrowStatus(absl::InvalidArgumentError(
        absl::StrCat("the field's instance is in channel '", f.instance().channel()->name(),
                     "', not '", channel.name(), "'")));
  }
  Check(StoreInto(channel, f.Target(), value, move));
}

py::object MakeInstance(py::handle cls, std::shared_ptr<Channel> channel, DynamicView view,
                        Owned<DynamicView> owned) {
  return cls(py::cast(InstanceInit{std::move(channel), view, std::move(owned)},
                      py::return_value_policy::move));
}

const DynamicStruct& StructTypeOf(py::handle cls) {
  if (!PyType_Check(cls.ptr()) || !py::hasattr(cls, "__structd_type__")) {
    throw py::type_error(absl::StrCat(
        "expected a structd.Struct subclass (class Order(structd.Struct): ...), not ",
        std::string(py::repr(cls))));
  }
  return *cls.attr("__structd_type__").cast<const DynamicStruct*>();
}

shm::Ref RefFrom(py::handle value) {
  if (value.is_none()) return shm::Ref();
  if (py::isinstance<shm::Ref>(value)) return value.cast<shm::Ref>();
  if (py::isinstance<PyInstance>(value)) return value.cast<const PyInstance&>().view().ref();
  throw py::type_error(absl::StrCat("expected a structd.Ref, an instance or None, not ",
                                    std::string(py::str(value.get_type().attr("__name__")))));
}

void BindInstances(py::module_& m) {
  py::class_<shm::Ref>(m, "Ref", "A reference to an instance: 8 bytes, valid in every process "
                                 "of the channel. Owns nothing by itself.")
      .def(py::init([](uint64_t bits) { return shm::Ref::FromBits(bits); }), py::arg("bits") = 0)
      .def_static(
          "parse",
          [](const std::string& text) {
            std::optional<shm::Ref> r = shm::Ref::Parse(text);
            if (!r) {
              ThrowStatus(absl::InvalidArgumentError(absl::StrCat(
                  "'", text, "' is not a ref (write r:EXTENT:OFFSET:GEN or 16 hex digits)")));
            }
            return *r;
          },
          py::arg("text"))
      .def_property_readonly("bits", &shm::Ref::bits)
      .def("__int__", &shm::Ref::bits)
      .def("__index__", &shm::Ref::bits)
      .def("__bool__", [](shm::Ref r) { return !r.is_null(); })
      .def("__eq__", [](shm::Ref a, py::handle b) {
        return py::isinstance<shm::Ref>(b) && a == b.cast<shm::Ref>();
      })
      .def("__hash__", [](shm::Ref r) { return std::hash<uint64_t>()(r.bits()); })
      .def("__str__", &shm::Ref::ToString)
      .def("__repr__", [](shm::Ref r) { return absl::StrCat("Ref('", r.ToString(), "')"); });

  py::class_<PyScalar>(m, "Scalar", "A scalar field (or array element): atomic operations.")
      .def("load", &PyScalar::Load, py::arg("order") = "seq_cst")
      .def("store", &PyScalar::Store, py::arg("value"), py::arg("order") = "seq_cst")
      .def("exchange", &PyScalar::Exchange, py::arg("value"), py::arg("order") = "seq_cst")
      .def("compare_exchange", &PyScalar::CompareExchange, py::arg("expected"),
           py::arg("desired"), py::arg("order") = "seq_cst")
      .def(
          "fetch_add",
          [](PyScalar& s, py::handle d, const std::string& o) { return s.FetchAdd(d, o, false); },
          py::arg("delta"), py::arg("order") = "seq_cst")
      .def(
          "fetch_sub",
          [](PyScalar& s, py::handle d, const std::string& o) { return s.FetchAdd(d, o, true); },
          py::arg("delta"), py::arg("order") = "seq_cst")
      .def("wait_changed", &PyScalar::WaitChanged, py::arg("seen"),
           py::arg("timeout") = py::none())
      .def("notify", &PyScalar::Notify, py::arg("count") = 1)
      .def("notify_all", [](const PyScalar& s) { return s.Notify(shm::kNotifyAll); })
      .def("__repr__", &PyScalar::Repr);

  py::class_<PyFieldWatch>(m, "FieldWatch",
                           "A descriptor that becomes readable when watched fields change "
                           "(for event loops: selectors, asyncio). One thread under it.")
      .def(py::init<>())
      .def_property_readonly("fd", &PyFieldWatch::fd)
      .def("watch", &PyFieldWatch::Arm, py::arg("field"), py::arg("seen"))
      .def("unwatch", &PyFieldWatch::Unwatch, py::arg("id"))
      .def("take_fired", &PyFieldWatch::TakeFired)
      .def_property_readonly("armed", &PyFieldWatch::armed)
      .def("close", &PyFieldWatch::Close)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyFieldWatch& w, py::args) { w.Close(); });

  py::class_<PyArray>(m, "Array", "An array<T, N> field: indexable, each element atomic.")
      .def("__len__", &PyArray::size)
      .def("__getitem__", [](const PyArray& a, int64_t i) { return a.At(i).Load("acquire"); })
      .def("__setitem__",
           [](PyArray& a, int64_t i, py::handle v) { a.At(i).Store(v, "release"); })
      .def("__iter__", [](const PyArray& a) { return py::iter(a.ToList()); })
      .def("at", &PyArray::At, py::arg("index"))
      .def("tolist", &PyArray::ToList)
      .def("__repr__", &PyArray::Repr);

  py::class_<PyText>(m, "Text", "A string[N] or bytes[N] field: torn-free reads.")
      .def("read", &PyText::Read)
      .def("write", &PyText::Write, py::arg("value"))
      .def_property_readonly("capacity", &PyText::capacity);

  py::class_<PyRefField>(m, "RefField",
                         "A ref field: load() reads it; Channel.store(field, value) writes it.")
      .def("load", &PyRefField::Load)
      .def_property_readonly("name", [](const PyRefField& f) { return f.place().field->name(); })
      .def("__repr__", [](const PyRefField& f) {
        return absl::StrCat("<structd.RefField ", f.place().label(), " = ", f.Load().ToString(),
                            ">");
      });

  py::class_<PyMutex>(m, "Mutex", "A mutex field: process-shared, robust.")
      .def(
          "acquire",
          [](py::object self, bool blocking, const py::object& timeout) {
            return self.cast<PyMutex&>().Acquire(self, timeout, blocking);
          },
          py::arg("blocking") = true, py::arg("timeout") = py::none())
      .def("release", &PyMutex::Release)
      .def("__enter__",
           [](py::object self) {
             self.cast<PyMutex&>().Acquire(self, py::none());
             return self;
           })
      .def("__exit__", [](PyMutex& m, py::args) { m.Release(); })
      .def_property_readonly("held", &PyMutex::held, "Whether this thread holds it.")
      .def_property_readonly("owner_pid", &PyMutex::owner_pid)
      .def("__repr__", [](const PyMutex& m) { return absl::StrCat("<structd.Mutex ", m.label(), ">"); });

  py::class_<PyCondition>(m, "Condition", "A condition field; pairs with any mutex field.")
      .def("wait", &PyCondition::Wait, py::arg("mutex"), py::arg("timeout") = py::none())
      .def("notify", &PyCondition::Notify, py::arg("count") = 1)
      .def("notify_all", &PyCondition::NotifyAll);

  py::class_<FieldDescriptor> descriptor(m, "FieldDescriptor");
  descriptor.def(py::init<const DynamicStruct*, size_t>())
      .def("handle", &FieldDescriptor::Handle)
      .def_property_readonly("name", [](const FieldDescriptor& d) { return d.field().name(); })
      .def_property_readonly("type",
                             [](const FieldDescriptor& d) { return shm::FieldTypeName(d.field().spec); })
      .def_property_readonly("offset", [](const FieldDescriptor& d) { return d.field().offset; });
  // __get__ and __set__ as the type's C slots, not as pybind11 methods:
  // every field access goes through them, and pybind11's dispatch (argument
  // loading, overload resolution) cost more than the rest of the access.
  auto* descriptor_type = reinterpret_cast<PyTypeObject*>(descriptor.ptr());
  descriptor_type->tp_descr_get = &DescriptorGet;
  descriptor_type->tp_descr_set = &DescriptorSet;
  PyType_Modified(descriptor_type);

  py::class_<InstanceInit>(m, "_InstanceInit");

  py::class_<PyInstance>(m, "_Instance")
      .def(py::init([](InstanceInit& init) { return new PyInstance(std::move(init)); }))
      .def(py::init([](py::args, py::kwargs) -> PyInstance* {
        throw py::type_error(
            "structd instances live in shared memory: create one with channel.allocate(Type), "
            "or see one with channel.view(Type, ref)");
      }))
      .def_property_readonly("ref", [](const PyInstance& i) { return i.view().ref(); })
      .def_property_readonly("owned", &PyInstance::owned)
      .def_property_readonly("released", &PyInstance::released)
      .def_property_readonly("type_index", [](const PyInstance& i) { return i.view().type_index(); })
      .def_property_readonly("channel", [](const PyInstance& i) { return i.channel(); })
      .def("release", [](PyInstance& i) {
        if (!i.owned() && !i.released()) {
          ThrowStatus(absl::FailedPreconditionError(
              "this is a view: it owns no reference (nothing to release)"));
        }
        i.Release();
      })
      .def("clone", [](py::object self) {
        PyInstance& i = self.cast<PyInstance&>();
        if (!i.owned()) {
          ThrowStatus(absl::FailedPreconditionError(
              "clone: this is a view, not an owned reference (use channel.retain(Type, ref))"));
        }
        Owned<DynamicView> copy = Unwrap(i.owned_ref().Clone());
        DynamicView v = *copy;
        return MakeInstance(py::type::of(self), i.channel(), v, std::move(copy));
      })
      .def("_field", [](py::object self, const std::string& name) {
        const DynamicView& v = self.cast<PyInstance&>().view();
        std::optional<size_t> index = v.type().FindField(name);
        if (!index) {
          throw py::attribute_error(
              absl::StrCat("'", v.type().key(), "' has no field '", name, "'"));
        }
        return FieldDescriptor(&v.type(), *index).Handle(self);
      });
}

}  // namespace structd::python
