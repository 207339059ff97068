// Example 3: handing a large graph of structs to another process by
// passing one 64-bit reference.
//
//   graph_handoff [NODES]     (default 1000000)
//
// The parent builds a binary tree of NODES nodes in the arena (each node
// owns its children through ref fields), then starts a reader process and
// gives it nothing but the root's 64-bit ref on its command line. The
// reader resolves it and walks the whole tree in place: no copy, no
// serialization, whatever the size.
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "example_util.h"
#include "structd/client/channel.h"
#include "structd/client/client.h"

class TreeNode;
#define TREE_NODE_FIELDS(F) F(value, u64) F(left, ref(TreeNode)) F(right, ref(TreeNode))
STRUCTD_STRUCT(TreeNode, TREE_NODE_FIELDS);

using structd::client::Channel;
using structd::client::Client;
using structd::client::Ref;
using structd::examples::Check;

namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int Reader(const std::string& channel, const std::string& capability, const std::string& ref_text) {
  auto start = std::chrono::steady_clock::now();
  auto client = Client::Connect();
  Check(client.status(), "connect");
  auto ch = (*client)->Join(channel, capability);
  Check(ch.status(), "join");
  std::optional<Ref> root = Ref::Parse(ref_text);
  if (!root) {
    std::fprintf(stderr, "not a ref: %s\n", ref_text.c_str());
    return 2;
  }
  // Take our own reference while we read (the sender may let go).
  auto owned = (*ch)->Retain<TreeNode>(*root);
  Check(owned.status(), "retain the root");
  uint64_t sum = 0, count = 0;
  std::vector<Ref> stack = {*root};  // iterative: a deep graph must not overflow
  while (!stack.empty()) {
    Ref at = stack.back();
    stack.pop_back();
    auto node = (*ch)->View<TreeNode>(at);
    Check(node.status(), "view");
    sum += node->value().load();
    ++count;
    for (Ref child : {node->left().load(), node->right().load()}) {
      if (!child.is_null()) stack.push_back(child);
    }
  }
  std::printf("[reader pid %d] got ref %s: walked %" PRIu64 " nodes, sum %" PRIu64
              ", in %.3f s (connect included)\n",
              getpid(), ref_text.c_str(), count, sum, Since(start));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "reader") return Reader(argv[2], argv[3], argv[4]);
  uint32_t n = argc > 1 ? static_cast<uint32_t>(std::atol(argv[1])) : 1000000;
  if (n == 0) n = 1;
  auto client = Client::Connect();
  Check(client.status(), "connect");
  std::string name = "example-graph-" + std::to_string(getpid());
  auto created = (*client)->CreateChannel(name);
  Check(created.status(), "create channel");
  Channel& c = *created->channel;

  auto start = std::chrono::steady_clock::now();
  auto nodes = c.AllocateBatch<TreeNode>(n);
  Check(nodes.status(), "allocate");
  // Node i's children are 2i+1 and 2i+2: a complete binary tree. Each
  // child's reference moves into its parent's field.
  structd::client::RefStores links;
  for (uint32_t i = 0; i < n; ++i) {
    (*nodes)[i]->value().store(i);
    if (2 * i + 1 < n) links.Move((*nodes)[i]->left(), (*nodes)[2 * i + 1]);
    if (2 * i + 2 < n) links.Move((*nodes)[i]->right(), (*nodes)[2 * i + 2]);
  }
  Check(c.Store(links), "link");
  std::printf("[builder] built a tree of %u nodes in %.3f s\n", n, Since(start));
  std::fflush(stdout);

  std::string root = (*nodes)[0].ref().ToString();
  pid_t reader = structd::examples::SpawnSelf({"reader", name, created->member_capability, root});
  bool ok = structd::examples::WaitOk(reader);
  uint64_t expected = uint64_t{n} * (n - 1) / 2;
  std::printf("[builder] expected sum %" PRIu64 "; handed over 8 bytes\n", expected);
  (*nodes)[0].Reset();  // frees the whole tree, child by child
  Check((*client)->DropChannel(name, created->owner_capability), "drop channel");
  return ok ? 0 : 1;
}
