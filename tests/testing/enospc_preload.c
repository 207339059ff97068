/* LD_PRELOAD fault injection for the daemon: while the file named by
 * STRUCTD_TEST_ENOSPC_FLAG exists, posix_fallocate fails with ENOSPC, as
 * it does when the tmpfs holding the arena is full. Lets a test fill and
 * empty "the disk" at will, without privileges or a real small tmpfs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static int Full(void) {
  const char* flag = getenv("STRUCTD_TEST_ENOSPC_FLAG");
  return flag != NULL && access(flag, F_OK) == 0;
}

int posix_fallocate(int fd, off_t offset, off_t len) {
  static int (*real)(int, off_t, off_t);
  if (Full()) return ENOSPC;
  if (real == NULL) real = (int (*)(int, off_t, off_t))dlsym(RTLD_NEXT, "posix_fallocate");
  return real(fd, offset, len);
}

int posix_fallocate64(int fd, off_t offset, off_t len) { return posix_fallocate(fd, offset, len); }
