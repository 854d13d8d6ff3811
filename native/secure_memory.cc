#include "secure_memory.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older headers lack it
#endif

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "errors.h"
#include "js_region.h"
#include "module.h"
#include "promise_worker.h"
#include "secure_heap.h"

namespace sealed {

std::string ErrnoText(const std::string& what, int err) { return what + ": " + std::strerror(err); }

namespace {

std::once_flag harden_once;
HardeningState hardening{false, false, false};

std::atomic<bool> probe_enabled{false};
std::atomic<uint64_t> probe_releases{0};
std::atomic<uint64_t> probe_bytes{0};
std::atomic<uint64_t> probe_nonzero{0};
std::atomic<uint64_t> probe_resident{0};

// Every live region, for the exit wipe. Leaked on purpose: it must outlive static destructors,
// which run around the atexit handler that reads it.
std::mutex& LiveMutex() {
  static auto* m = new std::mutex();
  return *m;
}
std::unordered_set<SecureRegion*>& LiveRegions() {
  static auto* set = new std::unordered_set<SecureRegion*>();
  return *set;
}

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// VmLck in KiB, for the error message: how much of the limit this process already uses.
long LockedKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmLck:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

std::string LimitText(rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v) + " bytes"; }

[[noreturn]] void ThrowMemlock(size_t bytes, int err) {
  struct rlimit lim {};
  getrlimit(RLIMIT_MEMLOCK, &lim);
  long locked = LockedKiB();
  std::string msg = "cannot lock " + std::to_string(bytes) + " bytes of secure memory (mlock: " + std::strerror(err) +
                    "): RLIMIT_MEMLOCK is " + LimitText(lim.rlim_cur) + " (hard " + LimitText(lim.rlim_max) + ")";
  if (locked >= 0) msg += " and this process already locks " + std::to_string(locked * 1024) + " bytes";
  msg +=
      ". Raise the limit for the process that runs node: `ulimit -l unlimited` (or a size in KiB) in its shell, "
      "LimitMEMLOCK=infinity in a systemd unit, `--ulimit memlock=-1` with docker, or grant CAP_IPC_LOCK. "
      "Plaintext is never placed in swappable memory instead.";
  throw SealedError("ERR_MEMLOCK", msg);
}

}  // namespace

void HardenProcess() {
  std::call_once(harden_once, [] {
    hardening.not_dumpable = prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0;
    struct rlimit zero {0, 0};
    hardening.no_core = setrlimit(RLIMIT_CORE, &zero) == 0;
    hardening.done = true;
  });
}

HardeningState GetHardeningState() {
  HardenProcess();
  return hardening;
}

std::unique_ptr<SecureRegion> SecureRegion::Allocate(size_t size, bool populate_now) {
  HardenProcess();
  const size_t page = PageSize();
  if (size > (size_t{1} << 46)) throw SealedError("ERR_RESOURCE_LIMIT", "secure buffer of " + std::to_string(size) + " bytes is too large");
  const size_t mapped = size == 0 ? page : (size + page - 1) / page * page;
  // Big buffers start on a 2 MiB boundary so they can be backed by huge pages: populating them
  // is then several times cheaper, and so are TLB misses while decrypting into them.
  const size_t huge = size_t{2} << 20;
  const bool big = mapped >= 2 * huge;
  const size_t slack = big ? huge : 0;
  const size_t reserve = mapped + 2 * page + slack;

  void* raw = mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    throw SealedError("ERR_RESOURCE_LIMIT", ErrnoText("cannot map " + std::to_string(reserve) + " bytes of secure memory", errno));
  }
  uint8_t* data = static_cast<uint8_t*>(raw) + page;
  if (big) {
    uintptr_t aligned = (reinterpret_cast<uintptr_t>(data) + huge - 1) & ~(huge - 1);
    data = reinterpret_cast<uint8_t*>(aligned);
  }
  uint8_t* base = data - page;
  const size_t total = mapped + 2 * page;
  // Give back the slack on either side of [guard][data][guard].
  if (base > static_cast<uint8_t*>(raw)) munmap(raw, static_cast<size_t>(base - static_cast<uint8_t*>(raw)));
  uint8_t* raw_end = static_cast<uint8_t*>(raw) + reserve;
  if (base + total < raw_end) munmap(base + total, static_cast<size_t>(raw_end - (base + total)));

  auto fail = [&](const char* code, const std::string& what, int err) {
    munmap(base, total);
    throw SealedError(code, ErrnoText(what, err));
  };
  // The guard pages stay PROT_NONE: an overrun faults instead of reading a neighbour.
  if (mprotect(data, mapped, PROT_READ | PROT_WRITE) != 0) fail("ERR_RESOURCE_LIMIT", "mprotect secure memory", errno);
  if (madvise(data, mapped, MADV_DONTDUMP) != 0) fail("ERR_UNSUPPORTED", "madvise(MADV_DONTDUMP)", errno);
  if (madvise(data, mapped, MADV_WIPEONFORK) != 0) fail("ERR_UNSUPPORTED", "madvise(MADV_WIPEONFORK) (needs Linux 4.14+)", errno);
  if (big) madvise(data, mapped, MADV_HUGEPAGE);  // advisory only
  // Either way the whole range is locked (and counted against RLIMIT_MEMLOCK) now. mlock also
  // faults every page in; MLOCK_ONFAULT locks each page as it is first touched, so no page is ever
  // present and unlocked, and the owner populates the parts on its own threads.
  int rc = populate_now ? mlock(data, mapped) : mlock2(data, mapped, MLOCK_ONFAULT);
  // Kernels before 4.4 (and valgrind) lack mlock2: lock and populate here instead.
  if (rc != 0 && !populate_now && (errno == ENOSYS || errno == EINVAL)) rc = mlock(data, mapped);
  if (rc != 0) {
    int err = errno;
    munmap(base, total);  // nothing was written yet
    ThrowMemlock(mapped, err);
  }
  std::unique_ptr<SecureRegion> region(new SecureRegion(base, total, data, size, mapped));
  region->lazy_ = !populate_now;
  std::lock_guard<std::mutex> lock(LiveMutex());
  LiveRegions().insert(region.get());
  return region;
}

void SecureRegion::PopulateRange(size_t offset, size_t length) {
  const size_t page = PageSize();
  size_t from = offset / page * page;
  size_t to = std::min(mapped_, (offset + length + page - 1) / page * page);
  if (to <= from) return;
  // One call instead of a fault per page. Where it fails (kernels before 5.14), nothing is touched
  // here: the first and last pages may hold another chunk's finished plaintext, so the job's own
  // writes fault the pages in (MLOCK_ONFAULT locks each one as it arrives).
  static std::atomic<bool> unsupported{false};
  if (unsupported.load(std::memory_order_relaxed)) return;
  if (madvise(data_ + from, to - from, MADV_POPULATE_WRITE) != 0 && errno == EINVAL) unsupported = true;
}

SecureRegion::~SecureRegion() {
  {
    std::lock_guard<std::mutex> lock(LiveMutex());
    LiveRegions().erase(this);
  }
  WipeResident();
  if (probe_enabled.load(std::memory_order_relaxed)) {
    // What the owner and the wipe faulted in, counted before the scan below touches every page.
    const size_t page = PageSize();
    std::vector<unsigned char> resident(mapped_ / page);
    uint64_t count = resident.size();
    if (mincore(data_, mapped_, resident.data()) == 0) {
      count = 0;
      for (unsigned char r : resident) count += r & 1;
    }
    probe_resident += count * page;
    uint64_t nonzero = 0;
    for (size_t i = 0; i < mapped_; ++i) nonzero += data_[i] != 0;
    probe_nonzero += nonzero;
    probe_bytes += mapped_;
    probe_releases += 1;
  }
  munlock(data_, mapped_);
  munmap(base_, total_);
}

// Wipe every page that holds data. A lazily populated region (a load that stopped early) may have
// pages that were never touched: wiping those would first fault them in, so ask mincore which are
// resident and wipe those (all of them if mincore fails).
void SecureRegion::WipeResident() {
  const size_t page = PageSize();
  std::vector<unsigned char> resident;
  if (lazy_) {
    resident.resize(mapped_ / page);
    if (mincore(data_, mapped_, resident.data()) != 0) resident.clear();
  }
  if (resident.empty()) {
    OPENSSL_cleanse(data_, mapped_);
    return;
  }
  for (size_t i = 0; i < resident.size();) {
    if (!(resident[i] & 1)) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < resident.size() && (resident[j] & 1)) ++j;
    OPENSSL_cleanse(data_ + i * page, (j - i) * page);
    i = j;
  }
}

// Deeper than any OpenSSL cipher/digest call chain below a worker's loop; far less than a thread's stack.
constexpr size_t kStackWipeBytes = 64 * 1024;

__attribute__((noinline)) void WipeStackBelow() {
  unsigned char below[kStackWipeBytes];
  OPENSSL_cleanse(below, sizeof below);  // not optimised away, unlike memset on a dead buffer
}

void WipeAllRegions() {
  std::lock_guard<std::mutex> lock(LiveMutex());
  for (SecureRegion* r : LiveRegions()) r->WipeResident();
}

void SetReleaseProbe(bool enabled) { probe_enabled = enabled; }

ReleaseProbe GetReleaseProbe() { return ReleaseProbe{probe_releases.load(), probe_bytes.load(), probe_nonzero.load(), probe_resident.load()}; }

// ---- JS-visible secure buffers ------------------------------------------------------------

namespace {

// Tags our ArrayBuffers; the JsRegion is attached to the buffer object with napi_wrap.
constexpr napi_type_tag kSecureTag = {0x5ea1ed5ec0be7a11ULL, 0x7365637572656d65ULL};

std::mutex registry_mutex;  // guards JsRegion::region between release and finalizer
std::atomic<uint64_t> live_bytes{0};
std::atomic<bool> fail_next_array_buffer{false};  // test hook

void ReleaseLocked(JsRegion* r) {
  if (r->region) {
    live_bytes -= r->region->locked_size();
    r->region.reset();
  }
}

// The ArrayBuffer's finalizer: runs on the JS thread once the buffer is collected or detached.
void Finalize(Napi::Env, void*, JsRegion* r) {
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    ReleaseLocked(r);
  }
  delete r;
}

// The JsRegion behind a live secure ArrayBuffer. A detached buffer's JsRegion may already be
// finalized, so detached buffers are answered before unwrapping.
JsRegion* Unwrap(Napi::Env env, Napi::ArrayBuffer ab) {
  if (ab.IsDetached() || !ab.CheckTypeTag(&kSecureTag)) return nullptr;
  void* r = nullptr;
  if (napi_unwrap(env, ab, &r) != napi_ok) return nullptr;
  return static_cast<JsRegion*>(r);
}

}  // namespace

JsRegion* LookupRegion(Napi::ArrayBuffer ab) {
  JsRegion* r = Unwrap(ab.Env(), ab);
  return r && r->region ? r : nullptr;
}

std::unique_ptr<SecureRegion> TakeRegion(Napi::ArrayBuffer ab) {
  JsRegion* r = LookupRegion(ab);
  if (!r) return nullptr;
  std::unique_ptr<SecureRegion> region;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    region = std::move(r->region);
    live_bytes -= region->locked_size();  // counted again when a new ArrayBuffer owns it
  }
  ab.Detach();  // its finalizer now finds no region
  return region;
}

Napi::ArrayBuffer NewSecureArrayBuffer(Napi::Env env, std::unique_ptr<SecureRegion> region) {
  auto* r = new JsRegion();
  uint8_t* data = region->data();
  size_t size = region->size();
  const size_t locked = region->locked_size();
  r->region = std::move(region);
  Napi::ArrayBuffer ab;
  try {
    if (fail_next_array_buffer.exchange(false)) throw Napi::Error::New(env, "cannot create an external ArrayBuffer (test hook)");
    ab = Napi::ArrayBuffer::New(env, data, size, Finalize, r);
  } catch (const Napi::Error& e) {
    delete r;  // no finalizer will run: wipe and unmap the plaintext now
    throw MakeError(env, "ERR_RESOURCE_LIMIT", "cannot hand out secure memory as an ArrayBuffer (it was wiped): " + e.Message());
  } catch (...) {
    delete r;
    throw;
  }
  live_bytes += locked;
  try {
    ab.TypeTag(&kSecureTag);
    NAPI_THROW_IF_FAILED(env, napi_wrap(env, ab, r, nullptr, nullptr, nullptr), Napi::ArrayBuffer());
  } catch (...) {
    // The buffer exists but is handed to no one: free now rather than at its finalizer.
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      ReleaseLocked(r);
    }
    ab.Detach();
    throw;
  }
  return ab;
}

namespace {

// secureAlloc(size) and secureReserve(size): a new secure region for a JS ArrayBuffer.
Napi::Value NewRegionFromJs(const Napi::CallbackInfo& info, bool populate_now) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "size must be a number");
  double size = info[0].As<Napi::Number>().DoubleValue();
  if (!(size >= 0) || size != static_cast<double>(static_cast<uint64_t>(size))) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "size must be a non-negative integer");
  }
  try {
    return NewSecureArrayBuffer(env, SecureRegion::Allocate(static_cast<size_t>(size), populate_now));
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
}

Napi::Value SecureAlloc(const Napi::CallbackInfo& info) { return NewRegionFromJs(info, /*populate_now=*/true); }

// Zeroize and unmap now, and detach the ArrayBuffer so no view can reach the unmapped pages.
// Returns false if it was already released.
Napi::Value SecureRelease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "expected the secure buffer's ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return Napi::Boolean::New(env, false);
  JsRegion* r = Unwrap(env, ab);
  if (!r) throw MakeError(env, "ERR_INVALID_ARGUMENT", "not a secure buffer");
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    ReleaseLocked(r);
  }
  ab.Detach();
  return Napi::Boolean::New(env, true);
}

// secureReserve(size): locked at once (the limit is checked now) but populated only as it is
// written: a load into it populates each chunk's pages on the decrypting thread, as for memory the
// job allocates itself. For an arena that keeps the memory for the next load.
Napi::Value SecureReserve(const Napi::CallbackInfo& info) { return NewRegionFromJs(info, /*populate_now=*/false); }

// secureWipe(ab) -> ArrayBuffer: zeroize the buffer's pages, keeping them mapped and locked, and
// hand the same memory back in a new ArrayBuffer: `ab` is detached, so a view kept from before the
// wipe never sees what is written into the memory next.
Napi::Value SecureWipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "expected the secure buffer's ArrayBuffer");
  std::unique_ptr<SecureRegion> region = TakeRegion(info[0].As<Napi::ArrayBuffer>());
  if (!region) throw MakeError(env, "ERR_INVALID_ARGUMENT", "not a live secure buffer (released, or lent to a running load)");
  region->WipeResident();
  return NewSecureArrayBuffer(env, std::move(region));  // on failure it wipes and unmaps the region
}

// secureAllocAsync(size) -> Promise<ArrayBuffer>: the same, with locking and populating (about
// 150 ms per GiB here) on the threadpool instead of the JS thread.
class AllocJob : public PromiseWorker {
 public:
  AllocJob(Napi::Env env, size_t size) : PromiseWorker(env, "sealed-tensors:alloc"), size_(size) {}

 protected:
  void Run() override { region_ = SecureRegion::Allocate(size_); }
  Napi::Value Resolve(Napi::Env env) override { return NewSecureArrayBuffer(env, std::move(region_)); }

 private:
  size_t size_;
  std::unique_ptr<SecureRegion> region_;
};

Napi::Value SecureAllocAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "size must be a number");
  double size = info[0].As<Napi::Number>().DoubleValue();
  if (!(size >= 0) || size != static_cast<double>(static_cast<uint64_t>(size))) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "size must be a non-negative integer");
  }
  return (new AllocJob(env, static_cast<size_t>(size)))->Start();
}

Napi::Value Hardening(const Napi::CallbackInfo& info) {
  HardeningState s = GetHardeningState();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("notDumpable", s.not_dumpable);
  o.Set("noCore", s.no_core);
  o.Set("dumpable", Napi::Number::New(info.Env(), prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)));
  // OpenSSL's secure heap (ephemeral private keys): set up on the first ephemeral key, not here.
  SecureHeapState h = GetOpensslSecureHeapState();
  o.Set("opensslSecureHeap", h.initialized && h.locked && h.dont_dump);
  Napi::Object d = Napi::Object::New(info.Env());
  d.Set("initialized", h.initialized);
  d.Set("locked", h.locked);
  d.Set("dontDump", h.dont_dump);
  d.Set("initializedBy", h.by.empty() ? info.Env().Null() : Napi::String::New(info.Env(), h.by));
  d.Set("initResult", h.init_result);
  d.Set("size", static_cast<double>(h.size));
  d.Set("used", static_cast<double>(h.used));
  o.Set("opensslSecureHeapDetail", d);
  return o;
}

Napi::Value SecureLockedBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live_bytes.load()));
}

Napi::Value TestSetReleaseProbe(const Napi::CallbackInfo& info) {
  SetReleaseProbe(info[0].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value TestReleaseProbe(const Napi::CallbackInfo& info) {
  ReleaseProbe p = GetReleaseProbe();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("releases", static_cast<double>(p.releases));
  o.Set("bytesScanned", static_cast<double>(p.bytes_scanned));
  o.Set("nonzeroBytes", static_cast<double>(p.nonzero_bytes));
  o.Set("residentBytes", static_cast<double>(p.resident_bytes));
  return o;
}

Napi::Value TestFailNextArrayBuffer(const Napi::CallbackInfo& info) {
  fail_next_array_buffer = true;
  return info.Env().Undefined();
}

// At process exit (process.exit, an uncaught exception, a signal handler that exits, or the end of
// the event loop: all end in exit()) wipe every live region: JS and finalizers no longer run, so
// nothing else would. Regions stay mapped, so a thread still running never faults on a hole; a
// decrypt job still running at exit is not stopped and may write one more piece after the wipe.
void WipeAtExit() {
  WipeAllRegions();
  // Test hook: report what the wipe left, read back from the regions themselves.
  if (std::getenv("SEALED_TENSORS_TEST_EXIT_REPORT") == nullptr) return;
  uint64_t regions = 0, bytes = 0, nonzero = 0;
  {
    std::lock_guard<std::mutex> lock(LiveMutex());
    for (SecureRegion* r : LiveRegions()) {
      regions++;
      bytes += r->size();
      for (size_t i = 0; i < r->size(); ++i) nonzero += r->data()[i] != 0;
    }
  }
  // Regions freed earlier (finalizers at environment teardown) are in the release probe, when enabled.
  std::string line = "sealed-tensors exit wipe: regions=" + std::to_string(regions) + " bytes=" + std::to_string(bytes) +
                     " nonzero=" + std::to_string(nonzero) + " released=" + std::to_string(probe_releases.load()) +
                     " releasedBytes=" + std::to_string(probe_bytes.load()) + " releasedNonzero=" + std::to_string(probe_nonzero.load()) + "\n";
  ssize_t ignored = write(2, line.data(), line.size());
  (void)ignored;
}

std::once_flag exit_hook_once;

void Init(Napi::Env env, Napi::Object exports) {
  std::call_once(exit_hook_once, [] { std::atexit(WipeAtExit); });
  exports.Set("secureAlloc", Napi::Function::New(env, SecureAlloc, "secureAlloc"));
  exports.Set("secureAllocAsync", Napi::Function::New(env, SecureAllocAsync, "secureAllocAsync"));
  exports.Set("secureReserve", Napi::Function::New(env, SecureReserve, "secureReserve"));
  exports.Set("secureWipe", Napi::Function::New(env, SecureWipe, "secureWipe"));
  exports.Set("secureRelease", Napi::Function::New(env, SecureRelease, "secureRelease"));
  exports.Set("secureLockedBytes", Napi::Function::New(env, SecureLockedBytes, "secureLockedBytes"));
  exports.Set("hardening", Napi::Function::New(env, Hardening, "hardening"));
  Napi::Object testing = exports.Has("_testing") ? exports.Get("_testing").As<Napi::Object>() : Napi::Object::New(env);
  testing.Set("setReleaseProbe", Napi::Function::New(env, TestSetReleaseProbe, "setReleaseProbe"));
  testing.Set("releaseProbe", Napi::Function::New(env, TestReleaseProbe, "releaseProbe"));
  testing.Set("failNextArrayBuffer", Napi::Function::New(env, TestFailNextArrayBuffer, "failNextArrayBuffer"));
  exports.Set("_testing", testing);
}

}  // namespace

SEALED_REGISTER(secure_memory, Init);

}  // namespace sealed
