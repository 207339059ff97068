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

// gRPC's callback API (the Attach stream's reactor) runs inline code of
// gRPC's own headers in our binary (instrumented) on both sides of a hand-
// over that libgrpc++ synchronizes internally (uninstrumented, so TSan sees
// no happens-before): CallbackWithSuccessTag and the reactor pointer of
// server_callback_handlers.h look raced. Reports whose stack passes through
// those gRPC headers are suppressed; a race in structd's own code, even one
// reached from a gRPC callback, has a structd frame on top and a second
// stack without gRPC frames, and is still reported.
extern "C" const char* __tsan_default_suppressions() {
  return "race:grpc::internal::CallbackWithSuccessTag\n"
         "race:grpc::internal::CallbackBidiHandler\n"
         "race:grpc::internal::ServerCallbackReaderWriterImpl\n"
         "race:grpc::ServerBidiReactor\n";
}
