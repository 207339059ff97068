#include "log_format.h"

#include <gtest/gtest.h>

#include <string>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/details/log_msg.h"

namespace structd::server {
namespace {

// Parses one JSON object with protobuf's parser (independent of ours).
bool ParseObject(const std::string& line, google::protobuf::Struct* out) {
  return google::protobuf::util::JsonStringToMessage(line, out).ok();
}

std::string Format(const std::string& format, const std::string& message,
                   spdlog::level::level_enum level = spdlog::level::info) {
  auto formatter = MakeLogFormatter(format);
  spdlog::details::log_msg msg("", level, message);
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  return std::string(out.data(), out.size());
}

TEST(LogFormatTest, OnlyTextAndJsonAreFormats) {
  EXPECT_TRUE(ValidLogFormat("text"));
  EXPECT_TRUE(ValidLogFormat("json"));
  EXPECT_FALSE(ValidLogFormat("JSON"));
  EXPECT_FALSE(ValidLogFormat(""));
}

TEST(LogFormatTest, AJsonLineIsOneObjectWhateverTheMessageHolds) {
  const std::string nasty = std::string("name 'a\"b\\c'\nnext\tline \x01 caf\xC3\xA9 ") +
                            "bad \xFF\xC0\xAF end";
  std::string line = Format("json", nasty, spdlog::level::warn);
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  line.pop_back();
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;  // one line
  google::protobuf::Struct parsed;
  ASSERT_TRUE(ParseObject(line, &parsed)) << line;
  const auto& f = parsed.fields();
  EXPECT_EQ(f.at("level").string_value(), "warning");
  EXPECT_EQ(f.at("msg").string_value(),
            std::string("name 'a\"b\\c'\nnext\tline \x01 caf\xC3\xA9 ") +
                "bad \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end");
  EXPECT_GT(f.at("pid").number_value(), 0);
  EXPECT_GT(f.at("thread").number_value(), 0);
  const std::string time = f.at("time").string_value();
  ASSERT_EQ(time.size(), 27u) << time;  // 2026-12-01T08:43:21.123456Z
  EXPECT_EQ(time[10], 'T');
  EXPECT_EQ(time.back(), 'Z');
}

TEST(LogFormatTest, TextIsSpdlogsOwnLine) {
  std::string line = Format("text", "hello");
  EXPECT_NE(line.find("[info] hello"), std::string::npos) << line;
}

TEST(LogFormatTest, JsonEscapeKeepsValidUtf8AndEscapesControls) {
  EXPECT_EQ(JsonEscape("plain"), "plain");
  EXPECT_EQ(JsonEscape("\"\\\n\r\t\x1f\x7f"), "\\\"\\\\\\n\\r\\t\\u001f\\u007f");
  EXPECT_EQ(JsonEscape("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // a 4-byte emoji
  EXPECT_EQ(JsonEscape("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(JsonEscape("\xE2\x82"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // cut short
}

}  // namespace
}  // namespace structd::server
