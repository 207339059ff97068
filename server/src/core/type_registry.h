#ifndef STRUCTD_SERVER_CORE_TYPE_REGISTRY_H_
#define STRUCTD_SERVER_CORE_TYPE_REGISTRY_H_

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "structd/shm/layout.h"
#include "structd/shm/type_token.h"

namespace structd::server {

struct RegisteredType {
  std::string key;
  shm::TypeToken token;
  uint32_t type_index = 0;  // >= 1; the value in instance headers
  shm::Layout layout;
};

// What one channel's registry may hold (issue 14: a channel's metadata
// must stay bounded). Zero means no limit.
struct RegistryLimits {
  uint32_t max_types = 1024;                // Default: 1024 types
  uint64_t max_registry_bytes = 4u << 20;   // Default: 4 MiB of keys and
                                            // canonical layouts
};

// One channel's registry: registration key -> (token, layout). Keys are
// scoped to the channel. Entries are never removed or changed (invariant
// 1), so pointers to them stay valid for the registry's lifetime.
//
// Thread safety: none; the channel's lock serializes calls.
class TypeRegistry {
 public:
  explicit TypeRegistry(shm::LayoutLimits limits = {}, RegistryLimits registry = {})
      : limits_(limits), registry_limits_(registry) {}

  struct RegisterResult {
    const RegisteredType* type;
    bool created;
  };
  // Who registers: a client (RegisterType), or the daemon itself (its
  // built-in types, keys under kBuiltinTypePrefix: not bounded by the
  // limits or the seal, which are the clients', and allowed array<ref,N>).
  enum class Origin { kUser, kBuiltin };
  // Same key + identical layout: the existing entry (created = false).
  // Same key + different layout: FailedPrecondition showing both layouts.
  // New key on a sealed registry: FailedPrecondition.
  // A user's key under kBuiltinTypePrefix: InvalidArgument.
  // Malformed fields: InvalidArgument. A ref<TOKEN> field whose TOKEN this
  // registry did not issue: NotFound, worded as for any unknown token.
  // A new type past RegistryLimits: ResourceExhausted naming the option.
  absl::StatusOr<RegisterResult> Register(const std::string& key,
                                          std::vector<shm::FieldSpec> fields,
                                          Origin origin = Origin::kUser);
  // Re-creates an entry read back from disk (daemon restart). Tokens and
  // type indexes are kept as they were.
  absl::Status Restore(const std::string& key, shm::TypeToken token,
                       uint32_t type_index, std::vector<shm::FieldSpec> fields);

  // NotFound (the same message for any unknown token) if absent.
  absl::StatusOr<const RegisteredType*> Find(shm::TypeToken token) const;
  // nullptr if absent.
  const RegisteredType* FindByIndex(uint32_t type_index) const;
  const RegisteredType* FindByKey(const std::string& key) const;
  // In registration order.
  std::vector<const RegisteredType*> List() const;
  size_t size() const { return types_.size(); }
  // Bytes of keys and canonical layouts (what max_registry_bytes bounds).
  uint64_t bytes() const { return bytes_; }

  // Limits for what is registered from now on (Restore ignores them).
  void SetLimits(shm::LayoutLimits limits, RegistryLimits registry) {
    limits_ = limits;
    registry_limits_ = registry;
  }
  void Seal() { sealed_ = true; }
  bool sealed() const { return sealed_; }
  const shm::LayoutLimits& limits() const { return limits_; }

 private:
  shm::LayoutLimits limits_;
  RegistryLimits registry_limits_;
  uint64_t bytes_ = 0;
  bool sealed_ = false;
  std::deque<RegisteredType> types_;  // stable addresses
  std::map<std::string, const RegisteredType*> by_key_;
  std::map<shm::TypeToken, const RegisteredType*> by_token_;
  std::map<uint32_t, const RegisteredType*> by_index_;
};

// Keys of the daemon's built-in types (a port's is "structd.port/N").
inline constexpr std::string_view kBuiltinTypePrefix = "structd.";
bool IsBuiltinTypeKey(std::string_view key);

// Validates a registration key: 1 to 128 printable ASCII characters, no
// spaces (0x21 to 0x7e).
absl::Status ValidateTypeKey(const std::string& key);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_CORE_TYPE_REGISTRY_H_
