// Linked into every executable of a ThreadSanitizer build
// (-DSTRUCTD_SANITIZE=thread; see CMakeLists.txt), so the tests, the daemon
// they start and the client processes they fork all run with these options
// without any environment set-up. TSAN_OPTIONS still overrides them.
//
// ignore_noninstrumented_modules: Debian's gRPC, Protobuf and Abseil are not
// built with TSan. Their internal synchronization (completion queues,
// atomics) is invisible to it, so every buffer they hand between threads
// looked like a race: ~9,800 reports in one run of the suite, all inside or
// through those libraries. With this option TSan ignores the memory
// operations those libraries perform through its interceptors; races
// between structd's own (instrumented) accesses are still reported.
extern "C" const char* __tsan_default_options() {
  return "ignore_noninstrumented_modules=1";
}
