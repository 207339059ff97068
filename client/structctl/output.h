#ifndef STRUCTD_CLIENT_STRUCTCTL_OUTPUT_H_
#define STRUCTD_CLIENT_STRUCTCTL_OUTPUT_H_

// structctl's two output forms: aligned human tables and JSON (built as a
// toml++ table, printed by toml++'s JSON formatter: the --json schema is in
// doc/structctl.md).

#include <cstdint>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace structd::structctl {

// An aligned text table. Columns whose header starts with '>' are
// right-aligned (numbers); the '>' is not printed.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> headers);
  void Add(std::vector<std::string> row);
  std::string Render() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> headers_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

// Prints `doc` as JSON followed by a newline.
void PrintJson(const toml::table& doc);

// 64-bit values that may not fit a JSON/TOML integer, as hex strings.
std::string Hex64(uint64_t v);
// 1536 -> "1.5 KiB".
std::string HumanBytes(uint64_t bytes);
// 90061000 ms -> "1d 1h 1m".
std::string HumanDuration(uint64_t ms);
// An unsigned count as a TOML integer (clamped to INT64_MAX).
int64_t Int(uint64_t v);

}  // namespace structd::structctl

#endif  // STRUCTD_CLIENT_STRUCTCTL_OUTPUT_H_
