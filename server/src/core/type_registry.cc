#include "core/type_registry.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/random.h"

namespace structd::server {

absl::Status ValidateTypeKey(const std::string& key) {
  if (key.empty() || key.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        "type key: must be 1 to 128 characters, got ", key.size(),
        " (name the type, e.g. \"orders.Order\")"));
  }
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "type key: only printable ASCII without spaces is allowed (e.g. "
          "\"orders.Order\")");
    }
  }
  return absl::OkStatus();
}

bool IsBuiltinTypeKey(std::string_view key) { return key.starts_with(kBuiltinTypePrefix); }

absl::StatusOr<TypeRegistry::RegisterResult> TypeRegistry::Register(
    const std::string& key, std::vector<shm::FieldSpec> fields, Origin origin) {
  if (absl::Status s = ValidateTypeKey(key); !s.ok()) return s;
  const bool builtin = origin == Origin::kBuiltin;
  if (builtin != IsBuiltinTypeKey(key)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "type key '", key, "': keys starting with '", std::string(kBuiltinTypePrefix),
        "' name the daemon's built-in types (ports); choose another key"));
  }
  absl::StatusOr<shm::Layout> layout =
      shm::Layout::Compute(std::move(fields), builtin ? shm::LayoutLimits::None() : limits_);
  if (!layout.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "type '", key, "': ", layout.status().message()));
  }
  for (const shm::Field& f : layout->fields()) {
    if (f.kind() != shm::FieldKind::kRef || f.spec.ref_target.is_zero()) continue;
    if (!by_token_.count(f.spec.ref_target)) {
      absl::Status unknown = Find(f.spec.ref_target).status();
      return absl::NotFoundError(absl::StrCat("type '", key, "': field '", f.name(),
                                              "' is ref<TOKEN>: ", unknown.message()));
    }
  }
  if (const RegisteredType* existing = FindByKey(key)) {
    if (existing->layout == *layout) return RegisterResult{existing, false};
    return absl::FailedPreconditionError(absl::StrCat(
        "type '", key,
        "': already registered with a different layout (use a new key for "
        "the new shape, or fix the definition to match)\nregistered:\n",
        existing->layout.ToString(), "requested:\n", layout->ToString()));
  }
  if (sealed_ && !builtin) {
    return absl::FailedPreconditionError(absl::StrCat(
        "type '", key,
        "': the channel's registry is sealed, no new types (register types "
        "before the owner seals, or use another channel)"));
  }
  uint64_t bytes = key.size() + layout->canonical().size();
  if (!builtin && registry_limits_.max_types != 0 &&
      types_.size() >= registry_limits_.max_types) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "type '", key, "': the channel already has ", types_.size(),
        " types, its limit (max_types_per_channel; raise it in the daemon's config, or "
        "use another channel)"));
  }
  if (!builtin && registry_limits_.max_registry_bytes != 0 &&
      bytes_ + bytes > registry_limits_.max_registry_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "type '", key, "': the channel's registry would hold ", bytes_ + bytes,
        " bytes of keys and layouts, more than max_registry_bytes (",
        registry_limits_.max_registry_bytes,
        "; raise it in the daemon's config, or use another channel)"));
  }
  shm::TypeToken token;
  do {
    token = RandomToken();
  } while (by_token_.count(token) != 0);
  uint32_t index = static_cast<uint32_t>(types_.size() + 1);
  while (by_index_.count(index) != 0) ++index;
  RegisteredType& t = types_.emplace_back(
      RegisteredType{key, token, index, std::move(*layout)});
  by_key_[key] = &t;
  by_token_[token] = &t;
  by_index_[index] = &t;
  bytes_ += bytes;
  return RegisterResult{&t, true};
}

absl::Status TypeRegistry::Restore(const std::string& key,
                                   shm::TypeToken token, uint32_t type_index,
                                   std::vector<shm::FieldSpec> fields) {
  absl::StatusOr<shm::Layout> layout =
      shm::Layout::Compute(std::move(fields), limits_);
  if (!layout.ok()) return layout.status();
  if (type_index == 0 || by_key_.count(key) || by_token_.count(token) ||
      by_index_.count(type_index)) {
    return absl::DataLossError(absl::StrCat(
        "type '", key, "': duplicate or invalid entry in saved registry"));
  }
  RegisteredType& t = types_.emplace_back(
      RegisteredType{key, token, type_index, std::move(*layout)});
  by_key_[key] = &t;
  by_token_[token] = &t;
  by_index_[type_index] = &t;
  bytes_ += key.size() + t.layout.canonical().size();
  return absl::OkStatus();
}

absl::StatusOr<const RegisteredType*> TypeRegistry::Find(
    shm::TypeToken token) const {
  auto it = by_token_.find(token);
  if (it == by_token_.end()) {
    // Same answer for unknown, guessed and foreign tokens.
    return absl::NotFoundError(absl::StrCat(
        "type token ", token.ToHex(),
        ": not registered in this channel (register the type first, or use "
        "a token this channel issued)"));
  }
  return it->second;
}

const RegisteredType* TypeRegistry::FindByIndex(uint32_t type_index) const {
  auto it = by_index_.find(type_index);
  return it == by_index_.end() ? nullptr : it->second;
}

const RegisteredType* TypeRegistry::FindByKey(const std::string& key) const {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

std::vector<const RegisteredType*> TypeRegistry::List() const {
  std::vector<const RegisteredType*> out;
  for (const RegisteredType& t : types_) out.push_back(&t);
  return out;
}

}  // namespace structd::server
