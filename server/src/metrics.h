#ifndef STRUCTD_SERVER_METRICS_H_
#define STRUCTD_SERVER_METRICS_H_

// The daemon's Prometheus metrics (doc/operations.md, "Metrics"): served
// over HTTP by prometheus-cpp's exposer when `metrics_listen` is set, and
// as text through Admin.GetMetrics (structctl metrics) always.
//
// Two sources. RPCs are counted as they finish, by a gRPC server
// interceptor (MakeRpcInterceptorFactory). Everything else is read from
// the core when scraped: its event counters (EventCounts) and each
// channel's statistics, so the core keeps no Prometheus types and a
// scrape costs one short lock per channel.
//
// Labels stay bounded: the RPC method (a fixed set) and status code, the
// channel name (at most max_channels), the type key (at most
// max_types_per_channel per channel). Never a ref or a session id.
//
// Thread safety: every method may be called from any thread.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/support/server_interceptor.h"

namespace prometheus {
class Exposer;
class Registry;
template <typename T>
class Family;
class Counter;
class Histogram;
}  // namespace prometheus

namespace structd::server {

class Core;
class CoreCollector;

class DaemonMetrics {
 public:
  DaemonMetrics(const Core* core, std::chrono::steady_clock::time_point started);
  ~DaemonMetrics();
  DaemonMetrics(const DaemonMetrics&) = delete;
  DaemonMetrics& operator=(const DaemonMetrics&) = delete;

  // For ServerBuilder::experimental().SetInterceptorCreators: counts each
  // RPC by method and status code, and times unary ones.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  MakeRpcInterceptorFactory();

  // Serves GET /metrics on `listen` ("HOST:PORT"; port 0 picks a free
  // one). InvalidArgument if it cannot listen there, saying why.
  absl::Status Serve(const std::string& listen);
  // Where Serve listens ("" if it does not): "HOST:PORT" with the real port.
  std::string ServingAddress() const;

  // Every metric in the Prometheus text exposition format (0.0.4).
  std::string Exposition() const;

  // One finished RPC (the interceptor's report).
  void RecordRpc(const std::string& method, int code, bool timed, double seconds);

 private:
  std::shared_ptr<prometheus::Registry> registry_;  // RPC metrics
  prometheus::Family<prometheus::Counter>* rpcs_ = nullptr;
  prometheus::Family<prometheus::Histogram>* rpc_seconds_ = nullptr;
  std::shared_ptr<CoreCollector> core_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string serving_;
};

}  // namespace structd::server

#endif  // STRUCTD_SERVER_METRICS_H_
