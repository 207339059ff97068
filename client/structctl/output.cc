#include "client/structctl/output.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <iostream>
#include <limits>
#include <sstream>

namespace structd::structctl {

TextTable::TextTable(std::vector<std::string> headers) {
  for (std::string& h : headers) {
    bool right = !h.empty() && h[0] == '>';
    right_.push_back(right);
    headers_.push_back(right ? h.substr(1) : h);
  }
}

void TextTable::Add(std::vector<std::string> row) {
  row.resize(headers_.size());
  rows_.push_back(std::move(row));
}

std::string TextTable::Render() const {
  std::vector<size_t> width(headers_.size());
  for (size_t i = 0; i < headers_.size(); ++i) width[i] = headers_[i].size();
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < cells.size(); ++i) {
      std::string pad(width[i] - cells[i].size(), ' ');
      text += right_[i] ? pad + cells[i] : cells[i] + pad;
      if (i + 1 < cells.size()) text += "  ";
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out << text << "\n";
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
  return out.str();
}

void PrintJson(const toml::table& doc) {
  std::cout << toml::json_formatter(doc) << "\n";
}

std::string Hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

std::string HumanDuration(uint64_t ms) {
  uint64_t s = ms / 1000;
  uint64_t d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60;
  char buf[64];
  if (d > 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m", d, h, m);
  } else if (h > 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 "h %" PRIu64 "m", h, m);
  } else if (m > 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 "m %" PRIu64 "s", m, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000);
  }
  return buf;
}

int64_t Int(uint64_t v) {
  return static_cast<int64_t>(std::min<uint64_t>(v, std::numeric_limits<int64_t>::max()));
}

}  // namespace structd::structctl
