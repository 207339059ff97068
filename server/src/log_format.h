#ifndef STRUCTD_SERVER_LOG_FORMAT_H_
#define STRUCTD_SERVER_LOG_FORMAT_H_

// How the daemon's log lines look: "text" (the default, for people) or
// "json" (one JSON object per line, for log shippers). doc/operations.md
// ("Logs") shows both.

#include <memory>
#include <string>

#include "spdlog/formatter.h"

namespace structd::server {

// True for "text" and "json".
bool ValidLogFormat(const std::string& format);

// The formatter for `format` (REQUIRES: ValidLogFormat). A json line is
//   {"time":"2026-12-01T08:43:21.123456Z","level":"info","pid":812,
//    "thread":815,"msg":"..."}
// with the message escaped as a JSON string (RFC 8259).
std::unique_ptr<spdlog::formatter> MakeLogFormatter(const std::string& format);

// Escapes `text` as the inside of a JSON string: quotes, backslashes and
// control characters; bytes that are not valid UTF-8 become U+FFFD.
std::string JsonEscape(std::string_view text);

}  // namespace structd::server

#endif  // STRUCTD_SERVER_LOG_FORMAT_H_
