#include <deque>

#include "rpc/services.h"
#include "spdlog/spdlog.h"

namespace structd::server {

// One Attach stream: hello, `attached`, then heartbeats until the stream
// ends. Reads are always outstanding one at a time; writes are queued and
// started one at a time (the attached event, a shutting_down event).
class SessionService::Reactor final
    : public grpc::ServerBidiReactor<v1::AttachRequest, v1::AttachEvent> {
 public:
  Reactor(SessionService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed the stream, died, or was cancelled
      Finish(grpc::Status::OK);
      return;
    }
    if (session_id_.empty()) {
      Hello();
      return;
    }
    if (in_.has_heartbeat()) service_->core_->Heartbeat(session_id_);
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    base::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) return;  // the stream is going; OnReadDone(false) follows
    if (!pending_.empty()) StartNextWriteLocked();
  }

  void OnDone() override {
    {
      base::MutexLock lock(&service_->mu_);
      if (!session_id_.empty()) {
        auto it = service_->live_.find(session_id_);
        if (it != service_->live_.end() && it->second == this) service_->live_.erase(it);
      }
    }
    // A daemon that is stopping keeps the session's ledgers and record:
    // the next daemon lets the process resume it (Core::Recover).
    if (!session_id_.empty() && !service_->stopping_.load()) {
      service_->DetachLater(session_id_);
    }
    delete this;
  }

  // REQUIRES: service_->mu_ held (the reactor is in live_).
  void Send(const v1::AttachEvent& event) ABSL_LOCKS_EXCLUDED(mu_) {
    base::MutexLock lock(&mu_);
    pending_.push_back(event);
    if (!writing_) StartNextWriteLocked();
  }
  void Cancel() { context_->TryCancel(); }

 private:
  void Hello() {
    if (!in_.has_hello()) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "attach: the first message must be hello (send "
                          "AttachRequest.hello, then heartbeats)"));
      return;
    }
    PeerCredentials peer = service_->peers_->Lookup(context_->peer());
    // The process itself, so the lease never ends a live process's session.
    peer.process = service_->peers_->ProcessOf(context_->peer());
    absl::StatusOr<SessionInfo> s =
        service_->core_->Attach(peer, in_.hello().client_name(), in_.hello().resume_session_id(),
                                in_.hello().resume_secret());
    if (!s.ok()) {
      Finish(ToGrpc(s.status()));
      return;
    }
    session_id_ = s->id;
    v1::AttachEvent attached;
    v1::Attached* a = attached.mutable_attached();
    a->set_session_id(s->id);
    a->set_session_secret(s->secret);
    a->set_pid(static_cast<uint32_t>(s->pid));
    a->set_uid(static_cast<uint32_t>(s->uid));
    a->set_lease_ms(static_cast<uint32_t>(service_->core_->options().lease.count()));
    a->set_daemon_instance(service_->core_->instance_id());
    a->set_daemon_version(STRUCTD_VERSION);
    a->set_max_refs_per_call(service_->core_->options().max_refs_per_call);
    a->set_memory_socket(service_->memory_socket_);
    {
      base::MutexLock lock(&service_->mu_);
      service_->live_[session_id_] = this;
      Send(attached);
    }
    StartRead(&in_);
  }

  void StartNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    out_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    StartWrite(&out_);
  }

  SessionService* const service_;
  grpc::CallbackServerContext* const context_;
  v1::AttachRequest in_;
  std::string session_id_;  // set once, by the reading side
  base::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::AttachEvent> pending_ ABSL_GUARDED_BY(mu_);
  v1::AttachEvent out_;                  // the write in flight
};

SessionService::SessionService(Core* core, const PeerTable* peers, std::string memory_socket)
    : core_(core),
      peers_(peers),
      memory_socket_(std::move(memory_socket)),
      detach_thread_([this] { DetachWorker(); }) {}

SessionService::~SessionService() {
  {
    base::MutexLock lock(&mu_);
    closing_ = true;
  }
  detach_cv_.SignalAll();
  detach_thread_.join();
}

grpc::ServerBidiReactor<v1::AttachRequest, v1::AttachEvent>* SessionService::Attach(
    grpc::CallbackServerContext* context) {
  return new Reactor(this, context);
}

void SessionService::Cancel(const std::string& id) {
  base::MutexLock lock(&mu_);
  auto it = live_.find(id);
  if (it != live_.end()) it->second->Cancel();
}

void SessionService::AnnounceShutdown(const std::string& reason) {
  v1::AttachEvent event;
  event.mutable_shutting_down()->set_reason(reason);
  stopping_.store(true);
  base::MutexLock lock(&mu_);
  for (auto& [id, reactor] : live_) reactor->Send(event);
}

size_t SessionService::attached_count() {
  base::MutexLock lock(&mu_);
  return live_.size();
}

void SessionService::DetachLater(const std::string& id) {
  {
    base::MutexLock lock(&mu_);
    to_detach_.push_back(id);
  }
  detach_cv_.Signal();
}

void SessionService::DetachWorker() {
  base::MutexLock lock(&mu_);
  while (true) {
    while (!closing_ && to_detach_.empty()) detach_cv_.Wait(&mu_);
    if (to_detach_.empty()) return;  // closing, nothing left
    std::vector<std::string> batch;
    batch.swap(to_detach_);
    mu_.Unlock();
    for (const std::string& id : batch) core_->Detach(id);
    mu_.Lock();
  }
}

}  // namespace structd::server
