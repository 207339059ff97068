// structd._structd: the Python binding of the C++ client library. Python
// declares struct types (structd/__init__.py turns a Struct subclass into a
// DynamicStruct); everything else is the C++ client's, unchanged: the same
// session, stocks, queued drops, views and checks. This file translates
// arguments and errors; it decides nothing.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/python/src/py_instance.h"
#include "client/python/src/py_status.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"
#include "structd/client/dynamic.h"

namespace py = pybind11;

namespace structd::python {
namespace {

using client::Client;
using client::ClientOptions;
using client::TypeInfo;

// ---- Behavior tables: a Python object per type, per process ----

// The table Channel::Bind stores: any Python object (a dict of callables,
// or an object whose attributes are). Dropped with the GIL held, whichever
// thread drops the Channel.
struct PyTable {
  explicit PyTable(py::object o) : methods(new py::object(std::move(o))) {}
  PyTable(PyTable&& other) noexcept : methods(std::exchange(other.methods, nullptr)) {}
  PyTable(const PyTable&) = delete;
  ~PyTable() {
    if (methods == nullptr) return;
    if (Py_IsInitialized()) {
      py::gil_scoped_acquire gil;
      delete methods;
    }  // else the interpreter is gone: nothing to release into.
  }
  py::object* methods;
};

py::object BehaviorMethod(const PyInstance& instance, const std::string& name) {
  absl::StatusOr<const PyTable*> table = instance.channel()->Behavior<PyTable>(instance.view());
  if (!table.ok()) ThrowStatus(table.status(), "UnboundMethod");
  py::object methods = *(*table)->methods;
  py::object method;
  if (py::isinstance<py::dict>(methods)) {
    py::dict d = methods;
    if (d.contains(name)) method = d[py::str(name)];
  } else if (py::hasattr(methods, name.c_str())) {
    method = methods.attr(name.c_str());
  }
  if (!method || !PyCallable_Check(method.ptr())) {
    ThrowStatus(absl::FailedPreconditionError(absl::StrCat(
                    "the behavior bound for type '", instance.view().type().key(),
                    "' in this process has no method '", name, "'")),
                "UnboundMethod");
  }
  return method;
}

// ---- Client ----

// A Client that close() (or the with block's end) destroys, ending the
// session; its Channels then fail with FAILED_PRECONDITION.
class PyClient {
 public:
  explicit PyClient(std::unique_ptr<Client> c) : client_(std::move(c)) {}
  Client& get() {
    if (!client_) {
      ThrowStatus(absl::FailedPreconditionError("the client was closed: connect again"));
    }
    return *client_;
  }
  void Close() {
    std::unique_ptr<Client> c = std::move(client_);
    py::gil_scoped_release nogil;
    c.reset();
  }
  bool closed() const { return !client_; }

 private:
  std::unique_ptr<Client> client_;
};

template <typename F>
auto WithoutGil(F&& f) {
  py::gil_scoped_release nogil;
  return f();
}

std::vector<shm::Ref> RefsFrom(py::iterable values) {
  std::vector<shm::Ref> refs;
  for (py::handle v : values) refs.push_back(RefFrom(v));
  return refs;
}

py::list Instances(py::handle cls, const std::shared_ptr<Channel>& ch,
                   std::vector<Owned<DynamicView>> owned) {
  py::list out;
  for (Owned<DynamicView>& o : owned) {
    DynamicView v = *o;
    out.append(MakeInstance(cls, ch, v, std::move(o)));
  }
  return out;
}

std::string HexFingerprint(const shm::Layout& layout) {
  return shm::FingerprintHex(layout.fingerprint());
}

}  // namespace

PYBIND11_MODULE(_structd, m) {
  m.doc() = "structd's C++ client library, bound for Python (use the structd package).";

  BindInstances(m);

  py::class_<DynamicStruct, std::unique_ptr<DynamicStruct, py::nodelete>>(
      m, "StructType", "A struct type's key and layout (interned per process).")
      .def(py::init([](std::string key, const std::vector<std::pair<std::string, std::string>>&
                                            fields) {
             std::vector<shm::FieldSpec> specs;
             for (const auto& [name, type] : fields) {
               shm::FieldSpec spec;
               spec.name = name;
               if (absl::Status s = shm::ParseFieldType(type, spec); !s.ok()) {
                 ThrowStatus(absl::InvalidArgumentError(
                     absl::StrCat("type '", key, "', field '", name, "': ", s.message())));
               }
               specs.push_back(std::move(spec));
             }
             return const_cast<DynamicStruct*>(
                 Unwrap(DynamicStruct::Make(std::move(key), std::move(specs))));
           }),
           py::arg("key"), py::arg("fields"))
      .def_property_readonly("key", &DynamicStruct::key)
      .def_property_readonly("size", [](const DynamicStruct& t) { return t.layout().size(); })
      .def_property_readonly("fingerprint",
                             [](const DynamicStruct& t) { return HexFingerprint(t.layout()); })
      .def_property_readonly("fields",
                             [](const DynamicStruct& t) {
                               py::list out;
                               for (const shm::Field& f : t.layout().fields()) {
                                 out.append(py::make_tuple(f.name(), shm::FieldTypeName(f.spec),
                                                           f.offset, f.size));
                               }
                               return out;
                             })
      .def("__str__", [](const DynamicStruct& t) { return t.layout().ToString(); });

  py::class_<TypeInfo>(m, "TypeInfo", "A type as registered in a channel.")
      .def_readonly("key", &TypeInfo::key)
      .def_readonly("type_index", &TypeInfo::type_index)
      .def_property_readonly("token", [](const TypeInfo& t) { return t.token.ToHex(); })
      .def_property_readonly("fingerprint",
                             [](const TypeInfo& t) { return HexFingerprint(t.layout); })
      .def_property_readonly("size", [](const TypeInfo& t) { return t.layout.size(); })
      .def_property_readonly("layout", [](const TypeInfo& t) { return t.layout.ToString(); })
      .def("__repr__", [](const TypeInfo& t) {
        return absl::StrCat("TypeInfo(key='", t.key, "', token='", t.token.ToHex(),
                            "', fingerprint='", HexFingerprint(t.layout), "')");
      });

  py::class_<Channel, std::shared_ptr<Channel>>(m, "Channel")
      .def_property_readonly("name", &Channel::name)
      .def_property_readonly("id", &Channel::id)
      .def("register",
           [](Channel& ch, py::handle cls) {
             const DynamicStruct& type = StructTypeOf(cls);
             return Unwrap(WithoutGil([&] { return ch.Use(type); }));
           },
           py::arg("type"))
      .def("types", [](Channel& ch) { return Unwrap(WithoutGil([&] { return ch.ListTypes(); })); })
      .def("seal_registry", [](Channel& ch) { Check(WithoutGil([&] { return ch.SealRegistry(); })); })
      .def("allocate_batch",
           [](std::shared_ptr<Channel> ch, py::handle cls, uint32_t count) {
             const DynamicStruct& type = StructTypeOf(cls);
             auto made = Unwrap(WithoutGil([&] { return ch->AllocateBatch(type, count); }));
             return Instances(cls, ch, std::move(made));
           },
           py::arg("type"), py::arg("count"))
      .def("allocate",
           [](std::shared_ptr<Channel> ch, py::handle cls) {
             const DynamicStruct& type = StructTypeOf(cls);
             auto made = Unwrap(WithoutGil([&] { return ch->AllocateBatch(type, 1); }));
             DynamicView v = *made[0];
             return MakeInstance(cls, ch, v, std::move(made[0]));
           },
           py::arg("type"))
      .def("view",
           [](std::shared_ptr<Channel> ch, py::handle cls, py::handle ref) {
             const DynamicStruct& type = StructTypeOf(cls);
             shm::Ref r = RefFrom(ref);
             DynamicView v = Unwrap(WithoutGil([&] { return ch->View(type, r); }));
             return MakeInstance(cls, ch, v, Owned<DynamicView>());
           },
           py::arg("type"), py::arg("ref"))
      .def("retain_batch",
           [](std::shared_ptr<Channel> ch, py::handle cls, py::iterable refs) {
             const DynamicStruct& type = StructTypeOf(cls);
             std::vector<shm::Ref> r = RefsFrom(refs);
             auto owned = Unwrap(WithoutGil([&] { return ch->RetainBatch(type, r); }));
             return Instances(cls, ch, std::move(owned));
           },
           py::arg("type"), py::arg("refs"))
      .def("retain",
           [](std::shared_ptr<Channel> ch, py::handle cls, py::handle ref) {
             const DynamicStruct& type = StructTypeOf(cls);
             std::vector<shm::Ref> r{RefFrom(ref)};
             auto owned = Unwrap(WithoutGil([&] { return ch->RetainBatch(type, r); }));
             DynamicView v = *owned[0];
             return MakeInstance(cls, ch, v, std::move(owned[0]));
           },
           py::arg("type"), py::arg("ref"))
      .def("release",
           [](Channel& ch, py::iterable instances) {
             // One call for all: each owned instance's reference, disowned
             // here, then released together (all or none at the daemon).
             std::vector<PyInstance*> owners;
             for (py::handle h : instances) {
               if (!py::isinstance<PyInstance>(h) || !h.cast<PyInstance&>().owned()) {
                 throw py::type_error("release takes owned instances");
               }
               owners.push_back(&h.cast<PyInstance&>());
             }
             std::vector<shm::Ref> refs;
             for (PyInstance* p : owners) {
               refs.push_back(p->owned_ref().Disown());
               p->Release();
             }
             Check(WithoutGil([&] { return ch.Release(refs); }));
           },
           py::arg("instances"))
      .def("flush", [](Channel& ch) { Check(WithoutGil([&] { return ch.Flush(); })); })
      .def("store", &StoreRef, py::arg("field"), py::arg("value"), py::arg("move") = false)
      .def("set_root",
           [](Channel& ch, const std::string& name, py::handle value) {
             shm::Ref r = RefFrom(value);
             Check(WithoutGil([&] { return ch.SetRoot(name, r); }));
           },
           py::arg("name"), py::arg("ref"))
      .def("get_root",
           [](Channel& ch, const std::string& name) {
             return Unwrap(WithoutGil([&] { return ch.GetRoot(name); }));
           },
           py::arg("name"))
      .def("delete_root",
           [](Channel& ch, const std::string& name) {
             Check(WithoutGil([&] { return ch.DeleteRoot(name); }));
           },
           py::arg("name"))
      .def("roots",
           [](Channel& ch) {
             auto roots = Unwrap(WithoutGil([&] { return ch.ListRoots(); }));
             py::dict out;
             for (const client::RootInfo& r : roots) out[py::str(r.name)] = py::cast(r.ref);
             return out;
           })
      .def("bind",
           [](Channel& ch, py::handle cls, py::object methods) {
             const DynamicStruct& type = StructTypeOf(cls);
             TypeInfo info = Unwrap(WithoutGil([&] { return ch.Use(type); }));
             Check(ch.Bind(info.token, PyTable(std::move(methods))));
           },
           py::arg("type"), py::arg("methods"))
      .def("behavior",
           [](Channel&, py::handle instance, const std::string& name) {
             return BehaviorMethod(instance.cast<const PyInstance&>(), name);
           },
           py::arg("instance"), py::arg("name"))
      .def("spare_count", &Channel::SpareCount)
      .def("__repr__", [](const Channel& ch) {
        return absl::StrCat("<structd.Channel '", ch.name(), "' ", ch.id(), ">");
      });

  py::class_<PyClient>(m, "Client")
      .def("create_channel",
           [](PyClient& c, const std::string& name) {
             Client& client = c.get();
             client::CreatedChannel created =
                 Unwrap(WithoutGil([&] { return client.CreateChannel(name); }));
             return py::make_tuple(created.channel, created.owner_capability,
                                   created.member_capability);
           },
           py::arg("name"))
      .def("join",
           [](PyClient& c, const std::string& channel, const std::string& capability) {
             Client& client = c.get();
             return Unwrap(WithoutGil([&] { return client.Join(channel, capability); }));
           },
           py::arg("channel"), py::arg("capability"))
      .def("drop_channel",
           [](PyClient& c, const std::string& channel, const std::string& owner_capability) {
             Client& client = c.get();
             Check(WithoutGil([&] { return client.DropChannel(channel, owner_capability); }));
           },
           py::arg("channel"), py::arg("owner_capability"))
      .def("seal_bindings", [](PyClient& c) { c.get().SealBindings(); })
      .def_property_readonly("session_id", [](PyClient& c) { return c.get().session_id(); })
      .def_property_readonly("attached", [](PyClient& c) { return c.get().attached(); })
      .def_property_readonly("socket", [](PyClient& c) { return c.get().socket(); })
      .def_property_readonly("closed", &PyClient::closed)
      .def("session_status", [](PyClient& c) { Check(c.get().session_status()); })
      .def("close", &PyClient::Close);

  m.def(
      "connect",
      [](std::optional<std::string> socket, std::optional<std::string> name, double call_timeout,
         double connect_timeout, bool reconnect) {
        ClientOptions options;
        if (socket) options.socket = *socket;
        if (name) options.name = *name;
        auto ms = [](double s) {
          return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
        };
        options.call_timeout = ms(call_timeout);
        options.connect_timeout = ms(connect_timeout);
        options.reconnect = reconnect;
        return PyClient(Unwrap(WithoutGil([&] { return Client::Connect(options); })));
      },
      py::arg("socket") = py::none(), py::arg("name") = py::none(),
      py::arg("call_timeout") = 10.0, py::arg("connect_timeout") = 5.0,
      py::arg("reconnect") = true);

  m.def(
      "_behavior",
      [](py::handle instance, const std::string& name) {
        return BehaviorMethod(instance.cast<const PyInstance&>(), name);
      },
      py::arg("instance"), py::arg("name"));

}

}  // namespace structd::python
