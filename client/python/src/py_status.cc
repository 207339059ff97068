#include "client/python/src/py_status.h"

namespace py = pybind11;

namespace structd::python {
namespace {

py::object Errors() { return py::module_::import("structd.errors"); }

[[noreturn]] void Raise(py::object cls, py::object exception) {
  PyErr_SetObject(cls.ptr(), exception.ptr());
  throw py::error_already_set();
}

}  // namespace

void ThrowStatus(const absl::Status& status, const char* name) {
  py::object errors = Errors();
  const int code = static_cast<int>(status.code());
  py::object cls = name != nullptr ? errors.attr(name)
                                   : errors.attr("_class_for_code")(code);
  Raise(cls, cls(std::string(status.message()), code));
}

void ThrowOwnerDied(const std::string& message, py::object mutex) {
  py::object cls = Errors().attr("OwnerDied");
  Raise(cls, cls(message, std::move(mutex)));
}

}  // namespace structd::python
