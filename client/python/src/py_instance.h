#ifndef STRUCTD_CLIENT_PYTHON_SRC_PY_INSTANCE_H_
#define STRUCTD_CLIENT_PYTHON_SRC_PY_INSTANCE_H_

// The Python side of an instance and of its fields.
//
// An instance object (structd.Struct, a Python subclass per struct type) is
// a PyInstance: the channel (which keeps the arena mapped), a DynamicView,
// and, for an owning instance, the Owned reference. Field objects (Scalar,
// Array, Text, RefField, Mutex, Condition) keep their instance object alive,
// so their address stays mapped while they exist.
//
// Thread safety: field operations are atomics on shared memory and may run
// from any thread; blocking ones (mutex, condition, waits) release the GIL.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "structd/client/channel.h"
#include "structd/client/dynamic.h"

namespace structd::python {

using client::Channel;
using client::DynamicStruct;
using client::DynamicView;
using client::Owned;

// What the C++ side hands a new instance object (Struct.__init__ takes it).
struct InstanceInit {
  std::shared_ptr<Channel> channel;
  DynamicView view;
  Owned<DynamicView> owned;  // empty for a view
};

class PyInstance {
 public:
  explicit PyInstance(InstanceInit&& init)
      : channel_(std::move(init.channel)), view_(init.view), owned_(std::move(init.owned)) {}

  // The view; FailedPrecondition once released.
  const DynamicView& view() const;
  const std::shared_ptr<Channel>& channel() const { return channel_; }
  bool owned() const { return static_cast<bool>(owned_); }
  bool released() const { return !view_; }
  Owned<DynamicView>& owned_ref() { return owned_; }
  // Drops the reference (an owning instance) and the view.
  void Release();

 private:
  std::shared_ptr<Channel> channel_;
  DynamicView view_;
  Owned<DynamicView> owned_;
};

// A new instance object of Python class `cls` (a Struct subclass).
pybind11::object MakeInstance(pybind11::handle cls, std::shared_ptr<Channel> channel,
                              DynamicView view, Owned<DynamicView> owned);
// The DynamicStruct a Struct subclass was declared with; TypeError otherwise.
const DynamicStruct& StructTypeOf(pybind11::handle cls);
// A Ref, an instance (its ref) or None (the null ref); TypeError otherwise.
shm::Ref RefFrom(pybind11::handle value);

// Channel.store: `field` is a RefField of an instance of `channel`; `value`
// an owned instance (its reference moves into the field when `move`), a
// Ref or any instance (the field takes a new reference), or None (clears).
void StoreRef(Channel& channel, pybind11::handle field, pybind11::handle value, bool move);

// Registers Ref, the field classes, FieldDescriptor and the instance base
// class (_Instance) in `m`.
void BindInstances(pybind11::module_& m);

}  // namespace structd::python

#endif  // STRUCTD_CLIENT_PYTHON_SRC_PY_INSTANCE_H_
