#ifndef STRUCTD_TESTS_TESTING_CLIENT_CONNECT_H_
#define STRUCTD_TESTS_TESTING_CLIENT_CONNECT_H_

// The client library and the admin client connected to a test daemon.
// Header-only: only tests that link structd::client include it.

#include <gtest/gtest.h>

#include <memory>

#include "structd/client/admin.h"
#include "structd/client/client.h"
#include "testing/daemon_process.h"

namespace structd::testing {

// Null (with a test failure) if the daemon does not answer.
inline std::unique_ptr<client::Client> ConnectTo(const DaemonProcess& daemon) {
  client::ClientOptions o;
  o.socket = daemon.socket();
  auto c = client::Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

inline std::unique_ptr<client::AdminClient> AdminOf(const DaemonProcess& daemon) {
  client::AdminOptions o;
  o.socket = daemon.socket();
  auto a = client::AdminClient::Connect(o);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(*a) : nullptr;
}

}  // namespace structd::testing

#endif  // STRUCTD_TESTS_TESTING_CLIENT_CONNECT_H_
