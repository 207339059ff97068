#ifndef STRUCTD_CLIENT_PYTHON_SRC_PY_STATUS_H_
#define STRUCTD_CLIENT_PYTHON_SRC_PY_STATUS_H_

// absl::Status -> the Python exception of its code family
// (structd/errors.py: one class per family, each carrying .code and
// .message). The only place that turns a status into a Python error.

#include <pybind11/pybind11.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace structd::python {

// Raises errors.<name>(message, code) (or the class errors._class_for_code
// picks when `name` is null). Call with the GIL held.
[[noreturn]] void ThrowStatus(const absl::Status& status, const char* name = nullptr);

inline void Check(const absl::Status& status) {
  if (!status.ok()) ThrowStatus(status);
}

template <typename T>
T Unwrap(absl::StatusOr<T>&& value) {
  if (!value.ok()) ThrowStatus(value.status());
  return std::move(*value);
}

// Raises errors.OwnerDied(message, mutex): the caller holds the mutex.
[[noreturn]] void ThrowOwnerDied(const std::string& message, pybind11::object mutex);

}  // namespace structd::python

#endif  // STRUCTD_CLIENT_PYTHON_SRC_PY_STATUS_H_
