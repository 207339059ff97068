#include "metrics.h"

#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/channel.h"
#include "core/core.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace structd::server {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

const char* CodeName(int code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",      "UNAVAILABLE",       "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? kNames[code] : "UNKNOWN";
}

// Bytes of "VmRSS" (all resident memory) or "RssAnon" (private, not file
// backed: the daemon's own heap) in /proc/self/status; 0 if unreadable.
double ProcStatusBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(key + ":")) {
      std::istringstream fields(line.substr(key.size() + 1));
      double kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

// Builds families of gauges and counters from values read at scrape time.
class Families {
 public:
  // Adds `value` to family `name` (made on first use) with `labels`.
  void Add(const std::string& name, const std::string& help, MetricType type,
           std::vector<ClientMetric::Label> labels, double value) {
    auto [it, fresh] = index_.try_emplace(name, families_.size());
    if (fresh) families_.push_back(MetricFamily{name, help, type, {}});
    ClientMetric m;
    m.label = std::move(labels);
    if (type == MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    families_[it->second].metric.push_back(std::move(m));
  }
  void Gauge(const std::string& name, const std::string& help, double value,
             std::vector<ClientMetric::Label> labels = {}) {
    Add(name, help, MetricType::Gauge, std::move(labels), value);
  }
  void Counter(const std::string& name, const std::string& help, double value,
               std::vector<ClientMetric::Label> labels = {}) {
    Add(name, help, MetricType::Counter, std::move(labels), value);
  }
  std::vector<MetricFamily> Take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
  std::map<std::string, size_t> index_;
};

// One RPC: reports its method and status when the status is sent.
class RpcInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(DaemonMetrics* metrics, std::string method, bool unary)
      : metrics_(metrics),
        method_(std::move(method)),
        unary_(unary),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->RecordRpc(method_, methods->GetSendStatus().error_code(), unary_, seconds);
    }
    methods->Proceed();
  }

 private:
  DaemonMetrics* metrics_;
  std::string method_;
  bool unary_;
  std::chrono::steady_clock::time_point start_;
};

class RpcInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(DaemonMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(
        metrics_, info->method() != nullptr ? info->method() : "",
        info->type() == grpc::experimental::ServerRpcInfo::Type::UNARY);
  }

 private:
  DaemonMetrics* metrics_;
};

}  // namespace

// Everything read from the core at scrape time.
class CoreCollector : public prometheus::Collectable {
 public:
  CoreCollector(const Core* core, std::chrono::steady_clock::time_point started)
      : core_(core), started_(started) {}

  std::vector<MetricFamily> Collect() const override {
    Families f;
    f.Gauge("structd_uptime_seconds", "Seconds since the daemon started.",
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    f.Gauge("structd_process_resident_memory_bytes",
            "The daemon's resident memory (VmRSS), arenas it maps included.",
            ProcStatusBytes("VmRSS"));
    f.Gauge("structd_process_anon_memory_bytes",
            "The daemon's private memory (RssAnon): its own heap, not the arenas.",
            ProcStatusBytes("RssAnon"));
    const Core::Totals totals = core_->GetTotals();
    f.Gauge("structd_channels", "Channels in the daemon.", totals.channels);
    f.Gauge("structd_sessions", "Attached sessions (client processes).", totals.sessions);
    const EventCounts& e = core_->events();
    f.Counter("structd_session_attaches_total", "Sessions attached, new or resumed.",
              static_cast<double>(e.attaches.load(std::memory_order_relaxed)));
    f.Counter("structd_session_ends_total", "Sessions ended, for any reason.",
              static_cast<double>(e.session_ends.load(std::memory_order_relaxed)));
    f.Counter("structd_session_lease_expiries_total",
              "Sessions ended because their lease expired and their process was gone.",
              static_cast<double>(e.lease_expiries.load(std::memory_order_relaxed)));
    f.Counter("structd_references_released_after_exit_total",
              "References the daemon released for sessions whose process had exited or "
              "died, or that did not resume after a restart.",
              static_cast<double>(e.released_after_exit.load(std::memory_order_relaxed)));
    f.Counter("structd_recovery_repairs_total",
              "Repairs recovery made at start-up: refcounts fixed, dangling references "
              "dropped, leaked instances freed, damaged files repaired.",
              static_cast<double>(e.recovery_repairs.load(std::memory_order_relaxed)));
    for (const std::shared_ptr<Channel>& c : core_->Channels()) {
      const ChannelStats s = c->Stats();
      const std::vector<ClientMetric::Label> ch = {{"channel", c->name()}};
      f.Gauge("structd_channel_sessions", "Sessions that joined the channel.", s.sessions, ch);
      f.Gauge("structd_channel_types", "Types registered in the channel.", s.types, ch);
      f.Gauge("structd_channel_roots", "Roots of the channel.", s.roots, ch);
      f.Gauge("structd_channel_live_instances", "Live instances in the channel's arena.",
              static_cast<double>(s.alloc.live_instances), ch);
      f.Gauge("structd_channel_live_bytes",
              "Bytes of the channel's live blocks, instance headers included.",
              static_cast<double>(s.alloc.live_block_bytes), ch);
      f.Gauge("structd_channel_free_block_bytes",
              "Bytes of freed blocks waiting on the channel's free lists.",
              static_cast<double>(s.alloc.free_block_bytes), ch);
      f.Gauge("structd_channel_arena_extents", "Extents of the channel's arena.",
              static_cast<double>(s.alloc.extents), ch);
      f.Gauge("structd_channel_arena_bytes", "Bytes of the channel's arena extents.",
              static_cast<double>(s.alloc.extent_bytes), ch);
      f.Gauge("structd_channel_fragmentation_ratio",
              "1 - live bytes / bytes of assigned slabs (0 when none is assigned).",
              s.fragmentation(), ch);
      f.Counter("structd_channel_hostile_memory_refusals_total",
                "Times the daemon refused to act on channel memory a member had written "
                "(references naming nothing, damaged headers or slab descriptors, arena "
                "files resized through a member's descriptor), since the daemon started.",
                static_cast<double>(s.alloc.damage_refused + s.alloc.descriptor_mismatches +
                                    s.file_size_repairs),
                ch);
      for (const TypeLive& t : s.by_type) {
        const std::vector<ClientMetric::Label> labels = {{"channel", c->name()},
                                                         {"type", t.key}};
        f.Gauge("structd_type_live_instances", "Live instances of a type in a channel.",
                static_cast<double>(t.instances), labels);
        f.Gauge("structd_type_live_bytes",
                "Bytes of the live blocks of a type in a channel, headers included.",
                static_cast<double>(t.bytes), labels);
      }
    }
    return f.Take();
  }

 private:
  const Core* core_;
  std::chrono::steady_clock::time_point started_;
};

DaemonMetrics::DaemonMetrics(const Core* core, std::chrono::steady_clock::time_point started)
    : registry_(std::make_shared<prometheus::Registry>()),
      core_collector_(std::make_shared<CoreCollector>(core, started)) {
  rpcs_ = &prometheus::BuildCounter()
               .Name("structd_rpcs_total")
               .Help("RPCs the daemon answered, by method and status code.")
               .Register(*registry_);
  rpc_seconds_ = &prometheus::BuildHistogram()
                      .Name("structd_rpc_duration_seconds")
                      .Help("Time the daemon took to answer unary RPCs, by method.")
                      .Register(*registry_);
}

DaemonMetrics::~DaemonMetrics() = default;

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
DaemonMetrics::MakeRpcInterceptorFactory() {
  return std::make_unique<RpcInterceptorFactory>(this);
}

void DaemonMetrics::RecordRpc(const std::string& method, int code, bool timed, double seconds) {
  rpcs_->Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  if (timed) {
    static const prometheus::Histogram::BucketBoundaries kBuckets = {
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
        0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
    rpc_seconds_->Add({{"method", method}}, kBuckets).Observe(seconds);
  }
}

absl::Status DaemonMetrics::Serve(const std::string& listen) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics_listen '", listen, "': cannot serve metrics there (", e.what(),
        "); give HOST:PORT of a free port on a local address, e.g. 127.0.0.1:9464"));
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(core_collector_);
  std::vector<int> ports = exposer_->GetListeningPorts();
  std::string host = listen.substr(0, listen.rfind(':'));
  serving_ = ports.empty() ? listen : absl::StrCat(host, ":", ports.front());
  return absl::OkStatus();
}

std::string DaemonMetrics::ServingAddress() const { return serving_; }

std::string DaemonMetrics::Exposition() const {
  std::vector<MetricFamily> families = registry_->Collect();
  std::vector<MetricFamily> core = core_collector_->Collect();
  families.insert(families.end(), std::make_move_iterator(core.begin()),
                  std::make_move_iterator(core.end()));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace structd::server
