/*
 * Test-only LD_PRELOAD shim: makes the system calls the addon falls back from fail on demand, so
 * tests reach those paths on any kernel. Configured by environment variables read at start-up:
 *   ST_SHIM_NO_POPULATE=1  madvise(MADV_POPULATE_WRITE) fails with EINVAL (as before Linux 5.14)
 *   ST_SHIM_THREADS=N      after N successful calls, pthread_create from any thread but the main one
 *                          fails with EAGAIN (as under a pid limit)
 * Each refusal kind is reported once on stderr, so a test can tell that its path was reached.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POPULATE_WRITE 23

static int no_populate;
static long thread_budget = -1;
static atomic_long threads_made;
static atomic_int said_populate, said_threads;

__attribute__((constructor)) static void configure(void) {
  const char* p = getenv("ST_SHIM_NO_POPULATE");
  no_populate = p && strcmp(p, "1") == 0;
  const char* t = getenv("ST_SHIM_THREADS");
  if (t && *t) thread_budget = strtol(t, NULL, 10);
}

static void say(atomic_int* once, const char* msg) {
  if (atomic_exchange(once, 1) == 0) {
    ssize_t r = write(2, msg, strlen(msg));
    (void)r;
  }
}

int madvise(void* addr, size_t len, int advice) {
  static int (*real)(void*, size_t, int);
  if (advice == POPULATE_WRITE && no_populate) {
    say(&said_populate, "st-shim: refused MADV_POPULATE_WRITE\n");
    errno = EINVAL;
    return -1;
  }
  if (!real) real = (int (*)(void*, size_t, int))dlsym(RTLD_NEXT, "madvise");
  return real(addr, len, advice);
}

int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  static int (*real)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  if (!real) real = (int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*))dlsym(RTLD_NEXT, "pthread_create");
  if (thread_budget >= 0 && syscall(SYS_gettid) != getpid() && atomic_fetch_add(&threads_made, 1) >= thread_budget) {
    say(&said_threads, "st-shim: refused pthread_create\n");
    return EAGAIN;
  }
  return real(thread, attr, start, arg);
}
