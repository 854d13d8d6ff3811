// Payload decryption (FORMAT.md 5.2) and tensor digests (section 6) in one pass per chunk.
//
// Each worker thread claims whole chunks. A chunk is processed in sub-blocks small enough to stay in
// L2: pread the sub-block's ciphertext, decrypt it in place, hash the leaf bytes it holds, and (when
// loading through scratch) copy them out, so every byte is touched while hot. Chunks that lie wholly
// inside a destination secure buffer are read and decrypted directly in place there.
//
// The ciphertext comes from the file (pread), or from windows of the file's bytes that the caller
// fetched elsewhere (an HTTP range source) and feeds to a run object one window at a time: the same
// chunk code copies them into secure memory and decrypts, authenticates and digests them there.
#include "decrypt.h"

#include <openssl/crypto.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "chunk_common.h"
#include "crypto.h"
#include "errors.h"
#include "js_region.h"
#include "module.h"
#include "promise_worker.h"

namespace sealed {
namespace {


// preadv of [buf, n) followed by the 16-byte tag: one syscall for the common case.
void PreadWithTag(int fd, uint8_t* buf, size_t n, uint8_t* tag, uint64_t off, const std::string& path) {
  struct iovec iov[2] = {{buf, n}, {tag, kTagBytes}};
  ssize_t r;
  do {
    r = preadv(fd, iov, 2, static_cast<off_t>(off));
  } while (r < 0 && errno == EINTR);
  if (r == static_cast<ssize_t>(n + kTagBytes)) return;
  if (r < 0) throw SealedError("ERR_IO", ErrnoText("read " + path + " at offset " + std::to_string(off), errno));
  // Short read: finish piece by piece (PreadFull reports truncation precisely).
  size_t got = static_cast<size_t>(r);
  if (got < n) {
    PreadFull(fd, buf + got, n - got, off + got, path);
    got = n;
  }
  PreadFull(fd, tag + (got - n), kTagBytes - (got - n), off + got, path);
}

// Where a job's ciphertext comes from: the file itself (pread), or one window of the file's bytes that
// the caller fetched (ciphertext is not secret). Either way it is copied into secure memory before
// it is decrypted there, so the bytes authenticated are the bytes decrypted.
struct CipherInput {
  const FileState* file = nullptr;
  const uint8_t* window = nullptr;  // file bytes [window_off, window_off + window_len); null: pread
  uint64_t window_off = 0;
  size_t window_len = 0;

  void Read(uint8_t* buf, size_t n, uint64_t off) const {
    if (!window) return PreadFull(file->fd, buf, n, off, file->path);
    std::memcpy(buf, At(off, n), n);
  }
  void ReadWithTag(uint8_t* buf, size_t n, uint8_t* tag, uint64_t off) const {
    if (!window) return PreadWithTag(file->fd, buf, n, tag, off, file->path);
    std::memcpy(buf, At(off, n + kTagBytes), n);
    std::memcpy(tag, At(off + n, kTagBytes), kTagBytes);
  }

 private:
  // Feeds are checked to hold whole chunks before a job starts; this is the last line of defence.
  const uint8_t* At(uint64_t off, size_t n) const {
    if (off < window_off || off - window_off > window_len || n > window_len - (off - window_off)) {
      throw SealedError("ERR_INVALID_ARGUMENT", "a chunk lies outside the bytes fed to the run");
    }
    return window + (off - window_off);
  }
};

struct RunBaton {
  std::shared_ptr<FileState> file;
  // Ranges of the payload plaintext, ascending and disjoint: one tensor each.
  std::vector<uint64_t> begin, end;
  uint8_t* dest = nullptr;
  size_t dest_size = 0;
  bool allocate = false;  // the job allocates dest (dest_size bytes), locking it chunk by chunk
  std::vector<uint64_t> dest_off;
  bool all_chunks = false;
  bool stop_on_failure = false;
  bool plain_sha = false;
  unsigned threads = 1;
  size_t sub_block = kDefaultSubBlock;

  // Derived
  LeafPlan leaves;
  std::vector<uint64_t> chunks;  // the chunks to process, ascending

  // Outputs
  std::vector<uint8_t> digests;
  std::vector<uint8_t> plain_digests;
  std::vector<uint64_t> failed;
  std::atomic<uint64_t> processed{0};
};

// One run's state: its baton, destination and digests. A file job processes every chunk in one
// go; a fed run (RunObject) processes them window by window, each window a job of its own.
class RunState {
 public:
  // dest_ab: the caller's secure buffer, lent to the run (detached) until Result hands it back.
  // JS thread.
  RunState(std::unique_ptr<RunBaton> baton, const Napi::ArrayBuffer* dest_ab) : b_(std::move(baton)), alg_(b_->file->suite) {
    if (dest_ab) {
      owned_ = TakeRegion(*dest_ab);
      lent_ = true;
      // No JS may run between the lookup and here; check anyway rather than write through a stale pointer.
      if (!owned_ || owned_->data() != b_->dest) throw SealedError("ERR_INVALID_ARGUMENT", "dest was released before the job could take it");
    }
  }

  const RunBaton& baton() const { return *b_; }
  const ErrorSlot& fatal() const { return fatal_; }
  // A chunk failed with stopOnFailure, or Stop() was called: the remaining chunks are skipped.
  bool stopped() const { return abort_.load(); }
  void Stop() { StopAll(); }
  // Wipes and unmaps the destination (a lent one too), and lets go of the file (its payload key goes
  // with the file's last reference). Never while Process runs; the run is over after it.
  void Discard() {
    owned_.reset();
    b_->file.reset();
  }

  // Worker thread: decrypts and digests b.chunks[from, to) from `in` on up to b.threads threads.
  // False on a fatal error (fatal() says which), with the destination already wiped and unmapped.
  bool Process(size_t from, size_t to, const CipherInput& in) {
    RunBaton& b = *b_;
    Prepare();
    input_ = &in;
    next_ = from;
    limit_ = to;
    const unsigned n = static_cast<unsigned>(std::min<uint64_t>(b.threads, std::max<size_t>(1, to - from)));
    std::vector<std::thread> pool;
    pool.reserve(n - 1);
    for (unsigned i = 1; i < n; ++i) {
      // Under a pid limit (containers, prlimit --nproc) a thread may not start: go on with those
      // that did (this thread always works too) rather than unwind past joinable threads.
      try {
        pool.emplace_back([this] { Worker(); });
      } catch (const std::exception&) {  // system_error, or bad_alloc for the thread's state
        break;
      }
    }
    Worker();
    for (auto& t : pool) t.join();
    input_ = nullptr;
    if (fatal_.set()) {
      owned_.reset();  // wiped and unmapped here, off the JS thread (a lent buffer too)
      return false;
    }
    return true;
  }

  // After the last Process: wipes the destination if a chunk failed, and computes the digests.
  void Complete() {
    RunBaton& b = *b_;
    Prepare();  // a run with no chunk to process still hands out its (empty) destination
    // A buffer is handed out only whole: after a failed chunk, wipe it. A lent one goes back to its
    // owner wiped (every byte, as a failed load leaves it).
    if (owned_ && !b.failed.empty()) {
      if (lent_) {
        owned_->WipeResident();  // every page that holds data, without faulting in the others
      } else {
        owned_.reset();
      }
    }
    Roots();
  }

  // JS thread, once, after Complete.
  Napi::Object Result(Napi::Env env) {
    RunBaton& b = *b_;
    Napi::Object out = Napi::Object::New(env);
    out.Set("digests", Napi::Buffer<uint8_t>::Copy(env, b.digests.data(), b.digests.size()));
    if (b.plain_sha) out.Set("sha256", Napi::Buffer<uint8_t>::Copy(env, b.plain_digests.data(), b.plain_digests.size()));
    std::sort(b.failed.begin(), b.failed.end());
    Napi::Array failed = Napi::Array::New(env, b.failed.size());
    for (size_t i = 0; i < b.failed.size(); ++i) failed.Set(static_cast<uint32_t>(i), static_cast<double>(b.failed[i]));
    out.Set("failedChunks", failed);
    out.Set("chunksProcessed", static_cast<double>(b.processed.load()));
    if (owned_) out.Set("dest", NewSecureArrayBuffer(env, std::move(owned_)));
    return out;
  }

 private:
  // Once per run, on the first thread that needs it: plain hash contexts and the destination.
  void Prepare() {
    if (prepared_) return;
    RunBaton& b = *b_;
    if (b.plain_sha) {
      plain_.resize(b.begin.size());
      for (auto& p : plain_) {
        p = std::make_unique<MdCtx>();
        if (!p->ctx || EVP_DigestInit_ex2(p->ctx, alg_.sha256, nullptr) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 init");
      }
    }
    if (b.allocate) {
      owned_ = SecureRegion::Allocate(b.dest_size, /*populate_now=*/false);
      b.dest = owned_->data();
    }
    prepared_ = true;
  }

  void Worker() {
    try {
      WorkerLoop();
    } catch (const SealedError& e) {
      Abort(e.code(), e.what());
    } catch (const std::exception& e) {
      Abort("ERR_RESOURCE_LIMIT", e.what());
    }
    WipeStackBelow();  // the loop's frames (OpenSSL's among them) held plaintext
  }

  void Abort(const char* code, const std::string& msg) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fatal_.Set(code, msg);
    }
    StopAll();
  }

  // Not inlined into Worker: its frames (and OpenSSL's below them) must all lie below the stack
  // WipeStackBelow zeroes.
  __attribute__((noinline)) void WorkerLoop() {
    RunBaton& b = *b_;
    const FileState& f = *b.file;
    CipherCtx cipher;
    MdCtx md;
    if (!cipher.ctx || !md.ctx || EVP_DecryptInit_ex2(cipher.ctx, alg_.cipher, f.payload_key->data(), nullptr, nullptr) != 1) {
      throw SealedError("ERR_UNSUPPORTED", "cannot initialise the cipher");
    }
    // Plain SHA-256 needs each tensor's bytes in payload order. With a whole-chunk buffer a worker
    // decrypts and leaf-hashes in parallel and only waits for its turn to feed the plain hashes;
    // where RLIMIT_MEMLOCK does not allow one, it takes its turn before the chunk instead.
    std::unique_ptr<SecureRegion> scratch;
    bool buffered = false;
    if (b.plain_sha && f.chunk_size <= kMaxBufferedChunk) {
      try {
        scratch = SecureRegion::Allocate(f.chunk_size);
        buffered = true;
      } catch (const SealedError& e) {
        if (std::string(e.code()) != "ERR_MEMLOCK") throw;
      }
    }
    if (!scratch) scratch = SecureRegion::Allocate(std::min<size_t>(b.sub_block, f.chunk_size));
    while (!abort_.load(std::memory_order_relaxed)) {
      const size_t idx = next_.fetch_add(1);
      if (idx >= limit_) break;
      ProcessChunk(idx, b.chunks[idx], cipher.ctx, md.ctx, scratch->data(), buffered);
    }
  }

  void ProcessChunk(size_t idx, uint64_t c, EVP_CIPHER_CTX* cctx, EVP_MD_CTX* md, uint8_t* scratch, bool buffered) {
    RunBaton& b = *b_;
    const FileState& f = *b.file;
    const uint64_t cs_start = c * f.chunk_size;
    const uint64_t len = f.ChunkPlainLength(c);
    const uint64_t cs_end = cs_start + len;
    const uint64_t file_off = f.ChunkFileOffset(c);

    uint8_t nonce[kNonceBytes];
    ChunkNonce(c, c == f.chunk_count - 1, nonce);
    int outl = 0;
    if (EVP_DecryptInit_ex2(cctx, nullptr, nullptr, nonce, nullptr) != 1 ||
        EVP_DecryptUpdate(cctx, nullptr, &outl, f.header_digest, kHashBytes) != 1) {
      throw SealedError("ERR_UNSUPPORTED", "cipher init failed");
    }

    // Ranges touching this chunk: [r_lo, r_hi).
    const size_t nr = b.begin.size();
    size_t r_lo = static_cast<size_t>(std::upper_bound(b.end.begin(), b.end.end(), cs_start) - b.end.begin());
    size_t r_hi = r_lo;
    while (r_hi < nr && b.begin[r_hi] < cs_end) ++r_hi;

    uint8_t* target = DirectTarget(cs_start, cs_end, r_lo, r_hi);
    // Memory the job allocated, or a lent buffer that was reserved rather than populated.
    if (owned_ && (!lent_ || owned_->lazy())) PopulateDestSpan(cs_start, cs_end, r_lo, r_hi);
    // Unbuffered plain SHA-256: the whole chunk waits for its turn (one chunk at a time).
    const bool plain_inline = b.plain_sha && !buffered;
    if (plain_inline && !AwaitTurn(idx)) return;
    uint8_t tag[kTagBytes];
    size_t cursor = r_lo;
    const CipherInput& in = *input_;
    if (len == 0) in.Read(tag, kTagBytes, file_off);
    for (uint64_t off = 0; off < len; off += b.sub_block) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(b.sub_block, len - off));
      uint8_t* buf = target ? target + off : buffered ? scratch + off : scratch;
      if (off + n == len) {
        in.ReadWithTag(buf, n, tag, file_off + off);
      } else {
        in.Read(buf, n, file_off + off);
      }
      // Decrypt and hash in L1-sized pieces: each piece is hashed right after it is decrypted.
      for (size_t p = 0; p < n; p += piece_) {
        const size_t m = std::min(piece_, n - p);
        if (EVP_DecryptUpdate(cctx, buf + p, &outl, buf + p, static_cast<int>(m)) != 1) {
          throw SealedError("ERR_UNSUPPORTED", "decrypt failed");
        }
        Consume(c, cs_start, cs_end, cs_start + off + p, buf + p, m, cursor, r_hi, md, target == nullptr, plain_inline);
      }
    }
    bool ok = EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_AEAD_SET_TAG, kTagBytes, tag) == 1 &&
              EVP_DecryptFinal_ex(cctx, scratch, &outl) == 1;
    if (!ok) {
      // Nothing unauthenticated survives: wipe what this chunk wrote.
      if (target) {
        OPENSSL_cleanse(target, len);
      } else if (b.dest) {
        for (size_t r = r_lo; r < r_hi; ++r) {
          uint64_t a = std::max(b.begin[r], cs_start), e = std::min(b.end[r], cs_end);
          if (a < e) OPENSSL_cleanse(b.dest + b.dest_off[r] + (a - b.begin[r]), e - a);
        }
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        b.failed.push_back(c);
      }
      if (b.stop_on_failure) StopAll();
    }
    if (b.plain_sha && buffered) {
      // The whole chunk is in `target` or `scratch`: feed the plain hashes in payload order.
      if (!AwaitTurn(idx)) return;
      const uint8_t* data = target ? target : scratch;
      for (size_t r = r_lo; r < r_hi && ok; ++r) {
        uint64_t a = std::max(b.begin[r], cs_start), e = std::min(b.end[r], cs_end);
        if (a < e && EVP_DigestUpdate(plain_[r]->ctx, data + (a - cs_start), e - a) != 1) {
          throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
        }
      }
    }
    if (b.plain_sha) PassTurn(idx);
    b.processed++;
  }

  // Populate the (locked-on-fault) destination bytes this chunk will write, on this worker's core.
  void PopulateDestSpan(uint64_t cs_start, uint64_t cs_end, size_t r_lo, size_t r_hi) {
    const RunBaton& b = *b_;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t r = r_lo; r < r_hi; ++r) {
      uint64_t a = std::max(b.begin[r], cs_start), e = std::min(b.end[r], cs_end);
      if (a >= e) continue;
      lo = std::min(lo, b.dest_off[r] + (a - b.begin[r]));
      hi = std::max(hi, b.dest_off[r] + (e - b.begin[r]));
    }
    if (lo < hi) owned_->PopulateRange(lo, hi - lo);
  }

  // Where to decrypt chunk [cs_start, cs_end) in place, if the destination holds all of it contiguously.
  uint8_t* DirectTarget(uint64_t cs_start, uint64_t cs_end, size_t r_lo, size_t r_hi) const {
    const RunBaton& b = *b_;
    if (!b.dest || cs_end == cs_start || r_lo >= r_hi) return nullptr;
    if (b.begin[r_lo] > cs_start) return nullptr;
    uint64_t at = cs_start;  // payload offset covered so far
    size_t prev = SIZE_MAX;
    for (size_t r = r_lo; r < r_hi; ++r) {
      if (b.begin[r] == b.end[r]) continue;
      if (b.begin[r] > at) return nullptr;  // a gap the destination does not hold
      if (prev != SIZE_MAX && b.dest_off[prev] + (b.end[prev] - b.begin[prev]) != b.dest_off[r]) return nullptr;
      at = b.end[r];
      prev = r;
    }
    if (at < cs_end) return nullptr;
    return b.dest + b.dest_off[r_lo] + (cs_start - b.begin[r_lo]);
  }

  // Hash (and copy out) the leaf bytes in plaintext [pos, pos + n) of chunk c.
  void Consume(uint64_t c, uint64_t cs_start, uint64_t cs_end, uint64_t pos, const uint8_t* buf, size_t n, size_t& cursor,
               size_t r_hi, EVP_MD_CTX* md, bool copy, bool plain) {
    RunBaton& b = *b_;
    const uint64_t stop = pos + n;
    while (cursor < r_hi && b.end[cursor] <= pos) ++cursor;
    static const uint8_t kLeafPrefix = 0x00;
    for (size_t r = cursor; r < r_hi && b.begin[r] < stop; ++r) {
      const uint64_t a = std::max(pos, b.begin[r]);
      const uint64_t e = std::min(stop, b.end[r]);
      if (a >= e) continue;
      if (a == std::max(b.begin[r], cs_start)) {
        if (EVP_DigestInit_ex2(md, alg_.sha256, nullptr) != 1 || EVP_DigestUpdate(md, &kLeafPrefix, 1) != 1) {
          throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
        }
      }
      if (EVP_DigestUpdate(md, buf + (a - pos), e - a) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      if (plain && EVP_DigestUpdate(plain_[r]->ctx, buf + (a - pos), e - a) != 1) {
        throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      }
      if (copy && b.dest) std::memcpy(b.dest + b.dest_off[r] + (a - b.begin[r]), buf + (a - pos), e - a);
      if (e == std::min(b.end[r], cs_end)) {
        uint8_t* out = b.leaves.Leaf(r, c);
        unsigned int len = 0;
        if (EVP_DigestFinal_ex(md, out, &len) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      }
    }
  }

  void StopAll() {
    abort_ = true;
    turns_.Stop();
  }

  // Chunk idx may start once chunk idx - 1 is done (plain SHA-256 mode). False when aborting.
  bool AwaitTurn(size_t idx) { return turns_.Await(idx) && !abort_.load(); }
  void PassTurn(size_t idx) { turns_.Pass(idx); }

  void Roots() {
    RunBaton& b = *b_;
    const size_t nr = b.begin.size();
    b.leaves.Roots(alg_.sha256, b.begin, b.end, b.file->chunk_size, b.digests);
    if (b.plain_sha) {
      b.plain_digests.resize(kHashBytes * nr);
      for (size_t r = 0; r < nr; ++r) {
        unsigned int out_len = 0;
        EVP_DigestFinal_ex(plain_[r]->ctx, b.plain_digests.data() + kHashBytes * r, &out_len);
      }
    }
  }

  std::unique_ptr<RunBaton> b_;
  std::unique_ptr<SecureRegion> owned_;  // dest when the run allocates it or is lent it; wiped if the run fails
  bool lent_ = false;                    // owned_ is the caller's buffer (populated, or reserved: lazy())
  bool prepared_ = false;
  Algorithms alg_;  // fetched on the JS thread; shared read-only by the workers
  const CipherInput* input_ = nullptr;  // the current Process call's ciphertext
  std::atomic<size_t> next_{0};
  size_t limit_ = 0;  // Process claims b.chunks[next_, limit_)
  const size_t piece_ = kPiece;
  std::atomic<bool> abort_{false};
  std::mutex mutex_;
  ErrorSlot fatal_;
  TurnGate turns_;
  std::vector<std::unique_ptr<MdCtx>> plain_;
};

// file.run(): every chunk read from the file with pread, in one job.
class RunJob : public PromiseWorker {
 public:
  RunJob(Napi::Env env, std::unique_ptr<RunBaton> baton, const Napi::ArrayBuffer* dest_ab)
      : PromiseWorker(env, "sealed-tensors:decrypt"), state_(std::move(baton), dest_ab) {}

 protected:
  void Run() override {
    const CipherInput in{state_.baton().file.get()};
    if (!state_.Process(0, state_.baton().chunks.size(), in)) {
      error_ = state_.fatal();  // PromiseWorker rejects with this code and message
      return;
    }
    state_.Complete();
  }
  Napi::Value Resolve(Napi::Env env) override { return state_.Result(env); }

 private:
  RunState state_;
};

// file.begin(): a run whose ciphertext the caller feeds, window by window, in chunk order. The run
// object (JS thread) and the window jobs (worker threads) share this; `mutex` guards the feed fields.
struct FedRun {
  FedRun(std::unique_ptr<RunBaton> baton, const Napi::ArrayBuffer* dest_ab) : state(std::move(baton), dest_ab) {}
  RunState state;
  std::vector<uint8_t> window;  // the current window's ciphertext, copied from the caller's pieces
  std::mutex mutex;
  bool busy = false;     // a window job is running
  bool discard = false;  // abort() came while busy: the job discards the run as it ends
  bool done = false;     // finished or discarded: nothing more is fed
  size_t fed = 0;        // chunks[0, fed) are processed
};

class FeedJob : public PromiseWorker {
 public:
  FeedJob(Napi::Env env, std::shared_ptr<FedRun> run, size_t from, size_t to, uint64_t offset)
      : PromiseWorker(env, "sealed-tensors:feed"),
        run_(std::move(run)),
        from_(from),
        to_(to),
        input_{run_->state.baton().file.get(), run_->window.data(), offset, run_->window.size()} {}
  // JS thread, once the promise is settled and before JS can see it: the run takes its next feed
  // only now, so "one at a time" holds until the caller has the answer. An abort() that came after
  // the job's end but before this discards the run here.
  ~FeedJob() override {
    std::lock_guard<std::mutex> lock(run_->mutex);
    run_->busy = false;
    if (run_->discard && !run_->done) {
      run_->state.Discard();
      run_->done = true;
    }
  }

 protected:
  void Run() override {
    bool ok = false;
    try {
      ok = run_->state.Process(from_, to_, input_);
      if (!ok) error_ = run_->state.fatal();
    } catch (...) {
      End(false);
      throw;
    }
    End(ok);
  }
  // True while the run wants more windows; false once a chunk failed (stopOnFailure) or it was aborted.
  Napi::Value Resolve(Napi::Env env) override { return Napi::Boolean::New(env, more_); }

 private:
  void End(bool ok) {
    std::lock_guard<std::mutex> lock(run_->mutex);
    if (ok) run_->fed = to_;
    if (!ok || run_->discard) {
      run_->state.Discard();  // every secure byte of the run wiped, here, off the JS thread
      run_->done = true;
    }
    more_ = ok && !run_->done && !run_->state.stopped() && run_->fed < run_->state.baton().chunks.size();
  }

  std::shared_ptr<FedRun> run_;
  size_t from_, to_;
  CipherInput input_;
  bool more_ = false;
};

// Tags our run objects: methods check it on `this` (UnwrapTagged).
constexpr napi_type_tag kRunTag = {0x5ea1ed5ea1ed2f0eULL, 0x6e61746976657275ULL};

class RunObject : public Napi::ObjectWrap<RunObject> {
 public:
  static RunObject* Unwrap(Napi::Object self) { return UnwrapTagged<RunObject>(self, &kRunTag, "NativeSealedRun"); }

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeSealedRun",
                       {InstanceMethod<&RunObject::Feed>("feed"), InstanceMethod<&RunObject::Finish>("finish"),
                        InstanceMethod<&RunObject::Abort>("abort"), InstanceAccessor<&RunObject::Chunks>("chunks")});
  }

  explicit RunObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RunObject>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw MakeError(info.Env(), "ERR_INVALID_ARGUMENT", "use file.begin() to start a run");
    }
    run_ = *info[0].As<Napi::External<std::shared_ptr<FedRun>>>().Data();
    info.This().As<Napi::Object>().TypeTag(&kRunTag);
  }

 private:
  // The chunks this run needs, ascending: the caller fetches their ciphertext (file offsets from the layout).
  Napi::Value Chunks(const Napi::CallbackInfo& info) {
    const std::vector<uint64_t>& chunks = run_->state.baton().chunks;
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), chunks.size());
    for (size_t i = 0; i < chunks.size(); ++i) out[i] = static_cast<double>(chunks[i]);
    return out;
  }

  // feed(fileOffset, pieces: Uint8Array[]) -> Promise<boolean>: the pieces, concatenated, are the file's
  // bytes from fileOffset, holding exactly the next whole chunks this run needs (consecutive in the file).
  Napi::Value Feed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    FedRun& r = *run_;
    const std::vector<uint64_t>& chunks = r.state.baton().chunks;
    if (!info[0].IsNumber()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "feed() takes a file offset");
    const double offset_d = info[0].As<Napi::Number>().DoubleValue();
    if (!info[1].IsArray()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "feed() takes an array of Uint8Array pieces");
    Napi::Array pieces = info[1].As<Napi::Array>();
    std::vector<Napi::Uint8Array> views;
    std::vector<size_t> lengths;  // as counted: a getter on a later index may resize an earlier piece
    uint64_t total = 0;
    for (uint32_t i = 0; i < pieces.Length(); ++i) {
      Napi::Value v = pieces.Get(i);
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw MakeError(env, "ERR_INVALID_ARGUMENT", "feed() pieces must be Uint8Arrays");
      }
      views.push_back(v.As<Napi::Uint8Array>());
      lengths.push_back(views.back().ByteLength());
      total += lengths.back();
    }
    // Reading the pieces may have run caller code (an index getter): it could have fed, aborted, or
    // resized or detached a piece already counted (a length-tracking view of a resizable buffer).
    // From here on no JavaScript runs; a piece whose length changed is refused before any copy.
    // Napi::Uint8Array caches its data pointer and length when made: ask V8 again for each piece.
    std::vector<const uint8_t*> data(views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      napi_typedarray_type type;
      size_t length = 0;
      void* at = nullptr;
      if (napi_get_typedarray_info(env, views[i], &type, &length, &at, nullptr, nullptr) != napi_ok || length != lengths[i] ||
          (length > 0 && at == nullptr)) {
        throw MakeError(env, "ERR_INVALID_ARGUMENT", "feed() pieces changed while they were read (a getter resized or detached one)");
      }
      data[i] = static_cast<const uint8_t*>(at);
    }
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.done) throw MakeError(env, "ERR_RELEASED", "this run has ended (finished, aborted or failed): start another");
    if (r.busy) throw MakeError(env, "ERR_INVALID_ARGUMENT", "a window is still being processed: await feed() before the next");
    if (r.state.stopped() || r.fed >= chunks.size()) {
      Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
      d.Resolve(Napi::Boolean::New(env, false));
      return d.Promise();
    }
    const FileState& f = *r.state.baton().file;  // live until the run is done
    if (!(offset_d >= 0 && offset_d <= static_cast<double>(f.file_size)) || offset_d != static_cast<double>(static_cast<uint64_t>(offset_d)) ||
        static_cast<uint64_t>(offset_d) != f.ChunkFileOffset(chunks[r.fed])) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "feed() must start at the file offset of chunk " + std::to_string(chunks[r.fed]) +
                                                       " (" + std::to_string(f.ChunkFileOffset(chunks[r.fed])) + ")");
    }
    const uint64_t offset = static_cast<uint64_t>(offset_d);
    size_t to = r.fed;
    uint64_t end = offset;
    while (to < chunks.size() && (to == r.fed || chunks[to] == chunks[to - 1] + 1)) {
      const uint64_t chunk_end = f.ChunkFileOffset(chunks[to]) + f.ChunkPlainLength(chunks[to]) + kTagBytes;
      if (chunk_end - offset > total) break;
      end = chunk_end;
      ++to;
    }
    if (to == r.fed || end - offset != total) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "feed() must hold whole chunks of this run, consecutive in the file (" +
                                                       std::to_string(total) + " bytes fed at offset " + std::to_string(offset) + ")");
    }
    // Copied here, on the JS thread: a job must not read memory the caller could free or detach under it.
    r.window.resize(total);
    size_t at = 0;
    for (size_t i = 0; i < views.size(); ++i) {
      if (lengths[i] > 0) std::memcpy(r.window.data() + at, data[i], lengths[i]);
      at += lengths[i];
    }
    auto* job = new FeedJob(env, run_, r.fed, to, offset);
    r.busy = true;
    return job->Start();
  }

  // finish() -> the same result as file.run(), once every chunk was fed (or a chunk failed with stopOnFailure).
  Napi::Value Finish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    FedRun& r = *run_;
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.done) throw MakeError(env, "ERR_RELEASED", "this run has ended (finished, aborted or failed): start another");
    if (r.busy) throw MakeError(env, "ERR_INVALID_ARGUMENT", "a window is still being processed: await feed() before finish()");
    const std::vector<uint64_t>& chunks = r.state.baton().chunks;
    r.done = true;
    if (r.fed < chunks.size() && !r.state.stopped()) {
      const std::string message = r.state.baton().file->path + ": the source ended before chunk " + std::to_string(chunks[r.fed]) + " was read";
      r.state.Discard();  // nothing half-done: a run cut short hands out nothing
      throw MakeError(env, "ERR_TRUNCATED", message);
    }
    try {
      r.state.Complete();
    } catch (const SealedError& e) {
      r.state.Discard();
      throw MakeError(env, e);
    }
    Napi::Object result = r.state.Result(env);
    r.state.Discard();  // the destination now belongs to the result; the file is let go
    return result;
  }

  // abort(): wipes and frees the run's secure memory now, or (while a window is processed) as that job ends.
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    FedRun& r = *run_;
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.done) return info.Env().Undefined();
    if (r.busy) {
      r.discard = true;
      r.state.Stop();
    } else {
      r.state.Discard();
      r.done = true;
    }
    return info.Env().Undefined();
  }

  std::shared_ptr<FedRun> run_;
};

double NumberOption(Napi::Env env, Napi::Object o, const char* name, double dflt) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return dflt;
  if (!v.IsNumber()) throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string(name) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

bool IsWholeIn(double v, double lo, double hi) { return v >= lo && v <= hi && v == static_cast<double>(static_cast<uint64_t>(v)); }

std::vector<uint64_t> Offsets(Napi::Env env, Napi::Value v, const char* name, double max) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string(name) + " must be a Float64Array");
  }
  Napi::Float64Array a = v.As<Napi::Float64Array>();
  std::vector<uint64_t> out(a.ElementLength());
  for (size_t i = 0; i < out.size(); ++i) {
    double d = a[i];
    if (!IsWholeIn(d, 0, max)) throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string(name) + " holds an offset out of range");
    out[i] = static_cast<uint64_t>(d);
  }
  return out;
}

}  // namespace

namespace {

struct ParsedRun {
  std::unique_ptr<RunBaton> baton;
  Napi::ArrayBuffer dest_ab;
  JsRegion* region = nullptr;  // looked up here, taken by the run once every argument is valid
};

ParsedRun ParseRun(const Napi::CallbackInfo& info, std::shared_ptr<FileState> file) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "run() takes an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto b = std::make_unique<RunBaton>();
  const double payload = static_cast<double>(file->payload_length);
  std::vector<uint64_t> flat = Offsets(env, o.Get("ranges"), "ranges", payload);
  if (flat.size() % 2 != 0) throw MakeError(env, "ERR_INVALID_ARGUMENT", "ranges must hold begin/end pairs");
  const size_t nr = flat.size() / 2;
  b->begin.resize(nr);
  b->end.resize(nr);
  for (size_t r = 0; r < nr; ++r) {
    b->begin[r] = flat[2 * r];
    b->end[r] = flat[2 * r + 1];
    if (b->end[r] < b->begin[r] || (r > 0 && b->begin[r] < b->end[r - 1])) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "ranges must be ascending and disjoint");
    }
  }
  b->all_chunks = o.Get("allChunks").ToBoolean().Value();
  b->stop_on_failure = o.Get("stopOnFailure").ToBoolean().Value();
  b->plain_sha = o.Get("plainSha256").ToBoolean().Value();
  double threads = NumberOption(env, o, "threads", 1);
  if (!IsWholeIn(threads, 1, 1024)) throw MakeError(env, "ERR_INVALID_ARGUMENT", "threads must be an integer in [1, 1024]");
  b->threads = static_cast<unsigned>(threads);
  double sub = NumberOption(env, o, "subBlock", kDefaultSubBlock);
  if (!IsWholeIn(sub, 4096, 256 << 20) || static_cast<uint64_t>(sub) % 4096 != 0) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "subBlock must be a multiple of 4096");
  }
  b->sub_block = static_cast<size_t>(sub);

  ParsedRun out;
  Napi::ArrayBuffer& dest_ab = out.dest_ab;
  JsRegion*& region = out.region;
  Napi::Value dv = o.Get("dest");
  Napi::Value size_v = o.Get("destSize");
  // Every option is read before dest is looked up: a getter is caller code and could release dest
  // between the lookup and the job taking it, leaving the job a pointer to freed memory.
  Napi::Value offsets_v = o.Get("destOffsets");
  if (!size_v.IsUndefined()) {
    double size = NumberOption(env, o, "destSize", 0);
    if (!IsWholeIn(size, 0, 9007199254740991.0) || !dv.IsUndefined()) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "destSize must be a byte count, and excludes dest");
    }
    b->allocate = true;
    b->dest_size = static_cast<size_t>(size);
  } else if (!dv.IsUndefined() && !dv.IsNull()) {
    if (!dv.IsArrayBuffer()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "dest must be a secure ArrayBuffer");
    dest_ab = dv.As<Napi::ArrayBuffer>();
    region = LookupRegion(dest_ab);
    if (!region) throw MakeError(env, "ERR_INVALID_ARGUMENT", "dest must be a live secure buffer (plaintext goes nowhere else)");
    b->dest = region->region->data();
    b->dest_size = region->region->size();
  }
  if (b->allocate || region) {
    b->dest_off = Offsets(env, offsets_v, "destOffsets", static_cast<double>(b->dest_size));
    if (b->dest_off.size() != nr) throw MakeError(env, "ERR_INVALID_ARGUMENT", "destOffsets needs one offset per range");
    for (size_t r = 0; r < nr; ++r) {
      if (b->dest_off[r] + (b->end[r] - b->begin[r]) > b->dest_size) {
        throw MakeError(env, "ERR_INVALID_ARGUMENT", "a range does not fit in dest at its offset");
      }
    }
  }

  // Leaves: one per chunk a non-empty range touches (FORMAT.md section 6).
  const uint64_t cs = file->chunk_size;
  b->leaves.Plan(b->begin, b->end, cs);
  if (b->all_chunks) {
    b->chunks.resize(file->chunk_count);
    for (uint64_t c = 0; c < file->chunk_count; ++c) b->chunks[c] = c;
  } else {
    for (size_t r = 0; r < nr; ++r) {
      if (b->end[r] == b->begin[r]) continue;
      uint64_t first = b->leaves.first_chunk[r], last = (b->end[r] - 1) / cs;
      if (!b->chunks.empty() && b->chunks.back() >= first) first = b->chunks.back() + 1;
      for (uint64_t c = first; c <= last; ++c) b->chunks.push_back(c);
    }
  }
  b->file = std::move(file);
  out.baton = std::move(b);
  return out;
}

void Init(Napi::Env env, Napi::Object) { SetConstructor(env, "NativeSealedRun", RunObject::Define(env)); }

}  // namespace

SEALED_REGISTER(fed_run, Init);

Napi::Value StartRun(const Napi::CallbackInfo& info, std::shared_ptr<FileState> file) {
  Napi::Env env = info.Env();
  if (file->fd < 0) throw MakeError(env, "ERR_INVALID_ARGUMENT", file->path + " is read from a source, not a file: use begin()");
  ParsedRun p = ParseRun(info, std::move(file));
  RunJob* job;
  try {
    job = new RunJob(env, std::move(p.baton), p.region ? &p.dest_ab : nullptr);
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
  return job->Start();
}

Napi::Value BeginRun(const Napi::CallbackInfo& info, std::shared_ptr<FileState> file) {
  Napi::Env env = info.Env();
  ParsedRun p = ParseRun(info, std::move(file));
  std::shared_ptr<FedRun> run;
  try {
    run = std::make_shared<FedRun>(std::move(p.baton), p.region ? &p.dest_ab : nullptr);
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
  auto ext = Napi::External<std::shared_ptr<FedRun>>::New(env, &run);
  return Constructor(env, "NativeSealedRun").New({ext});
}

}  // namespace sealed
