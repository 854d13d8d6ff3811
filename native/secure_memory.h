// Locked, non-dumpable memory for plaintext and keys, and the process hardening that goes with it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace sealed {

// Once per process: not dumpable (no core, no ptrace attach by the host's uid) and core size 0.
// Called before the first secret enters the process; safe to call from any thread.
void HardenProcess();

struct HardeningState {
  bool done;
  bool not_dumpable;  // PR_SET_DUMPABLE 0 succeeded
  bool no_core;       // RLIMIT_CORE set to 0/0
};
HardeningState GetHardeningState();

// One anonymous mapping: [guard page][data pages][guard page]. The data pages are locked
// (mlock, which also populates them), excluded from core dumps and zeroed in a forked child.
// The destructor zeroizes, unlocks and unmaps. Throws SealedError (ERR_MEMLOCK, ERR_RESOURCE_LIMIT).
class SecureRegion {
 public:
  // Always locked at once. populate_now = false: locked on fault (MLOCK_ONFAULT) instead of
  // populated, for a job that populates its parts on its worker threads (PopulateRange).
  static std::unique_ptr<SecureRegion> Allocate(size_t size, bool populate_now = true);
  // Fault in the pages covering [offset, offset + length) before writing to them.
  void PopulateRange(size_t offset, size_t length);
  ~SecureRegion();
  SecureRegion(const SecureRegion&) = delete;
  SecureRegion& operator=(const SecureRegion&) = delete;

  // Zeroize the pages that hold data, keeping the region mapped and locked.
  void WipeResident();
  // Allocated locked-on-fault: pages appear as they are first written (a writer should PopulateRange first).
  bool lazy() const { return lazy_; }

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }          // what the caller asked for
  size_t locked_size() const { return mapped_; }  // whole pages, what VmLck counts

 private:
  SecureRegion(uint8_t* base, size_t total, uint8_t* data, size_t size, size_t mapped)
      : base_(base), total_(total), data_(data), size_(size), mapped_(mapped) {}
  uint8_t* base_;
  size_t total_;
  uint8_t* data_;
  size_t size_;
  size_t mapped_;
  bool lazy_ = false;  // populated part by part (MLOCK_ONFAULT): some pages may never have existed
};

// Zeroize every live region (for exit). Regions stay mapped and usable.
void WipeAllRegions();

// Plaintext passes through the stack frames of OpenSSL's cipher and hash block functions, on
// worker threads whose stacks are ordinary (swappable, dumpable) memory: a worker calls this when
// it is done, from its outermost frame, to zero the stack below it (test/e2e/session-heap found
// tensor bytes left there).
void WipeStackBelow();

// Test-only probe: when enabled, every release scans the wiped pages just before munmap and
// records how many bytes were not zero, and (from mincore, after the wipe but before the scan
// faults everything in) how many bytes were resident. Off by default (the scan costs a pass over the memory).
void SetReleaseProbe(bool enabled);
struct ReleaseProbe {
  uint64_t releases;
  uint64_t bytes_scanned;
  uint64_t nonzero_bytes;
  uint64_t resident_bytes;
};
ReleaseProbe GetReleaseProbe();

}  // namespace sealed
