#include "secure_heap.h"

#include <openssl/crypto.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

namespace sealed {
namespace {

std::once_flag heap_once;
std::mutex state_mutex;
int init_result = -1;
std::string initialized_by;

struct MappingFlags {
  bool found = false;
  bool locked = false;
  bool dont_dump = false;
  size_t size = 0;
};

// The VmFlags of the mapping that holds `p`, from /proc/self/smaps: the kernel's word, not OpenSSL's.
MappingFlags FlagsOf(const void* p) {
  MappingFlags out;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    // A mapping's first line: "start-end perms offset dev inode [name]"; its fields follow, VmFlags last.
    size_t dash = line.find('-');
    size_t space = line.find(' ');
    if (dash != std::string::npos && space != std::string::npos && dash < space && line.find(':') > space) {
      if (inside) break;  // the mapping we wanted had no VmFlags line
      uintptr_t start = std::strtoull(line.substr(0, dash).c_str(), nullptr, 16);
      uintptr_t end = std::strtoull(line.substr(dash + 1, space - dash - 1).c_str(), nullptr, 16);
      inside = addr >= start && addr < end;
      if (inside) {
        out.found = true;
        out.size = end - start;
      }
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream flags(line.substr(8));
      std::string f;
      while (flags >> f) {
        if (f == "lo") out.locked = true;
        if (f == "dd") out.dont_dump = true;
      }
      break;
    }
  }
  return out;
}

}  // namespace

void EnsureOpensslSecureHeap() {
  std::call_once(heap_once, [] {
    std::lock_guard<std::mutex> lock(state_mutex);
    if (CRYPTO_secure_malloc_initialized()) {
      initialized_by = "node";  // `node --secure-heap=N`: keep Node's, whatever its size
      return;
    }
    // 1: mapped, locked, not dumpable. 2: mapped but mlock (RLIMIT_MEMLOCK) or madvise failed: the
    // arena is still used (it is cleansed on free), and hardening() says it is not locked.
    // 0: no arena; OpenSSL's "secure" allocations then come from its ordinary heap.
    init_result = CRYPTO_secure_malloc_init(kOpensslSecureHeapBytes, kOpensslSecureHeapMin);
    if (init_result != 0) initialized_by = "addon";
  });
}

SecureHeapState GetOpensslSecureHeapState() {
  SecureHeapState s{false, false, false, "", -1, 0, 0};
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    s.init_result = init_result;
    s.by = initialized_by;
  }
  s.initialized = CRYPTO_secure_malloc_initialized() != 0;
  if (!s.initialized) return s;
  if (s.by.empty()) s.by = "node";
  s.used = CRYPTO_secure_used();
  // Probe with one allocation: it must land in the arena, and the arena's mapping must be locked.
  void* probe = OPENSSL_secure_malloc(1);
  if (probe != nullptr && CRYPTO_secure_allocated(probe)) {
    MappingFlags f = FlagsOf(probe);
    s.locked = f.found && f.locked;
    s.dont_dump = f.found && f.dont_dump;
    s.size = f.size;
  }
  OPENSSL_secure_free(probe);
  return s;
}

}  // namespace sealed
