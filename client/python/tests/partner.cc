// The C++ side of the Python cross-language tests (client/python/tests/).
// Each command joins CHANNEL with CAPABILITY (on $STRUCTD_SOCKET), does one
// thing to the instance at root ROOT, prints what it found and exits 0, or
// prints the problem and exits 1. The structs are the ones
// test_cross_language.py declares in Python, field for field.
//
//   partner types    CHANNEL CAP                 prints "KEY TOKEN" per type
//   partner count    CHANNEL CAP ROOT N          N x fetch_add(1) on Counter.hits
//   partner write    CHANNEL CAP ROOT N          N whole strings into Note.text
//   partner read     CHANNEL CAP ROOT N          N reads of Note.text, each whole
//   partner build    CHANNEL CAP ROOT N          a list of N Nodes 1..N at ROOT
//   partner walk     CHANNEL CAP ROOT            prints "nodes COUNT sum SUM"
//   partner shape    CHANNEL CAP                 uses Shape with C++'s layout

#include <cstdio>
#include <cstdlib>
#include <string>

#include "structd/client/channel.h"
#include "structd/client/client.h"

#define COUNTER_FIELDS(F) F(hits, u64) F(total, i64)
STRUCTD_STRUCT(Counter, COUNTER_FIELDS);
#define NOTE_FIELDS(F) F(version, u32) F(text, string(64))
STRUCTD_STRUCT(Note, NOTE_FIELDS);
#define NODE_FIELDS(F) F(value, i64) F(next, anyref)
STRUCTD_STRUCT(Node, NODE_FIELDS);
// Python declares Shape with (sides u32, area f64): a different layout.
#define SHAPE_FIELDS(F) F(area, f64) F(sides, u32)
STRUCTD_STRUCT(Shape, SHAPE_FIELDS);

namespace {

using structd::client::Channel;
using structd::client::Client;

[[noreturn]] void Fail(const std::string& what, const absl::Status& s) {
  std::printf("%s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// The two values writers alternate: a read must be exactly one of them.
std::string NoteValue(uint64_t i) {
  return i % 2 == 0 ? std::string(64, 'a') : std::string(17, 'Z') + "-" + std::to_string(i % 7);
}

bool WholeNote(const std::string& s) {
  if (s.empty() || s == std::string(64, 'a') || s == std::string(64, 'p')) return true;
  // Python writes "q" * 33 + digit; C++ writes Z * 17 + "-" + digit.
  if (s.size() == 19 && s.substr(0, 18) == std::string(17, 'Z') + "-") return true;
  if (s.size() == 34 && s.substr(0, 33) == std::string(33, 'q')) return true;
  return false;
}

int Run(int argc, char** argv) {
  if (argc < 4) {
    std::printf("usage: partner COMMAND CHANNEL CAPABILITY [ROOT] [N]\n");
    return 2;
  }
  const std::string command = argv[1];
  auto client = Client::Connect();
  if (!client.ok()) Fail("connect", client.status());
  auto joined = (*client)->Join(argv[2], argv[3]);
  if (!joined.ok()) Fail("join", joined.status());
  Channel& ch = **joined;
  const std::string root = argc > 4 ? argv[4] : "";
  const uint64_t n = argc > 5 ? std::strtoull(argv[5], nullptr, 10) : 0;

  if (command == "types") {
    auto counter = ch.Use<Counter>();
    auto note = ch.Use<Note>();
    auto node = ch.Use<Node>();
    if (!counter.ok() || !note.ok() || !node.ok()) Fail("use", absl::InternalError("a type"));
    for (const auto* t : {&*counter, &*note, &*node}) {
      std::printf("%s %s\n", t->key.c_str(), t->token.ToHex().c_str());
    }
    return 0;
  }
  if (command == "shape") {
    auto shape = ch.Use<Shape>();
    if (!shape.ok()) Fail("shape", shape.status());
    std::printf("Shape %s\n", shape->token.ToHex().c_str());
    return 0;
  }
  if (command == "build") {
    // value i at position i, built back to front; the root takes the head.
    structd::client::Owned<Node> next;
    for (uint64_t i = n; i >= 1; --i) {
      auto node = ch.Allocate<Node>();
      if (!node.ok()) Fail("allocate", node.status());
      (*node)->value().store(static_cast<int64_t>(i));
      if (next) {
        if (absl::Status s = ch.Store((*node)->next(), std::move(next)); !s.ok()) {
          Fail("store", s);
        }
      }
      next = std::move(*node);
    }
    if (absl::Status s = ch.SetRoot(root, next.ref()); !s.ok()) Fail("set root", s);
    std::printf("built %llu\n", static_cast<unsigned long long>(n));
    return 0;
  }
  auto at = ch.GetRoot(root);
  if (!at.ok()) Fail("root " + root, at.status());
  if (command == "count") {
    auto counter = ch.View<Counter>(*at);
    if (!counter.ok()) Fail("view", counter.status());
    for (uint64_t i = 0; i < n; ++i) {
      counter->hits().fetch_add(1);
      counter->total().fetch_add(2);
    }
    std::printf("counted %llu\n", static_cast<unsigned long long>(n));
    return 0;
  }
  if (command == "write" || command == "read") {
    auto note = ch.View<Note>(*at);
    if (!note.ok()) Fail("view", note.status());
    for (uint64_t i = 0; i < n; ++i) {
      if (command == "write") {
        if (absl::Status s = note->text().Write(NoteValue(i)); !s.ok()) Fail("write", s);
        note->version().fetch_add(1);
      } else {
        auto text = note->text().Read();
        if (!text.ok()) Fail("read", text.status());
        if (!WholeNote(*text)) {
          std::printf("torn read %llu: '%s'\n", static_cast<unsigned long long>(i),
                      text->c_str());
          return 1;
        }
      }
    }
    std::printf("%s %llu whole\n", command.c_str(), static_cast<unsigned long long>(n));
    return 0;
  }
  if (command == "walk") {
    uint64_t count = 0;
    int64_t sum = 0;
    for (structd::shm::Ref r = *at; r;) {
      auto node = ch.View<Node>(r);
      if (!node.ok()) Fail("view", node.status());
      ++count;
      sum += node->value().load();
      r = node->next().load();
    }
    std::printf("nodes %llu sum %lld\n", static_cast<unsigned long long>(count),
                static_cast<long long>(sum));
    return 0;
  }
  std::printf("unknown command %s\n", command.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int rc = Run(argc, argv);
  std::fflush(stdout);
  return rc;
}
