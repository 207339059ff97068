#ifndef STRUCTD_TESTS_BENCH_BENCH_REPORT_H_
#define STRUCTD_TESTS_BENCH_BENCH_REPORT_H_

// What every structd benchmark program shares: a reporter that keeps each
// benchmark's CPU time per op, the ratio table (structd / baseline, each
// measured in the same run) printed after the run, the console options, and
// smoke mode (STRUCTD_BENCH_SMOKE=1: every benchmark for ~10 ms, as the
// test suite runs them). Ratios are reported, never enforced: a MISS is
// printed, the exit code stays 0.

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

namespace structd::bench {

// Forwards everything to the console and keeps, per benchmark, the CPU time
// per iteration (ns) of each run and the median aggregate if there is one.
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  explicit CollectingReporter(OutputOptions options)
      : ConsoleReporter(options) {}

  void ReportRuns(const std::vector<Run>& reports) override {
    for (const Run& run : reports) {
      if (run.error_occurred) {
        errors_.push_back(run.benchmark_name() + ": " + run.error_message);
        continue;
      }
      const std::string name = run.run_name.function_name +
                               (run.run_name.args.empty() ? "" : "/" + run.run_name.args);
      for (bool wall : {false, true}) {
        Times& t = (wall ? wall_times_ : times_)[name];
        double ns = (wall ? run.GetAdjustedRealTime() : run.GetAdjustedCPUTime()) *
                    NsPerUnit(run.time_unit);
        if (run.run_type == Run::RT_Iteration) {
          t.sum_ns += ns;
          ++t.runs;
        } else if (run.aggregate_name == "median") {
          t.median_ns = ns;
        }
      }
    }
    ConsoleReporter::ReportRuns(reports);
  }

  // The median if repetitions produced one, else the mean of the runs.
  // `wall`: real time instead of CPU time (for work done partly in another
  // process, like a server, which the client's CPU time does not see).
  std::optional<double> NsPerOp(const std::string& name, bool wall = false) const {
    const auto& times = wall ? wall_times_ : times_;
    auto it = times.find(name);
    if (it == times.end()) return std::nullopt;
    if (it->second.median_ns) return it->second.median_ns;
    if (it->second.runs == 0) return std::nullopt;
    return it->second.sum_ns / it->second.runs;
  }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  struct Times {
    double sum_ns = 0;
    int runs = 0;
    std::optional<double> median_ns;
  };

  static double NsPerUnit(benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kNanosecond:
        return 1;
      case benchmark::kMicrosecond:
        return 1e3;
      case benchmark::kMillisecond:
        return 1e6;
      case benchmark::kSecond:
        return 1e9;
    }
    return 1;
  }

  std::map<std::string, Times> times_;
  std::map<std::string, Times> wall_times_;
  std::vector<std::string> errors_;
};

// One row of the ratio table.
struct Pair {
  const char* label;
  const char* structd;   // benchmark function names
  const char* baseline;
  const char* baseline_label;
  double target;  // <= 0: informational, no target
  bool wall = false;  // compare real time (cross-process work), not CPU time
};

inline void PrintRatios(const CollectingReporter& reporter, std::span<const Pair> pairs) {
  std::printf("\nstructd / baseline (CPU time per op, or wall time where marked [wall]; "
              "lower is better)\n");
  int misses = 0;
  for (const Pair& p : pairs) {
    std::optional<double> s = reporter.NsPerOp(p.structd, p.wall);
    std::optional<double> b = reporter.NsPerOp(p.baseline, p.wall);
    if (!s || !b || *b <= 0) {
      // Filtered out or failed: nothing to compare.
      std::printf("%s: n/a (filtered out or failed)\n", p.label);
      continue;
    }
    double ratio = *s / *b;
    std::string verdict = "(info, no target)";
    if (p.target > 0) {
      bool ok = ratio <= p.target;
      if (!ok) ++misses;
      char buf[64];
      std::snprintf(buf, sizeof(buf), "(target <= %.1f) %s", p.target,
                    ok ? "OK" : "MISS");
      verdict = buf;
    }
    std::printf("%s%s: structd %.2f ns, %s %.2f ns, ratio %.3g %s\n", p.label,
                p.wall ? " [wall]" : "", *s, p.baseline_label, *b, ratio, verdict.c_str());
  }
  if (misses > 0) {
    std::printf("%d ratio(s) MISS the target (reported, not enforced)\n",
                misses);
  }
}

// Only the library's default reporter reads --benchmark_color; a
// ConsoleReporter built here would always print escape codes. Mirror the
// flag (default "auto": color only on a terminal). Called before
// benchmark::Initialize, which strips the flags it knows from argv.
inline benchmark::ConsoleReporter::OutputOptions ConsoleOptions(int argc,
                                                         char** argv) {
  const char* term = std::getenv("TERM");
  const bool tty = isatty(STDOUT_FILENO) && term != nullptr &&
                   std::string_view(term) != "dumb";
  bool color = tty;
  constexpr std::string_view kFlag = "--benchmark_color=";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (!arg.starts_with(kFlag)) continue;
    std::string_view v = arg.substr(kFlag.size());
    if (v == "auto") {
      color = tty;
    } else {
      color = !(v == "false" || v == "no" || v == "0" || v == "off" ||
                v == "never");
    }
  }
  return color ? benchmark::ConsoleReporter::OO_ColorTabular
               : benchmark::ConsoleReporter::OO_Tabular;
}

// argv with smoke mode applied: "--benchmark_min_time=0.01" right after
// argv[0] when STRUCTD_BENCH_SMOKE=1, so a flag given on the command line
// still wins (later flags override). Null-terminated; count excludes it.
struct Args {
  std::vector<char*> argv;
  int count = 0;
};
inline Args SmokeArgs(int argc, char** argv) {
  static std::string smoke_flag = "--benchmark_min_time=0.01";
  Args a;
  a.argv.assign(argv, argv + argc);
  const char* smoke = std::getenv("STRUCTD_BENCH_SMOKE");
  if (smoke != nullptr && std::string_view(smoke) == "1") {
    a.argv.insert(a.argv.begin() + 1, smoke_flag.data());
  }
  a.count = static_cast<int>(a.argv.size());
  a.argv.push_back(nullptr);
  return a;
}

// benchmark::Initialize on `args`, the console options read first (it
// strips the flags it knows). None if an argument is not the library's:
// it has said which.
inline std::optional<benchmark::ConsoleReporter::OutputOptions> InitializeBenchmarks(Args& args) {
  const auto options = ConsoleOptions(args.count, args.argv.data());
  benchmark::Initialize(&args.count, args.argv.data());
  if (benchmark::ReportUnrecognizedArguments(args.count, args.argv.data())) return std::nullopt;
  return options;
}

// Runs every registered benchmark, prints the ratio table of `pairs`, then
// the program's own lines (`extra`), then any benchmark's error on stderr
// under `program`'s name. The exit code: 0, or 1 if a benchmark failed.
inline int RunBenchmarks(const char* program, benchmark::ConsoleReporter::OutputOptions options,
                         std::span<const Pair> pairs,
                         const std::function<void(const CollectingReporter&)>& extra = {}) {
  CollectingReporter reporter(options);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  PrintRatios(reporter, pairs);
  if (extra) extra(reporter);
  for (const std::string& e : reporter.errors()) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.c_str());
  }
  return reporter.errors().empty() ? 0 : 1;
}

}  // namespace structd::bench

#endif  // STRUCTD_TESTS_BENCH_BENCH_REPORT_H_
