// Example 2: a shared order book top, one writer and two readers that bind
// different behavior to the same type.
//
//   order_book [TICKS] [-- READER COMMAND...]     (TICKS default 200)
//
// A READER COMMAND is started as one more reader, with the channel's name
// and member capability appended to its arguments: for example the Python
// analyst, client/python/examples/order_book_analyst.py, which binds
// behavior of its own in another language.
//
// The writer updates the book under its mutex field (an RAII guard) and
// signals the condition field. The "printer" process binds a table whose
// describe() formats the quote; the "analyst" binds one that computes the
// spread and mid price. Each sees only the behavior it bound.
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "example_util.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"

#define BOOK_FIELDS(F)                                                          \
  F(lock, mutex) F(changed, condition) F(version, u64) F(bid, f64) F(bid_qty, u64) \
  F(ask, f64) F(ask_qty, u64) F(symbol, string(8)) F(closed, bool)
STRUCTD_STRUCT(Book, BOOK_FIELDS);

// The behavior table: what a process can do with a Book.
struct BookMethods {
  std::function<std::string(const Book&)> describe;
};

using structd::client::Channel;
using structd::client::Client;
using structd::examples::Check;

namespace {

// Waits for versions to change and describes the book through whatever
// this process bound; stops when the writer closes the book.
int Reader(const std::string& channel, const std::string& capability, const std::string& role) {
  auto client = Client::Connect();
  Check(client.status(), "connect");
  auto ch = (*client)->Join(channel, capability);
  Check(ch.status(), "join");
  Channel& c = **ch;
  BookMethods methods;
  if (role == "printer") {
    methods.describe = [](const Book& b) {
      char line[128];
      std::snprintf(line, sizeof line, "%s  bid %.2f x %llu | ask %.2f x %llu",
                    b.symbol().Read().value_or("?").c_str(), b.bid().load(),
                    static_cast<unsigned long long>(b.bid_qty().load()), b.ask().load(),
                    static_cast<unsigned long long>(b.ask_qty().load()));
      return std::string(line);
    };
  } else {
    methods.describe = [](const Book& b) {
      char line[128];
      std::snprintf(line, sizeof line, "spread %.2f  mid %.3f", b.ask().load() - b.bid().load(),
                    (b.ask().load() + b.bid().load()) / 2);
      return std::string(line);
    };
  }
  Check(c.Bind<Book>(methods), "bind");
  (*client)->SealBindings();  // this process's behavior is final
  auto ref = c.GetRoot("book");
  Check(ref.status(), "root");
  auto book = c.View<Book>(*ref);
  Check(book.status(), "view");
  uint64_t seen = 0;
  int printed = 0;
  while (true) {
    std::string text;
    bool closed = false;
    {
      auto guard = book->lock().Lock();
      Check(guard.status(), "lock");
      (void)book->changed().WaitFor(*guard, std::chrono::milliseconds(100), [&] {
        return book->version().load() != seen || book->closed().load();
      });
      closed = book->closed().load();
      // A reader that started after the last update still shows the book once.
      if (closed && printed > 0) break;
      seen = book->version().load();
      // Sampled under the lock: a consistent quote.
      auto described = c.Call(*book, &BookMethods::describe);
      Check(described.status(), "describe");
      text = *described;
    }
    if (seen % 50 == 0 || printed == 0) {
      std::printf("[%s pid %d] v%llu %s\n", role.c_str(), getpid(),
                  static_cast<unsigned long long>(seen), text.c_str());
      std::fflush(stdout);
      ++printed;
    }
    if (closed) break;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "reader") return Reader(argv[2], argv[3], argv[4]);
  int ticks = argc > 1 && std::string(argv[1]) != "--" ? std::atoi(argv[1]) : 200;
  std::vector<std::string> extra_reader;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      extra_reader.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  auto client = Client::Connect();
  Check(client.status(), "connect");
  std::string name = "example-book-" + std::to_string(getpid());
  auto created = (*client)->CreateChannel(name);
  Check(created.status(), "create channel");
  Channel& c = *created->channel;
  auto book = c.Allocate<Book>();
  Check(book.status(), "allocate");
  Check((*book)->symbol().Write("ACME"), "symbol");
  Check(c.SetRoot("book", book->ref()), "set root");

  pid_t printer = structd::examples::SpawnSelf({"reader", name, created->member_capability, "printer"});
  pid_t analyst = structd::examples::SpawnSelf({"reader", name, created->member_capability, "analyst"});
  pid_t extra = -1;
  if (!extra_reader.empty()) {
    extra_reader.push_back(name);
    extra_reader.push_back(created->member_capability);
    extra = structd::examples::Spawn(extra_reader);
  }
  // The writer has no behavior bound for Book, and says so when asked.
  auto unbound = c.Call(**book, &BookMethods::describe);
  std::printf("[writer] describe without a binding: %s\n", unbound.status().ToString().c_str());
  std::fflush(stdout);

  for (int i = 1; i <= ticks; ++i) {
    {
      auto guard = (*book)->lock().Lock();
      Check(guard.status(), "lock");
      double mid = 100 + (i % 17) * 0.25;
      (*book)->bid().store(mid - 0.05 * (1 + i % 3));
      (*book)->ask().store(mid + 0.05 * (1 + i % 2));
      (*book)->bid_qty().store(10 + i % 40);
      (*book)->ask_qty().store(5 + i % 25);
      (*book)->version().store(i);
    }
    (*book)->changed().NotifyAll();
    usleep(2000);
  }
  {
    auto guard = (*book)->lock().Lock();
    (*book)->closed().store(true);
  }
  (*book)->changed().NotifyAll();
  bool ok = structd::examples::WaitOk(printer) && structd::examples::WaitOk(analyst);
  if (extra > 0) ok = structd::examples::WaitOk(extra) && ok;
  std::printf("[writer] %d updates published; readers %s\n", ticks, ok ? "done" : "FAILED");
  book->Reset();
  Check((*client)->DropChannel(name, created->owner_capability), "drop channel");
  return ok ? 0 : 1;
}
