#include "structd/client/client.h"

#include "client/src/connection.h"
#include "structd/client/channel.h"

namespace structd::client {

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  absl::StatusOr<std::shared_ptr<internal::Connection>> c =
      internal::Connection::Open(std::move(options));
  if (!c.ok()) return c.status();
  return std::unique_ptr<Client>(new Client(std::move(*c)));
}

Client::Client(std::shared_ptr<internal::Connection> connection)
    : connection_(std::move(connection)) {}

Client::~Client() { connection_->Close(); }

absl::StatusOr<CreatedChannel> Client::CreateChannel(const std::string& name) {
  v1::CreateChannelRequest request;
  request.set_name(name);
  v1::CreateChannelResponse response;
  if (absl::Status s = connection_->Call(connection_->registry(),
                                         &v1::Registry::Stub::CreateChannel, request,
                                         &response);
      !s.ok()) {
    return s;
  }
  std::shared_ptr<Channel> channel(
      new Channel(connection_, name, response.channel_id(), response.owner_capability()));
  if (absl::Status s = channel->MapArena(response.arena().epoch());
      !s.ok()) {
    return s;
  }
  connection_->Track(channel);
  return CreatedChannel{std::move(channel), response.owner_capability(),
                        response.member_capability()};
}

absl::StatusOr<std::shared_ptr<Channel>> Client::Join(const std::string& channel,
                                                      const std::string& capability) {
  if (std::shared_ptr<Channel> joined = connection_->FindChannel(channel)) return joined;
  absl::StatusOr<std::shared_ptr<Channel>> joined =
      Channel::Join(connection_, channel, capability);
  if (!joined.ok()) return joined.status();
  connection_->Track(*joined);
  return joined;
}

absl::Status Client::DropChannel(const std::string& channel,
                                 const std::string& owner_capability) {
  v1::DropChannelRequest request;
  request.set_channel(channel);
  request.set_owner_capability(owner_capability);
  v1::DropChannelResponse response;
  return connection_->Call(connection_->registry(), &v1::Registry::Stub::DropChannel,
                           request, &response);
}

void Client::SealBindings() { connection_->bindings_sealed.store(true); }
std::string Client::session_id() const { return connection_->session_id(); }
bool Client::attached() const { return connection_->attached(); }
uint64_t Client::reattach_count() const { return connection_->reattach_count(); }
absl::Status Client::session_status() const { return connection_->session_status(); }
const std::string& Client::socket() const { return connection_->options().socket; }

}  // namespace structd::client
