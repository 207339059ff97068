#ifndef STRUCTD_SHM_SNAPSHOT_FIELDS_H_
#define STRUCTD_SHM_SNAPSHOT_FIELDS_H_

// The field work of copying an arena while processes write it (a channel
// snapshot) and of bringing such a copy back (its restore). Raw copies of
// aligned 8-byte words are each as of one moment; what a raw copy can get
// wrong is the composite fields, and what it carries over that must not
// survive is the processes named in fields. doc/snapshots.md.
//
// Thread safety: the live instance may be written concurrently by other
// processes; the copy is the caller's alone.

#include <cstdint>

#include "structd/shm/arena.h"
#include "structd/shm/layout.h"

namespace structd::shm {

// Copies `size` bytes from `from` to `to` in aligned 8-byte atomic loads
// (relaxed): every word as of some moment during the copy, never a torn
// word. REQUIRES: both 8-aligned, size % 8 == 0.
void CopyWords(const uint8_t* from, uint8_t* to, uint64_t size);

// Rewrites the bytes and string fields of `copy` (the payload of a raw
// copy of `live`) from torn-free reads of `live`: a raw copy can take a
// field's state word and its slots at different moments. Each such field
// of the copy then holds one value the live field held during the call,
// with no writer. A field whose live value is damaged (length past the
// capacity) is left as copied; ForgetProcesses still clears its writer.
// Returns how many fields it rewrote. REQUIRES: live.Fits(layout.size()).
uint32_t CopyCompositeFields(const InstancePtr& live, uint8_t* copy, const Layout& layout);

// Puts every field of `instance` that names a process back to "nobody",
// for an instance whose processes are gone (restored from a snapshot):
// a mutex held then is left owner-died and unlocked (its next locker
// gets owner_died() and the data as it was), any other mutex is made
// fresh; a condition keeps its sequence and loses its waiters; a bytes
// or string field's writer lock is released (the active slot holds the
// last complete value). Returns how many held mutexes it marked
// owner-died. REQUIRES: instance.Fits(layout.size()); nobody uses the
// instance yet.
uint32_t ForgetProcesses(const InstancePtr& instance, const Layout& layout);

}  // namespace structd::shm

#endif  // STRUCTD_SHM_SNAPSHOT_FIELDS_H_
