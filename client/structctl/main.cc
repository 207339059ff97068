// structctl: inspect and check a running structd through its Admin service.
//
// Exit codes: 0 ok; 1 the daemon reported an error (or `check` found
// damage); 2 usage error; 3 no daemon reachable. Every command takes
// --json (schema: doc/structctl.md).

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <variant>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "absl/strings/str_cat.h"
#include "client/structctl/output.h"
#include "client/structctl/snapshot_dir.h"
#include "structd/client/admin.h"
#include "structd/shm/default_paths.h"
#include "structd/shm/layout.h"

namespace structd::structctl {
namespace {

using client::AdminClient;

constexpr int kOk = 0;
constexpr int kDaemonError = 1;
constexpr int kUsage = 2;
constexpr int kNoDaemon = 3;

struct Options {
  std::string socket;
  std::string admin_capability;
  std::string admin_capability_file;
  bool json = false;
  std::string channel;
  std::string type;
  std::string ref;
  uint32_t depth = 1;
  uint32_t limit = 20;
  double interval = 1.0;
  uint32_t count = 0;
  std::string dir;    // snapshot, restore
  std::string name;   // restore --name, root set/delete NAME
  std::string field;  // set
  std::string value;  // set
};

// A failure to print and the exit code it maps to.
struct Failure {
  int code;
  std::string message;
};
using Result = std::optional<Failure>;

Result FromStatus(const absl::Status& s) {
  if (s.ok()) return std::nullopt;
  int code = s.code() == absl::StatusCode::kUnavailable ? kNoDaemon : kDaemonError;
  return Failure{code, s.ToString()};
}

#define STRUCTCTL_ASSIGN(var, expr)            \
  auto var = (expr);                           \
  if (!var.ok()) return FromStatus(var.status())

std::string ShortToken(const shm::TypeToken& t) { return t.ShortHex(); }

// A type by key, full token or token prefix, in `channels`.
struct FoundType {
  std::string channel;
  client::TypeInfo type;
};
std::variant<FoundType, Failure> FindType(AdminClient& admin, const std::string& wanted,
                                          const std::vector<std::string>& channels) {
  std::vector<FoundType> found;
  for (const std::string& ch : channels) {
    auto types = admin.Types(ch);
    if (!types.ok()) return *FromStatus(types.status());
    for (client::TypeInfo& t : *types) {
      std::string hex = t.token.ToHex();
      if (t.key == wanted || hex == wanted || (wanted.size() >= 4 && hex.starts_with(wanted))) {
        found.push_back({ch, std::move(t)});
      }
    }
  }
  if (found.empty()) {
    return Failure{kDaemonError, absl::StrCat("NOT_FOUND: no type '", wanted,
                                              "' (give a key, a token or a token prefix; "
                                              "`structctl types CHANNEL` lists them)")};
  }
  if (found.size() > 1) {
    return Failure{kUsage, absl::StrCat("type '", wanted, "' is ambiguous (", found.size(),
                                        " matches): add --channel, or give the full token")};
  }
  return found[0];
}

std::vector<std::string> ChannelNames(AdminClient& admin, const std::string& only) {
  if (!only.empty()) return {only};
  std::vector<std::string> names;
  auto channels = admin.Channels();
  if (channels.ok()) {
    for (const auto& c : *channels) names.push_back(c.name);
  }
  return names;
}

// ---- commands ----

Result Status(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(st, admin.Status());
  STRUCTCTL_ASSIGN(channels, admin.Channels());
  if (o.json) {
    toml::array arenas;
    for (const auto& c : *channels) {
      arenas.push_back(toml::table{{"channel", c.name},
                                   {"epoch", Hex64(c.epoch)},
                                   {"arena_bytes", Int(c.arena_bytes)},
                                   {"live_instances", Int(c.live_instances)},
                                   {"damage", c.damage}});
    }
    toml::array unrecovered;
    for (const auto& u : st->unrecovered) {
      unrecovered.push_back(
          toml::table{{"dir", u.dir}, {"name", u.name}, {"reason", u.reason}});
    }
    toml::array quotas;
    for (const auto& q : st->quotas) {
      toml::table t{{"quota", q.quota}, {"used", Int(q.used)}, {"limit", Int(q.limit)}};
      if (q.per_uid) t.insert("uid", Int(q.uid));
      quotas.push_back(std::move(t));
    }
    PrintJson(toml::table{{"version", st->version},
                          {"uptime_ms", Int(st->uptime_ms)},
                          {"daemon_instance", Hex64(st->daemon_instance)},
                          {"socket", st->socket},
                          {"state_dir", st->state_dir},
                          {"pid", Int(st->pid)},
                          {"channels", Int(st->channels)},
                          {"sessions", Int(st->sessions)},
                          {"live_instances", Int(st->live_instances)},
                          {"arena_bytes", Int(st->arena_bytes)},
                          {"arenas", std::move(arenas)},
                          {"unrecovered", std::move(unrecovered)},
                          {"quotas", std::move(quotas)}});
    return std::nullopt;
  }
  std::printf("structd %s (pid %u), up %s\n", st->version.c_str(), st->pid,
              HumanDuration(st->uptime_ms).c_str());
  std::printf("instance  %s\nsocket    %s\nstate     %s\n", Hex64(st->daemon_instance).c_str(),
              st->socket.c_str(), st->state_dir.c_str());
  std::printf("%u channels, %u sessions, %" PRIu64 " live instances, %s of arenas\n",
              st->channels, st->sessions, st->live_instances, HumanBytes(st->arena_bytes).c_str());
  for (const auto& c : *channels) {
    std::printf("  arena %-20s epoch %s  %s, %" PRIu64 " instances\n", c.name.c_str(),
                Hex64(c.epoch).c_str(), HumanBytes(c.arena_bytes).c_str(), c.live_instances);
    if (!c.damage.empty()) std::printf("    DAMAGED: %s\n", c.damage.c_str());
  }
  for (const auto& u : st->unrecovered) {
    std::printf("  NOT RECOVERED %s (%s): %s\n", u.name.empty() ? "?" : u.name.c_str(),
                u.dir.c_str(), u.reason.c_str());
  }
  if (!st->quotas.empty()) std::printf("quotas (used / limit):\n");
  for (const auto& q : st->quotas) {
    bool channels = q.quota == "max_channels_per_uid";
    std::string who = q.per_uid ? " uid " + std::to_string(q.uid) : "";
    std::string used = channels ? std::to_string(q.used) : HumanBytes(q.used);
    std::string limit = channels ? std::to_string(q.limit) : HumanBytes(q.limit);
    std::printf("  %-22s%-12s %s / %s (%.0f%%)\n", q.quota.c_str(), who.c_str(), used.c_str(),
                limit.c_str(), q.limit == 0 ? 0.0 : 100.0 * double(q.used) / double(q.limit));
  }
  return std::nullopt;
}

Result Drop(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(sessions, admin.Drop(o.channel));
  if (o.json) {
    PrintJson(toml::table{{"dropped", o.channel}, {"sessions", Int(*sessions)}});
  } else if (*sessions == 0) {
    std::printf("channel %s dropped and deleted\n", o.channel.c_str());
  } else {
    std::printf("channel %s dropped: no new joins; its arena is deleted when its %u joined "
                "sessions leave\n",
                o.channel.c_str(), *sessions);
  }
  return std::nullopt;
}

Failure BadRef(const std::string& text) {
  return Failure{kUsage, absl::StrCat("'", text, "' is not a ref (write r:EXTENT:OFFSET:GEN "
                                                 "as structctl prints it, or 16 hex digits)")};
}

// Progress of a long transfer on a terminal: one line, rewritten.
class Progress {
 public:
  Progress(const char* what, bool enabled) : what_(what), enabled_(enabled) {}
  void Update(uint64_t bytes) {
    if (!enabled_ || bytes < shown_ + (64u << 20)) return;
    shown_ = bytes;
    std::fprintf(stderr, "\r%s: %s", what_, HumanBytes(bytes).c_str());
    std::fflush(stderr);
  }
  ~Progress() {
    if (enabled_ && shown_ > 0) std::fprintf(stderr, "\n");
  }

 private:
  const char* what_;
  bool enabled_;
  uint64_t shown_ = 0;
};

Result Snapshot(AdminClient& admin, const Options& o) {
  absl::StatusOr<SnapshotWriter> writer = SnapshotWriter::Create(o.dir);
  if (!writer.ok()) return Failure{kUsage, std::string(writer.status().message())};
  const auto start = std::chrono::steady_clock::now();
  {
    Progress progress("snapshot: received", isatty(STDERR_FILENO) && !o.json);
    absl::Status s = admin.Snapshot(o.channel, [&](const AdminClient::SnapshotChunk& chunk) {
      absl::Status w = writer->Write(chunk);
      progress.Update(writer->bytes_received());
      return w;
    });
    if (!s.ok()) return FromStatus(s);
  }
  if (absl::Status s = writer->Finish(); !s.ok()) return FromStatus(s);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.json) {
    PrintJson(toml::table{{"channel", o.channel},
                          {"dir", o.dir},
                          {"files", Int(writer->files())},
                          {"bytes", Int(writer->bytes_total())},
                          {"bytes_sent", Int(writer->bytes_received())},
                          {"seconds", seconds}});
  } else {
    std::printf("snapshot of channel %s written to %s: %zu files, %s (%s of it not zero) in "
                "%.1f s\n",
                o.channel.c_str(), o.dir.c_str(), writer->files(),
                HumanBytes(writer->bytes_total()).c_str(),
                HumanBytes(writer->bytes_received()).c_str(), seconds);
  }
  return std::nullopt;
}

Result Restore(AdminClient& admin, const Options& o) {
  absl::StatusOr<SnapshotReader> reader = SnapshotReader::Open(o.dir);
  if (!reader.ok()) return FromStatus(reader.status());
  uint64_t sent = 0;
  absl::StatusOr<AdminClient::RestoreReport> r;
  {
    Progress progress("restore: sent", isatty(STDERR_FILENO) && !o.json);
    r = admin.Restore(reader->manifest(), o.name, [&](AdminClient::SnapshotChunk& chunk) {
      absl::StatusOr<bool> more = reader->Next(chunk);
      if (more.ok() && *more) progress.Update(sent += chunk.data.size());
      return more;
    });
  }
  if (!r.ok()) return FromStatus(r.status());
  if (o.json) {
    PrintJson(toml::table{{"channel", r->name},
                          {"channel_id", r->channel_id},
                          {"types", Int(r->types)},
                          {"roots", Int(r->roots)},
                          {"live_instances", Int(r->live_instances)},
                          {"refcounts_fixed", Int(r->refcounts_fixed)},
                          {"dangling_dropped", Int(r->dangling_dropped)},
                          {"unreferenced_freed", Int(r->unreferenced_freed)},
                          {"mutexes_owner_died", Int(r->mutexes_owner_died)}});
  } else {
    std::printf("channel %s (id %s) restored from %s: %u types, %u roots, %" PRIu64
                " live instances\n",
                r->name.c_str(), r->channel_id.c_str(), o.dir.c_str(), r->types, r->roots,
                r->live_instances);
    if (r->refcounts_fixed + r->dangling_dropped + r->unreferenced_freed +
            r->mutexes_owner_died > 0) {
      std::printf("repaired: %" PRIu64 " refcounts fixed, %" PRIu64
                  " dangling references dropped, %" PRIu64
                  " instances only sessions held freed, %u held mutexes left owner-died\n",
                  r->refcounts_fixed, r->dangling_dropped, r->unreferenced_freed,
                  r->mutexes_owner_died);
    }
  }
  return std::nullopt;
}

Result Set(AdminClient& admin, const Options& o) {
  std::optional<shm::Ref> ref = shm::Ref::Parse(o.ref);
  if (!ref || ref->is_null()) return BadRef(o.ref);
  STRUCTCTL_ASSIGN(w, admin.SetField(o.channel, *ref, o.field, o.value));
  if (o.json) {
    PrintJson(toml::table{{"ref", ref->ToString()},
                          {"type", w->key},
                          {"field", o.field},
                          {"field_type", w->type},
                          {"previous", w->previous},
                          {"value", w->value}});
  } else {
    std::printf("%s %s.%s (%s): %s -> %s\n", ref->ToString().c_str(), w->key.c_str(),
                o.field.c_str(), w->type.c_str(), w->previous.c_str(), w->value.c_str());
  }
  return std::nullopt;
}

Result RootSet(AdminClient& admin, const Options& o) {
  std::optional<shm::Ref> ref = shm::Ref::Parse(o.ref);
  if (!ref || ref->is_null()) return BadRef(o.ref);
  STRUCTCTL_ASSIGN(previous, admin.SetRoot(o.channel, o.name, *ref));
  if (o.json) {
    PrintJson(toml::table{{"root", o.name},
                          {"ref", ref->ToString()},
                          {"previous", previous->is_null() ? "" : previous->ToString()}});
  } else if (previous->is_null()) {
    std::printf("root %s set to %s\n", o.name.c_str(), ref->ToString().c_str());
  } else {
    std::printf("root %s set to %s (was %s)\n", o.name.c_str(), ref->ToString().c_str(),
                previous->ToString().c_str());
  }
  return std::nullopt;
}

Result RootDelete(AdminClient& admin, const Options& o) {
  if (absl::Status s = admin.DeleteRoot(o.channel, o.name); !s.ok()) return FromStatus(s);
  if (o.json) {
    PrintJson(toml::table{{"deleted", o.name}});
  } else {
    std::printf("root %s deleted\n", o.name.c_str());
  }
  return std::nullopt;
}

Result Health(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(h, admin.CheckHealth());
  const char* text = *h == client::Health::kServing      ? "SERVING"
                     : *h == client::Health::kNotServing ? "NOT_SERVING"
                                                         : "UNKNOWN";
  if (o.json) {
    PrintJson(toml::table{{"status", text}});
  } else {
    std::printf("%s\n", text);
  }
  if (*h != client::Health::kServing) return Failure{kDaemonError, ""};
  return std::nullopt;
}

Result Channels(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(channels, admin.Channels());
  if (o.json) {
    toml::array out;
    for (const auto& c : *channels) {
      out.push_back(toml::table{{"id", c.id},
                                {"name", c.name},
                                {"types", Int(c.types)},
                                {"roots", Int(c.roots)},
                                {"sessions", Int(c.sessions)},
                                {"live_instances", Int(c.live_instances)},
                                {"arena_bytes", Int(c.arena_bytes)},
                                {"sealed", c.sealed},
                                {"dropped", c.dropped},
                                {"epoch", Hex64(c.epoch)},
                                {"damage", c.damage}});
    }
    PrintJson(toml::table{{"channels", std::move(out)}});
    return std::nullopt;
  }
  TextTable t({"NAME", "ID", ">TYPES", ">ROOTS", ">SESSIONS", ">INSTANCES", ">ARENA", "STATE"});
  for (const auto& c : *channels) {
    std::string state = !c.damage.empty() ? "DAMAGED"
                        : c.dropped           ? "dropped"
                        : (c.sealed ? "sealed" : "open");
    t.Add({c.name, c.id, std::to_string(c.types), std::to_string(c.roots),
           std::to_string(c.sessions), std::to_string(c.live_instances),
           HumanBytes(c.arena_bytes), state});
  }
  std::cout << t.Render();
  return std::nullopt;
}

Result Sessions(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(sessions, admin.Sessions());
  if (o.json) {
    toml::array out;
    for (const auto& s : *sessions) {
      toml::array channels;
      for (const auto& c : s.channels) channels.push_back(c);
      out.push_back(toml::table{{"id", s.id},
                                {"client_name", s.client_name},
                                {"pid", Int(s.pid)},
                                {"uid", Int(s.uid)},
                                {"attached_unix_ms", Int(s.attached_unix_ms)},
                                {"refs_held", Int(s.refs_held)},
                                {"channels", std::move(channels)}});
    }
    PrintJson(toml::table{{"sessions", std::move(out)}});
    return std::nullopt;
  }
  auto now_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  TextTable t({"SESSION", ">PID", ">UID", "NAME", "ATTACHED", ">REFS", "CHANNELS"});
  for (const auto& s : *sessions) {
    std::string channels;
    for (const auto& c : s.channels) channels += (channels.empty() ? "" : ",") + c;
    uint64_t age = now_ms > s.attached_unix_ms ? now_ms - s.attached_unix_ms : 0;
    t.Add({s.id.substr(0, 8), std::to_string(s.pid), std::to_string(s.uid), s.client_name,
           HumanDuration(age) + " ago", std::to_string(s.refs_held), channels});
  }
  std::cout << t.Render();
  return std::nullopt;
}

Result Types(AdminClient& admin, const Options& o) {
  bool sealed = false;
  STRUCTCTL_ASSIGN(types, admin.Types(o.channel, &sealed));
  if (o.json) {
    toml::array out;
    for (const auto& t : *types) {
      out.push_back(toml::table{{"key", t.key},
                                {"token", t.token.ToHex()},
                                {"type_index", Int(t.type_index)},
                                {"size", Int(t.layout.size())},
                                {"align", Int(t.layout.align())},
                                {"fields", Int(t.layout.fields().size())},
                                {"fingerprint", Hex64(t.layout.fingerprint())}});
    }
    PrintJson(toml::table{{"channel", o.channel}, {"sealed", sealed}, {"types", std::move(out)}});
    return std::nullopt;
  }
  TextTable t({"KEY", "TOKEN", ">SIZE", ">FIELDS", "FINGERPRINT"});
  for (const auto& ty : *types) {
    t.Add({ty.key, ShortToken(ty.token), std::to_string(ty.layout.size()),
           std::to_string(ty.layout.fields().size()), Hex64(ty.layout.fingerprint())});
  }
  std::cout << t.Render();
  if (sealed) std::printf("(registry sealed)\n");
  return std::nullopt;
}

Result Layout(AdminClient& admin, const Options& o) {
  auto found = FindType(admin, o.type, ChannelNames(admin, o.channel));
  if (auto* f = std::get_if<Failure>(&found)) return *f;
  const FoundType& ft = std::get<FoundType>(found);
  const shm::Layout& layout = ft.type.layout;
  // Holes: bytes between one field's end and the next field's offset, and
  // the tail padding up to the size.
  std::vector<uint32_t> holes_after(layout.fields().size(), 0);
  uint32_t end = 0, holes = 0;
  for (size_t i = 0; i < layout.fields().size(); ++i) {
    const shm::Field& f = layout.fields()[i];
    if (i > 0) holes_after[i - 1] = f.offset - end;
    holes += f.offset - end;
    end = f.offset + f.size;
  }
  uint32_t tail = layout.size() - end;
  if (o.json) {
    toml::array fields;
    for (size_t i = 0; i < layout.fields().size(); ++i) {
      const shm::Field& f = layout.fields()[i];
      fields.push_back(toml::table{{"name", f.name()},
                                   {"type", shm::FieldTypeName(f.spec)},
                                   {"offset", Int(f.offset)},
                                   {"size", Int(f.size)},
                                   {"align", Int(f.align)},
                                   {"hole_after", Int(holes_after[i])}});
    }
    PrintJson(toml::table{{"channel", ft.channel},
                          {"key", ft.type.key},
                          {"token", ft.type.token.ToHex()},
                          {"size", Int(layout.size())},
                          {"align", Int(layout.align())},
                          {"fingerprint", Hex64(layout.fingerprint())},
                          {"holes", Int(holes)},
                          {"tail_padding", Int(tail)},
                          {"fields", std::move(fields)}});
    return std::nullopt;
  }
  std::printf("struct %s {  /* channel %s, token %s, fingerprint %s */\n", ft.type.key.c_str(),
              ft.channel.c_str(), ft.type.token.ToHex().c_str(),
              Hex64(layout.fingerprint()).c_str());
  for (size_t i = 0; i < layout.fields().size(); ++i) {
    const shm::Field& f = layout.fields()[i];
    std::printf("    %-24s %-20s /* %6u %6u */\n", shm::FieldTypeName(f.spec).c_str(),
                (f.name() + ";").c_str(), f.offset, f.size);
    if (holes_after[i] > 0) std::printf("    /* XXX %u bytes hole */\n", holes_after[i]);
  }
  std::printf("    /* size: %u, align: %u, holes: %u bytes, tail padding: %u bytes */\n};\n",
              layout.size(), layout.align(), holes, tail);
  return std::nullopt;
}

Result Instances(AdminClient& admin, const Options& o) {
  shm::TypeToken filter;
  if (!o.type.empty()) {
    auto found = FindType(admin, o.type, {o.channel});
    if (auto* f = std::get_if<Failure>(&found)) return *f;
    filter = std::get<FoundType>(found).type.token;
  }
  STRUCTCTL_ASSIGN(listing, admin.Instances(o.channel, filter, o.limit));
  if (o.json) {
    toml::array counts, instances;
    for (const auto& c : listing->counts) {
      counts.push_back(toml::table{{"key", c.key},
                                   {"token", c.token.ToHex()},
                                   {"count", Int(c.count)},
                                   {"bytes", Int(c.bytes)}});
    }
    for (const auto& i : listing->instances) {
      instances.push_back(toml::table{{"ref", i.ref.ToString()},
                                      {"token", i.token.ToHex()},
                                      {"refcount", Int(i.refcount)}});
    }
    PrintJson(toml::table{{"channel", o.channel},
                          {"counts", std::move(counts)},
                          {"instances", std::move(instances)},
                          {"truncated", listing->truncated}});
    return std::nullopt;
  }
  TextTable counts({"TYPE", "TOKEN", ">COUNT", ">BYTES"});
  for (const auto& c : listing->counts) {
    counts.Add({c.key, ShortToken(c.token), std::to_string(c.count), HumanBytes(c.bytes)});
  }
  std::cout << counts.Render();
  if (!listing->instances.empty()) {
    TextTable refs({"REF", "TOKEN", ">REFCOUNT"});
    for (const auto& i : listing->instances) {
      refs.Add({i.ref.ToString(), ShortToken(i.token), std::to_string(i.refcount)});
    }
    std::cout << "\n" << refs.Render();
    if (listing->truncated) std::printf("(first %u shown; --limit N for more)\n", o.limit);
  }
  return std::nullopt;
}

toml::table ViewJson(const client::DecodedInstance& v) {
  toml::array fields;
  for (const auto& f : v.fields) {
    toml::table field{{"name", f.name}, {"type", f.type}, {"value", f.value}};
    if (!f.target.empty()) field.insert("target", ViewJson(f.target[0]));
    fields.push_back(std::move(field));
  }
  toml::table out{{"ref", v.ref.ToString()},     {"key", v.key},
                  {"token", v.token.ToHex()},     {"refcount", Int(v.refcount)},
                  {"generation", Int(v.generation)}, {"fields", std::move(fields)}};
  if (!v.error.empty()) out.insert("error", v.error);
  return out;
}

void PrintView(const client::DecodedInstance& v, int indent) {
  std::string pad(indent, ' ');
  std::printf("%s%s %s (refcount %u, generation %u)\n", pad.c_str(), v.key.c_str(),
              v.ref.ToString().c_str(), v.refcount, v.generation);
  if (!v.error.empty()) std::printf("%s  error: %s\n", pad.c_str(), v.error.c_str());
  for (const auto& f : v.fields) {
    std::printf("%s  %-16s %-16s = %s\n", pad.c_str(), f.name.c_str(), f.type.c_str(),
                f.value.c_str());
    if (!f.target.empty()) PrintView(f.target[0], indent + 4);
  }
}

Result Inspect(AdminClient& admin, const Options& o) {
  std::optional<shm::Ref> ref = shm::Ref::Parse(o.ref);
  if (!ref) {
    return Failure{kUsage, absl::StrCat("'", o.ref, "' is not a ref (write r:EXTENT:OFFSET:GEN "
                                                    "as structctl prints it, or 16 hex digits)")};
  }
  // Without --channel: the channel where the ref names a live instance.
  std::vector<std::pair<std::string, client::DecodedInstance>> hits;
  absl::Status last = absl::OkStatus();
  for (const std::string& ch : ChannelNames(admin, o.channel)) {
    auto view = admin.Inspect(ch, *ref, o.depth);
    if (view.ok()) {
      hits.emplace_back(ch, std::move(*view));
    } else {
      last = view.status();
      if (last.code() == absl::StatusCode::kUnavailable ||
          last.code() == absl::StatusCode::kPermissionDenied || !o.channel.empty()) {
        return FromStatus(last);
      }
    }
  }
  if (hits.empty()) {
    return Failure{kDaemonError,
                   last.ok() ? "NOT_FOUND: no channels" : last.ToString()};
  }
  if (hits.size() > 1) {
    return Failure{kUsage, absl::StrCat("ref ", o.ref, " is live in ", hits.size(),
                                        " channels: add --channel")};
  }
  if (o.json) {
    toml::table doc{{"channel", hits[0].first}, {"instance", ViewJson(hits[0].second)}};
    PrintJson(doc);
  } else {
    PrintView(hits[0].second, 0);
  }
  return std::nullopt;
}

Result Roots(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(roots, admin.Roots(o.channel));
  if (o.json) {
    toml::array out;
    for (const auto& r : *roots) {
      out.push_back(toml::table{{"name", r.name}, {"ref", r.ref.ToString()},
                                {"token", r.token.ToHex()}});
    }
    PrintJson(toml::table{{"channel", o.channel}, {"roots", std::move(out)}});
    return std::nullopt;
  }
  TextTable t({"NAME", "REF", "TOKEN"});
  for (const auto& r : *roots) t.Add({r.name, r.ref.ToString(), ShortToken(r.token)});
  std::cout << t.Render();
  return std::nullopt;
}

// The ports of `channels` (all when empty), as JSON objects or table rows.
Result PortRows(AdminClient& admin, const std::vector<std::string>& channels, bool json,
                toml::array& objects, TextTable& table) {
  for (const std::string& channel : channels) {
    STRUCTCTL_ASSIGN(ports, admin.Ports(channel));
    for (const client::PortInfo& p : *ports) {
      if (json) {
        objects.push_back(toml::table{{"channel", channel},
                                      {"name", p.name},
                                      {"ref", p.ref.ToString()},
                                      {"capacity", Int(p.capacity)},
                                      {"depth", Int(p.depth)},
                                      {"sent", Int(p.sent)},
                                      {"received", Int(p.received)},
                                      {"receivers_waiting", Int(p.receivers_waiting)},
                                      {"senders_waiting", Int(p.senders_waiting)}});
      } else {
        table.Add({channel, p.name, p.ref.ToString(),
                   std::to_string(p.depth) + "/" + std::to_string(p.capacity),
                   std::to_string(p.sent), std::to_string(p.received),
                   std::to_string(p.receivers_waiting), std::to_string(p.senders_waiting)});
      }
    }
  }
  return std::nullopt;
}

TextTable PortTable() {
  return TextTable({"CHANNEL", "PORT", "REF", ">DEPTH", ">SENT", ">RECEIVED", ">RECV-WAIT",
                    ">SEND-WAIT"});
}

Result Ports(AdminClient& admin, const Options& o) {
  toml::array objects;
  TextTable t = PortTable();
  if (Result r = PortRows(admin, {o.channel}, o.json, objects, t)) return r;
  if (o.json) {
    PrintJson(toml::table{{"channel", o.channel}, {"ports", std::move(objects)}});
  } else {
    std::cout << t.Render();
  }
  return std::nullopt;
}

Result Memory(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(m, admin.Memory(o.channel));
  if (o.json) {
    PrintJson(toml::table{{"channel", o.channel},
                          {"extents", Int(m->extents)},
                          {"extent_size", Int(m->extent_size)},
                          {"arena_bytes", Int(m->arena_bytes)},
                          {"live_bytes", Int(m->live_bytes)},
                          {"free_block_bytes", Int(m->free_block_bytes)},
                          {"class_slabs", Int(m->class_slabs)},
                          {"large_slabs", Int(m->large_slabs)},
                          {"unassigned_slabs", Int(m->unassigned_slabs)},
                          {"fragmentation", m->fragmentation}});
    return std::nullopt;
  }
  std::printf("extents          %u x %s = %s\n", m->extents, HumanBytes(m->extent_size).c_str(),
              HumanBytes(m->arena_bytes).c_str());
  std::printf("used             %s in live instances\n", HumanBytes(m->live_bytes).c_str());
  std::printf("free             %s in free blocks, %" PRIu64 " unassigned slabs\n",
              HumanBytes(m->free_block_bytes).c_str(), m->unassigned_slabs);
  std::printf("slabs            %" PRIu64 " size-class, %" PRIu64 " large\n", m->class_slabs,
              m->large_slabs);
  std::printf("fragmentation    %.1f%%\n", m->fragmentation * 100);
  return std::nullopt;
}

Result Metrics(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(m, admin.GetMetrics());
  if (o.json) {
    PrintJson(toml::table{{"metrics_listen", m->listen}, {"text", m->text}});
    return std::nullopt;
  }
  std::fputs(m->text.c_str(), stdout);
  return std::nullopt;
}

Result Check(AdminClient& admin, const Options& o) {
  STRUCTCTL_ASSIGN(c, admin.Check(o.channel));
  if (o.json) {
    toml::array problems;
    for (const auto& p : c->problems) {
      problems.push_back(toml::table{{"ref", p.ref.is_null() ? "" : p.ref.ToString()},
                                     {"what", p.what}});
    }
    PrintJson(toml::table{{"channel", o.channel},
                          {"ok", c->ok},
                          {"instances_checked", Int(c->instances_checked)},
                          {"problems", std::move(problems)}});
  } else if (c->ok) {
    std::printf("channel %s: ok (%" PRIu64 " instances checked)\n", o.channel.c_str(),
                c->instances_checked);
  } else {
    std::printf("channel %s: %zu problem(s) in %" PRIu64 " instances checked\n",
                o.channel.c_str(), c->problems.size(), c->instances_checked);
    for (const auto& p : c->problems) {
      std::printf("  %s: %s\n", p.ref.is_null() ? "-" : p.ref.ToString().c_str(), p.what.c_str());
    }
  }
  if (!c->ok) return Failure{kDaemonError, ""};
  return std::nullopt;
}

volatile sig_atomic_t g_interrupted = 0;

Result Watch(AdminClient& admin, const Options& o) {
  signal(SIGINT, [](int) { g_interrupted = 1; });
  signal(SIGTERM, [](int) { g_interrupted = 1; });
  bool tty = isatty(STDOUT_FILENO) && !o.json;
  for (uint32_t n = 0; !g_interrupted && (o.count == 0 || n < o.count); ++n) {
    if (n > 0) {
      auto until = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.interval * 1000));
      while (!g_interrupted && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (g_interrupted) break;
    }
    if (tty) std::printf("\033[H\033[2J");  // home, clear
    if (Result r = Status(admin, o)) return r;
    if (!o.json) std::printf("\n");
    if (Result r = Channels(admin, o)) return r;
    // Every channel's ports, when there are any.
    STRUCTCTL_ASSIGN(channels, admin.Channels());
    std::vector<std::string> names;
    for (const auto& c : *channels) {
      if (!c.dropped && c.damage.empty()) names.push_back(c.name);
    }
    toml::array objects;
    TextTable t = PortTable();
    if (Result r = PortRows(admin, names, o.json, objects, t)) return r;
    if (o.json) {
      PrintJson(toml::table{{"ports", std::move(objects)}});
    } else if (t.rows() > 0) {
      std::printf("\n%s", t.Render().c_str());
    }
    std::fflush(stdout);
  }
  return std::nullopt;
}

}  // namespace

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"structctl: inspect and check a running structd (Admin service).\n"
               "Exit codes: 0 ok, 1 the daemon reported an error (or check found damage),\n"
               "2 usage error, 3 no daemon reachable.",
               "structctl"};
  app.require_subcommand(1);
  app.add_option("--socket", o.socket, "daemon socket (default: $STRUCTD_SOCKET, else " +
                                           shm::DefaultSocketPath() + ")");
  app.add_option("--admin-capability", o.admin_capability,
                 "admin capability (root needs none; default: $STRUCTD_ADMIN_CAPABILITY, "
                 "else read from --admin-capability-file)");
  app.add_option("--admin-capability-file", o.admin_capability_file,
                 "file holding the admin capability (default: state/admin.capability beside "
                 "the socket; readable by the daemon's user only)");
  app.add_flag("--json", o.json, "print JSON (schema: doc/structctl.md)");

  std::function<Result(AdminClient&, const Options&)> run;
  auto command = [&](const char* name, const char* help,
                     std::function<Result(AdminClient&, const Options&)> fn) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->callback([&run, fn] { run = fn; });
    sub->add_flag("--json", o.json, "print JSON (schema: doc/structctl.md)");
    return sub;
  };
  command("status", "version, uptime, daemon instance, socket, arenas summary", Status);
  command("health", "the gRPC health check (exit 0 if SERVING)", Health);
  command("channels", "every channel with its counts", Channels);
  command("sessions", "attached client processes: pid, uid, since, references held", Sessions);
  command("types", "a channel's types: key, short token, size, fingerprint", Types)
      ->add_option("CHANNEL", o.channel, "channel name or id")
      ->required();
  auto* layout = command("layout", "a type's fields with offsets, sizes and padding holes", Layout);
  layout->add_option("TYPE", o.type, "key, token or token prefix")->required();
  layout->add_option("--channel", o.channel, "the channel (needed if TYPE is in several)");
  auto* instances = command("instances", "counts and bytes per type; refs with --limit", Instances);
  instances->add_option("CHANNEL", o.channel, "channel name or id")->required();
  instances->add_option("--type", o.type, "only this type (key, token or prefix)");
  instances->add_option("--limit", o.limit,
                        "refs to list (0: counts only; default 20; the daemon says the most)");
  auto* inspect = command("inspect", "decode an instance's fields, following refs", Inspect);
  inspect->add_option("REF", o.ref, "r:EXTENT:OFFSET:GEN or 16 hex digits")->required();
  inspect->add_option("--channel", o.channel, "the channel (default: where the ref is live)");
  inspect->add_option("--depth", o.depth, "ref hops to follow (0-8, default 1)")
      ->check(CLI::Range(0u, 8u));
  command("roots", "a channel's named roots", Roots)
      ->add_option("CHANNEL", o.channel, "channel name or id")
      ->required();
  command("ports", "a channel's ports: depth, capacity, messages in and out, waiters", Ports)
      ->add_option("CHANNEL", o.channel, "channel name or id")
      ->required();
  command("memory", "a channel's arena: extents, used and free bytes, fragmentation", Memory)
      ->add_option("CHANNEL", o.channel, "channel name or id")
      ->required();
  command("check", "read-only consistency check (exit 1 and a report on any damage)", Check)
      ->add_option("CHANNEL", o.channel, "channel name or id")
      ->required();
  command("metrics", "the daemon's metrics, in the Prometheus text format", Metrics);
  command("drop", "drop a channel as an operator (no owner capability needed)", Drop)
      ->add_option("CHANNEL", o.channel, "channel name or id")
      ->required();
  auto* snapshot = command("snapshot", "copy a channel to a new directory (doc/snapshots.md)",
                          Snapshot);
  snapshot->add_option("CHANNEL", o.channel, "channel name or id")->required();
  snapshot->add_option("DIR", o.dir, "a directory that does not exist yet")->required();
  auto* restore = command("restore", "bring a snapshot back as a new channel", Restore);
  restore->add_option("DIR", o.dir, "a directory written by structctl snapshot")->required();
  restore->add_option("--name", o.name, "the new channel's name (default: the snapshot's)");
  auto* set = command("set", "write one field of an instance (logged by the daemon)", Set);
  set->add_option("CHANNEL", o.channel, "channel name or id")->required();
  set->add_option("REF", o.ref, "r:EXTENT:OFFSET:GEN or 16 hex digits")->required();
  set->add_option("FIELD", o.field, "a field name, or NAME[INDEX] for an array element")
      ->required();
  set->add_option("VALUE", o.value,
                  "the value: a number, true/false, text for strings, hex for bytes, a ref "
                  "or null for refs")
      ->required();
  CLI::App* root = app.add_subcommand("root", "set or delete a named root (logged by the daemon)");
  root->require_subcommand(1);
  auto* root_set = root->add_subcommand("set", "point a root at an instance");
  root_set->callback([&run] { run = RootSet; });
  root_set->add_flag("--json", o.json, "print JSON (schema: doc/structctl.md)");
  root_set->add_option("CHANNEL", o.channel, "channel name or id")->required();
  root_set->add_option("NAME", o.name, "the root's name")->required();
  root_set->add_option("REF", o.ref, "r:EXTENT:OFFSET:GEN or 16 hex digits")->required();
  auto* root_delete = root->add_subcommand("delete", "delete a root (releasing its reference)");
  root_delete->callback([&run] { run = RootDelete; });
  root_delete->add_flag("--json", o.json, "print JSON (schema: doc/structctl.md)");
  root_delete->add_option("CHANNEL", o.channel, "channel name or id")->required();
  root_delete->add_option("NAME", o.name, "the root's name")->required();
  auto* watch = command("watch", "status, channels and ports, refreshed until interrupted", Watch);
  watch->add_option("--interval", o.interval, "seconds between refreshes (default 1)")
      ->check(CLI::PositiveNumber);
  watch->add_option("--count", o.count, "stop after N refreshes (default: until Ctrl-C)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }

  client::AdminOptions options;
  options.socket = o.socket;
  options.admin_capability = o.admin_capability;
  options.admin_capability_file = o.admin_capability_file;
  auto admin = AdminClient::Connect(options);
  if (!admin.ok()) {
    std::fprintf(stderr, "structctl: %s\n", std::string(admin.status().message()).c_str());
    // A daemon that is there but not trusted is not "no daemon".
    return admin.status().code() == absl::StatusCode::kPermissionDenied ? kDaemonError
                                                                        : kNoDaemon;
  }
  Result failure = run(**admin, o);
  if (!failure) return kOk;
  if (!failure->message.empty()) std::fprintf(stderr, "structctl: %s\n", failure->message.c_str());
  return failure->code;
}

}  // namespace structd::structctl

int main(int argc, char** argv) { return structd::structctl::Main(argc, argv); }
