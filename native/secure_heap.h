// OpenSSL's secure heap: where OpenSSL itself puts private-key BIGNUMs (BN_secure_new). The addon
// allocates those through OpenSSL, not through SecureRegion, so it makes sure the heap exists and
// reports, from the kernel's own view, whether it is locked and kept out of core dumps.
#pragma once
#include <cstddef>
#include <string>

namespace sealed {

// The size the addon asks for when Node has not set one up (`node --secure-heap=N` does).
constexpr size_t kOpensslSecureHeapBytes = size_t{256} << 10;
constexpr size_t kOpensslSecureHeapMin = 32;

struct SecureHeapState {
  bool initialized;       // CRYPTO_secure_malloc_initialized()
  bool locked;            // the arena's mapping has VmFlags "lo" (mlocked)
  bool dont_dump;         // ... and "dd" (MADV_DONTDUMP)
  std::string by;         // "addon", "node" (already set up when we looked) or "" (none)
  int init_result;        // CRYPTO_secure_malloc_init's result: 1 ok, 2 mapped but not locked, 0 failed; -1 not called
  size_t size;            // the arena's mapping size as the kernel reports it (0 if unknown)
  size_t used;            // CRYPTO_secure_used()
};

// Once per process, before the first private key is made: sets up the heap unless someone did.
// Never throws: a heap that cannot be locked is reported (Get...), not fatal.
void EnsureOpensslSecureHeap();

// Whether the heap was set up, and what the kernel says about its mapping now. Does not set it up.
SecureHeapState GetOpensslSecureHeapState();

}  // namespace sealed
