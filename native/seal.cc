// The native sealer (FORMAT.md sections 4-6): the mirror of decrypt.cc for writing.
//
// Worker threads claim whole chunks. A chunk's plaintext is pread from the safetensors file into
// locked secure memory, leaf-hashed and encrypted in place in L1-sized pieces (each piece hashed
// just before it is encrypted, while hot), and the ciphertext and tag are pwritten at the chunk's
// final offset in the output. The plain SHA-256 of each tensor needs its bytes in payload order:
// with a whole-chunk buffer a worker reads, leaf-hashes and encrypts its chunk in parallel with the
// others, the ciphertext going to a second (ordinary: ciphertext is public) buffer so the
// plaintext stays for the plain hashes, fed when the chunk's turn comes: two passes over the
// chunk, not three. Where RLIMIT_MEMLOCK allows no whole-chunk buffer, a worker takes its turn for
// the whole chunk and encrypts in place. The table and header are written last (finish).
//
// Keys: the data key comes from a key handle; the key commitment, table key and payload key are
// derived here into secure memory and never leave the addon.
#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "chunk_common.h"
#include "crypto.h"
#include "errors.h"
#include "key_handle.h"
#include "module.h"
#include "promise_worker.h"
#include "sealed_file.h"

namespace sealed {
namespace {

constexpr size_t kSubBlock = kDefaultSubBlock;

uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t Le32(const uint8_t* p) { return Le16(p) | static_cast<uint32_t>(Le16(p + 2)) << 16; }
uint64_t Le64(const uint8_t* p) { return Le32(p) | static_cast<uint64_t>(Le32(p + 4)) << 32; }

void PwriteAll(int fd, const struct iovec* iov_in, int n_iov, uint64_t off, const std::string& path) {
  struct iovec iov[2];
  std::memcpy(iov, iov_in, sizeof(struct iovec) * static_cast<size_t>(n_iov));
  int first = 0;
  while (first < n_iov) {
    ssize_t w = pwritev(fd, iov + first, n_iov - first, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw SealedError("ERR_IO", ErrnoText("writing " + path + " failed at offset " + std::to_string(off), errno));
    }
    off += static_cast<uint64_t>(w);
    size_t done = static_cast<size_t>(w);
    while (first < n_iov && done >= iov[first].iov_len) done -= iov[first++].iov_len;
    if (first < n_iov) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
    }
  }
}

void PwriteFull(int fd, const uint8_t* buf, size_t n, uint64_t off, const std::string& path) {
  struct iovec iov = {const_cast<uint8_t*>(buf), n};
  PwriteAll(fd, &iov, 1, off, path);
}

// One sealing run's state. The output layout is a FileState (the reader's): same offsets, same digest.
struct SealState {
  FileState out;         // fd: our dup of the output; path: the output's path
  int in_fd = -1;        // our dup of the safetensors input
  std::string in_path;
  uint64_t data_start = 0, data_length = 0;  // the input's byte buffer; payload beyond it is zero padding
  std::unique_ptr<SecureRegion> table_key;
  std::vector<uint64_t> begin, end;  // tensor ranges of the payload, ascending and disjoint
  bool plain_sha = false;
  unsigned threads = 1;
  std::mutex mutex;  // guards busy/done/payload_claimed
  bool busy = false, done = false;
  // payload() runs once: a second run would encrypt the input again, perhaps changed since, under
  // the same payload key and the same chunk nonces (GCM: keystream reuse, and the GHASH key leaks).
  bool payload_claimed = false;
  std::atomic<bool> stop{false};
  std::atomic<bool> payload_done{false};  // every chunk written: only then may the table and header follow

  ~SealState() {
    if (in_fd >= 0) close(in_fd);
  }
  // Keys wiped, descriptors closed: nothing more can be written.
  void Release() {
    out.payload_key.reset();
    table_key.reset();
    if (in_fd >= 0) close(in_fd);
    in_fd = -1;
    if (out.fd >= 0) close(out.fd);
    out.fd = -1;
  }
};

// payload(): every chunk on up to `threads` threads.
class PayloadJob : public PromiseWorker {
 public:
  PayloadJob(Napi::Env env, std::shared_ptr<SealState> s) : PromiseWorker(env, "sealed-tensors:seal"), s_(std::move(s)), alg_(s_->out.suite) {}
  ~PayloadJob() override {
    std::lock_guard<std::mutex> lock(s_->mutex);
    s_->busy = false;
    if (s_->done) s_->Release();  // abort() came while this job ran
  }

 protected:
  void Run() override {
    SealState& s = *s_;
    leaves_.Plan(s.begin, s.end, s.out.chunk_size);
    if (s.plain_sha) {
      plain_.resize(s.begin.size());
      for (auto& p : plain_) {
        p = std::make_unique<MdCtx>();
        if (!p->ctx || EVP_DigestInit_ex2(p->ctx, alg_.sha256, nullptr) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 init");
      }
    }
    const uint64_t count = s.out.chunk_count;
    const unsigned n = static_cast<unsigned>(std::min<uint64_t>(s.threads, count));
    std::vector<std::thread> pool;
    pool.reserve(n);
    for (unsigned i = 1; i < n; ++i) {
      try {
        pool.emplace_back([this] { Worker(); });
      } catch (const std::exception&) {
        break;  // a pid limit (system_error) or no memory for the thread's state (bad_alloc): go on with those that started
      }
    }
    Worker();
    for (auto& t : pool) t.join();
    if (fatal_.set()) {
      error_ = fatal_;
      return;
    }
    if (s.stop.load()) throw SealedError("ERR_IO", "sealing " + s.out.path + " was aborted");
    leaves_.Roots(alg_.sha256, s.begin, s.end, s.out.chunk_size, digests_);
    if (s.plain_sha) {
      sha_.resize(kHashBytes * s.begin.size());
      for (size_t r = 0; r < plain_.size(); ++r) {
        unsigned int len = 0;
        if (EVP_DigestFinal_ex(plain_[r]->ctx, sha_.data() + kHashBytes * r, &len) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      }
    }
    s.payload_done = true;
  }

  Napi::Value Resolve(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("digests", Napi::Buffer<uint8_t>::Copy(env, digests_.data(), digests_.size()));
    if (s_->plain_sha) out.Set("sha256", Napi::Buffer<uint8_t>::Copy(env, sha_.data(), sha_.size()));
    return out;
  }

 private:
  void Worker() {
    try {
      WorkerLoop();
    } catch (const SealedError& e) {
      Fail(e.code(), e.what());
    } catch (const std::bad_alloc&) {
      Fail("ERR_RESOURCE_LIMIT", "out of memory");
    } catch (const std::exception& e) {
      Fail("ERR_RESOURCE_LIMIT", e.what());
    }
    WipeStackBelow();  // the loop's frames (OpenSSL's among them) held plaintext
  }

  void Fail(const char* code, const std::string& msg) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fatal_.Set(code, msg);
    }
    s_->stop = true;
    turns_.Stop();
  }

  __attribute__((noinline)) void WorkerLoop() {
    SealState& s = *s_;
    CipherCtx cipher;
    MdCtx md;
    if (!cipher.ctx || !md.ctx || EVP_EncryptInit_ex2(cipher.ctx, alg_.cipher, s.out.payload_key->data(), nullptr, nullptr) != 1) {
      throw SealedError("ERR_UNSUPPORTED", "cannot initialise the cipher");
    }
    // A whole-chunk buffer when RLIMIT_MEMLOCK allows: one pwrite per chunk, and the plain hashes
    // wait for their turn without holding the other threads up.
    std::unique_ptr<SecureRegion> scratch;
    bool buffered = false;
    if (s.out.chunk_size <= kMaxBufferedChunk) {
      try {
        scratch = SecureRegion::Allocate(s.out.chunk_size);
        buffered = true;
      } catch (const SealedError& e) {
        if (std::string(e.code()) != "ERR_MEMLOCK") throw;
      }
    }
    if (!scratch) scratch = SecureRegion::Allocate(std::min<size_t>(kSubBlock, s.out.chunk_size));
    std::vector<uint8_t> cipher_out(buffered && s.plain_sha ? s.out.chunk_size : 0);
    while (!s.stop.load(std::memory_order_relaxed)) {
      const uint64_t c = next_.fetch_add(1);
      if (c >= s.out.chunk_count) break;
      SealChunk(c, cipher.ctx, md.ctx, scratch->data(), buffered, cipher_out.data());
    }
  }

  // Payload plaintext [pos, pos + n) into buf: the input's bytes, then zero padding.
  void ReadPlain(uint8_t* buf, size_t n, uint64_t pos) {
    const SealState& s = *s_;
    const size_t from_file = pos >= s.data_length ? 0 : static_cast<size_t>(std::min<uint64_t>(n, s.data_length - pos));
    size_t done = 0;
    while (done < from_file) {
      ssize_t r = pread(s.in_fd, buf + done, from_file - done, static_cast<off_t>(s.data_start + pos + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw SealedError("ERR_IO", ErrnoText("read " + s.in_path + " at offset " + std::to_string(s.data_start + pos + done), errno));
      }
      if (r == 0) {
        throw SealedError("ERR_SAFETENSORS", s.in_path + " ended early at byte " + std::to_string(s.data_start + pos + done) +
                                                 ": was it modified while sealing?");
      }
      done += static_cast<size_t>(r);
    }
    if (from_file < n) std::memset(buf + from_file, 0, n - from_file);
  }

  // `cout`: with buffered plain hashes, where the ciphertext goes (the plaintext stays in scratch).
  void SealChunk(uint64_t c, EVP_CIPHER_CTX* cctx, EVP_MD_CTX* md, uint8_t* scratch, bool buffered, uint8_t* cout) {
    SealState& s = *s_;
    const FileState& f = s.out;
    const uint64_t cs_start = c * f.chunk_size;
    const size_t len = static_cast<size_t>(f.ChunkPlainLength(c));
    const uint64_t cs_end = cs_start + len;
    const uint64_t file_off = f.ChunkFileOffset(c);

    uint8_t nonce[kNonceBytes];
    ChunkNonce(c, c == f.chunk_count - 1, nonce);
    int outl = 0;
    if (EVP_EncryptInit_ex2(cctx, nullptr, nullptr, nonce, nullptr) != 1 ||
        EVP_EncryptUpdate(cctx, nullptr, &outl, f.header_digest, kHashBytes) != 1) {
      throw SealedError("ERR_UNSUPPORTED", "cipher init failed");
    }
    const size_t nr = s.begin.size();
    size_t r_lo = static_cast<size_t>(std::upper_bound(s.end.begin(), s.end.end(), cs_start) - s.end.begin());
    size_t r_hi = r_lo;
    while (r_hi < nr && s.begin[r_hi] < cs_end) ++r_hi;

    const bool plain_inline = s.plain_sha && !buffered;
    const bool plain_after = s.plain_sha && buffered;
    if (plain_inline && !turns_.Await(c)) return;
    size_t cursor = r_lo;
    for (size_t off = 0; off < len; off += kSubBlock) {
      const size_t n = std::min(kSubBlock, len - off);
      uint8_t* buf = buffered ? scratch + off : scratch;
      uint8_t* to = plain_after ? cout + off : buf;
      ReadPlain(buf, n, cs_start + off);
      for (size_t p = 0; p < n; p += kPiece) {
        const size_t m = std::min(kPiece, n - p);
        Leaves(c, cs_start, cs_end, cs_start + off + p, buf + p, m, cursor, r_hi, md, plain_inline);
        if (EVP_EncryptUpdate(cctx, to + p, &outl, buf + p, static_cast<int>(m)) != 1 || outl != static_cast<int>(m)) {
          throw SealedError("ERR_UNSUPPORTED", "encrypt failed");
        }
      }
      if (!buffered) PwriteFull(f.fd, buf, n, file_off + off, f.path);
    }
    uint8_t tag[kTagBytes];
    if (EVP_EncryptFinal_ex(cctx, tag, &outl) != 1 || EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_AEAD_GET_TAG, kTagBytes, tag) != 1) {
      throw SealedError("ERR_UNSUPPORTED", "encrypt failed");
    }
    if (plain_after) {
      // The plaintext is still in scratch: feed the plain hashes in payload order.
      if (!turns_.Await(c)) return;
      for (size_t r = r_lo; r < r_hi; ++r) {
        const uint64_t a = std::max(s.begin[r], cs_start), e = std::min(s.end[r], cs_end);
        if (a < e && EVP_DigestUpdate(plain_[r]->ctx, scratch + (a - cs_start), e - a) != 1) {
          throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
        }
      }
      turns_.Pass(c);
    }
    if (buffered) {
      struct iovec iov[2] = {{plain_after ? cout : scratch, len}, {tag, kTagBytes}};
      PwriteAll(f.fd, iov, 2, file_off, f.path);
    } else {
      PwriteFull(f.fd, tag, kTagBytes, file_off + len, f.path);
    }
    if (plain_inline) turns_.Pass(c);
  }

  // Hash the leaf bytes in plaintext [pos, pos + n) of chunk c (and, inline, the plain hashes).
  void Leaves(uint64_t c, uint64_t cs_start, uint64_t cs_end, uint64_t pos, const uint8_t* buf, size_t n, size_t& cursor, size_t r_hi,
              EVP_MD_CTX* md, bool plain) {
    const SealState& s = *s_;
    const uint64_t stop = pos + n;
    while (cursor < r_hi && s.end[cursor] <= pos) ++cursor;
    static const uint8_t kLeafPrefix = 0x00;
    for (size_t r = cursor; r < r_hi && s.begin[r] < stop; ++r) {
      const uint64_t a = std::max(pos, s.begin[r]);
      const uint64_t e = std::min(stop, s.end[r]);
      if (a >= e) continue;
      if (a == std::max(s.begin[r], cs_start)) {
        if (EVP_DigestInit_ex2(md, alg_.sha256, nullptr) != 1 || EVP_DigestUpdate(md, &kLeafPrefix, 1) != 1) {
          throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
        }
      }
      if (EVP_DigestUpdate(md, buf + (a - pos), e - a) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      if (plain && EVP_DigestUpdate(plain_[r]->ctx, buf + (a - pos), e - a) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      if (e == std::min(s.end[r], cs_end)) {
        unsigned int len = 0;
        if (EVP_DigestFinal_ex(md, leaves_.Leaf(r, c), &len) != 1) throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      }
    }
  }

  std::shared_ptr<SealState> s_;
  Algorithms alg_;  // fetched on the JS thread; shared read-only by the workers
  LeafPlan leaves_;
  std::vector<std::unique_ptr<MdCtx>> plain_;
  std::vector<uint8_t> digests_, sha_;
  std::atomic<uint64_t> next_{0};
  TurnGate turns_;
  std::mutex mutex_;
  ErrorSlot fatal_;
};

// finish(tablePlain): the sealed table, then the header; the keys and descriptors go after.
class FinishJob : public PromiseWorker {
 public:
  FinishJob(Napi::Env env, std::shared_ptr<SealState> s, std::unique_ptr<SecureRegion> table)
      : PromiseWorker(env, "sealed-tensors:seal-finish"), s_(std::move(s)), table_(std::move(table)), alg_(s_->out.suite) {}
  ~FinishJob() override {
    std::lock_guard<std::mutex> lock(s_->mutex);
    s_->busy = false;
  }

 protected:
  void Run() override {
    SealState& s = *s_;
    FileState& f = s.out;
    struct Done {
      SealState& s;
      ~Done() { s.Release(); }
    } release{s};
    const size_t plain = table_->size() - kTagBytes;
    const uint8_t zero_nonce[kNonceBytes] = {};
    CipherCtx c;
    int outl = 0;
    bool ok = c.ctx && EVP_EncryptInit_ex2(c.ctx, alg_.cipher, s.table_key->data(), zero_nonce, nullptr) == 1 &&
              EVP_EncryptUpdate(c.ctx, nullptr, &outl, f.header_digest, kHashBytes) == 1;
    for (size_t done = 0; ok && done < plain;) {
      const int n = static_cast<int>(std::min<size_t>(plain - done, size_t{1} << 30));
      ok = EVP_EncryptUpdate(c.ctx, table_->data() + done, &outl, table_->data() + done, n) == 1;
      done += static_cast<size_t>(n);
    }
    ok = ok && EVP_EncryptFinal_ex(c.ctx, table_->data() + plain, &outl) == 1 &&
         EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_AEAD_GET_TAG, kTagBytes, table_->data() + plain) == 1;
    if (!ok) throw SealedError("ERR_UNSUPPORTED", "encrypting the table failed");
    PwriteFull(f.fd, table_->data(), table_->size(), f.header.size(), f.path);
    PwriteFull(f.fd, f.header.data(), f.header.size(), 0, f.path);
  }
  Napi::Value Resolve(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<SealState> s_;
  std::unique_ptr<SecureRegion> table_;
  Algorithms alg_;
};

constexpr napi_type_tag kSealerTag = {0x5ea1ed5ea1ed5ea1ULL, 0x6e61746976657365ULL};

class SealerObject : public Napi::ObjectWrap<SealerObject> {
 public:
  static SealerObject* Unwrap(Napi::Object self) { return UnwrapTagged<SealerObject>(self, &kSealerTag, "NativeSealer"); }

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeSealer",
                       {InstanceMethod<&SealerObject::Payload>("payload"), InstanceMethod<&SealerObject::Finish>("finish"),
                        InstanceMethod<&SealerObject::Abort>("abort"), InstanceAccessor<&SealerObject::Header>("header")});
  }

  explicit SealerObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SealerObject>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw MakeError(info.Env(), "ERR_INVALID_ARGUMENT", "use sealBegin() to seal");
    s_ = *info[0].As<Napi::External<std::shared_ptr<SealState>>>().Data();
    info.This().As<Napi::Object>().TypeTag(&kSealerTag);
  }

 private:
  // Marks the sealer busy with one job; throws if it has ended, a job is running, or (payload) the payload ran already.
  void Claim(Napi::Env env, bool last, bool payload = false) {
    std::lock_guard<std::mutex> lock(s_->mutex);
    if (s_->done) throw MakeError(env, "ERR_RELEASED", "this sealer has finished or was aborted: start another");
    if (s_->busy) throw MakeError(env, "ERR_INVALID_ARGUMENT", "a sealing job is still running: await it first");
    if (payload && s_->payload_claimed) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "payload() runs once per sealer (its chunk nonces are used once): abort() it and start another with sealBegin()");
    }
    s_->busy = true;
    if (payload) s_->payload_claimed = true;
    if (last) s_->done = true;
  }

  Napi::Value Payload(const Napi::CallbackInfo& info) {
    Claim(info.Env(), false, true);
    PayloadJob* job;
    try {
      job = new PayloadJob(info.Env(), s_);
    } catch (const SealedError& e) {
      std::lock_guard<std::mutex> lock(s_->mutex);
      s_->busy = false;
      throw MakeError(info.Env(), e);
    }
    return job->Start();
  }

  // finish(tablePlain: Uint8Array): the padded table plaintext (u32le(n) || json || zeros), wiped here once copied.
  Napi::Value Finish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "finish() takes the table plaintext as a Uint8Array");
    }
    Napi::Uint8Array t = info[0].As<Napi::Uint8Array>();
    if (t.ByteLength() + kTagBytes != s_->out.table_length) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "the table plaintext is " + std::to_string(t.ByteLength()) + " bytes, the header says " +
                                                       std::to_string(s_->out.table_length - kTagBytes));
    }
    if (!s_->payload_done) throw MakeError(env, "ERR_INVALID_ARGUMENT", "finish() comes after a payload() that succeeded");
    std::unique_ptr<SecureRegion> table;
    try {
      table = SecureRegion::Allocate(s_->out.table_length);
    } catch (const SealedError& e) {
      throw MakeError(env, e);
    }
    std::memcpy(table->data(), t.Data(), t.ByteLength());
    OPENSSL_cleanse(t.Data(), t.ByteLength());
    Claim(env, true);
    auto* job = new FinishJob(env, s_, std::move(table));
    return job->Start();
  }

  // abort(): stops a running payload job at the next chunk; keys wiped and descriptors closed once no job runs.
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    s_->stop = true;
    std::lock_guard<std::mutex> lock(s_->mutex);
    if (!s_->busy && !s_->done) s_->Release();
    s_->done = true;
    return info.Env().Undefined();
  }

  Napi::Value Header(const Napi::CallbackInfo& info) {
    return Napi::Buffer<uint8_t>::Copy(info.Env(), s_->out.header.data(), s_->out.header.size());
  }

  std::shared_ptr<SealState> s_;
};

double Num(Napi::Env env, Napi::Object o, const char* name, double lo, double hi) {
  Napi::Value v = o.Get(name);
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= lo && d <= hi) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string(name) + " must be an integer in range");
  }
  return d;
}

std::string Str(Napi::Env env, Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsString()) throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string(name) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

int DupFd(Napi::Env env, int fd, const std::string& what) {
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (d < 0) throw MakeError(env, "ERR_IO", ErrnoText("cannot use the descriptor of " + what, errno));
  return d;
}

// sealBegin({ key, header, input, inputPath, dataStart, dataLength, output, outputPath, ranges, threads, plainSha256 })
//   -> NativeSealer. `header`: the encoded public header; its key commitment (bytes 88..120) is
//   computed here from the key and the salt in it. `input`/`output`: open descriptors (duplicated here).
Napi::Value SealBegin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "sealBegin() takes an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto s = std::make_shared<SealState>();
  FileState& f = s->out;
  Napi::Value hv = o.Get("header");
  if (!hv.IsTypedArray() || hv.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "header must be a Uint8Array");
  }
  Napi::Uint8Array h = hv.As<Napi::Uint8Array>();
  f.header.assign(h.Data(), h.Data() + h.ByteLength());
  const size_t hl = f.header.size();
  if (hl < kFixedHeader + 1 || hl != kFixedHeader + f.header[13]) throw MakeError(env, "ERR_INVALID_ARGUMENT", "header has a bad length");
  const uint8_t* hb = f.header.data();
  f.suite = Le16(hb + 10);
  f.chunk_size = Le32(hb + 16);
  f.table_length = Le32(hb + 28);
  f.payload_length = Le64(hb + 32);
  if (Le16(hb + 8) != 1 || (f.suite != kSuiteAesGcm && f.suite != kSuiteChaChaPoly) || f.chunk_size < 4096 ||
      f.chunk_size > (256u << 20) || f.chunk_size % 4096 != 0 || f.table_length < 4096 + kTagBytes ||
      f.payload_length > (uint64_t{1} << 53) - 1) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "header fields out of range");
  }
  f.chunk_count = std::max<uint64_t>(1, (f.payload_length + f.chunk_size - 1) / f.chunk_size);
  f.payload_start = hl + f.table_length;
  f.file_size = f.payload_start + f.payload_length + kTagBytes * f.chunk_count;
  s->data_start = static_cast<uint64_t>(Num(env, o, "dataStart", 0, 9007199254740991.0));
  s->data_length = static_cast<uint64_t>(Num(env, o, "dataLength", 0, static_cast<double>(f.payload_length)));
  s->in_path = Str(env, o, "inputPath");
  f.path = Str(env, o, "outputPath");
  s->threads = static_cast<unsigned>(Num(env, o, "threads", 1, 1024));
  s->plain_sha = o.Get("plainSha256").ToBoolean().Value();
  Napi::Value rv = o.Get("ranges");
  if (!rv.IsTypedArray() || rv.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "ranges must be a Float64Array");
  }
  Napi::Float64Array ra = rv.As<Napi::Float64Array>();
  if (ra.ElementLength() % 2 != 0) throw MakeError(env, "ERR_INVALID_ARGUMENT", "ranges must hold begin/end pairs");
  for (size_t i = 0; i < ra.ElementLength(); i += 2) {
    const double a = ra[i], e = ra[i + 1];
    if (!(a >= 0 && e >= a && e <= static_cast<double>(f.payload_length)) || a != static_cast<double>(static_cast<uint64_t>(a)) ||
        e != static_cast<double>(static_cast<uint64_t>(e)) || (!s->end.empty() && a < static_cast<double>(s->end.back()))) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "ranges must be ascending and disjoint, inside the payload");
    }
    s->begin.push_back(static_cast<uint64_t>(a));
    s->end.push_back(static_cast<uint64_t>(e));
  }
  const int in_fd = static_cast<int>(Num(env, o, "input", 0, 1 << 30));
  const int out_fd = static_cast<int>(Num(env, o, "output", 0, 1 << 30));
  // The data key last: every other argument is checked before a secret is touched.
  std::shared_ptr<SecureRegion> key = KeyFromHandle(env, o.Get("key"));
  HardenProcess();
  try {
    // FORMAT.md section 4, as the reader derives them (sealed_file.cc).
    std::unique_ptr<SecureRegion> sub = SecureRegion::Allocate(3 * 32);
    const uint8_t* salt = f.header.data() + 56;
    const std::string context = "sealed-tensors/v" + std::to_string(Le16(hb + 8)) + " suite " + std::to_string(f.suite) + " kind " +
                                std::to_string(f.header[12]) + " ";
    HkdfSha256(key->data(), 32, salt, 32, (context + "key commitment").c_str(), sub->data(), 32);
    HkdfSha256(key->data(), 32, salt, 32, (context + "table key").c_str(), sub->data() + 32, 32);
    HkdfSha256(key->data(), 32, salt, 32, (context + "payload key").c_str(), sub->data() + 64, 32);
    std::memcpy(f.header.data() + 88, sub->data(), 32);
    Sha256(f.header.data(), hl, f.header_digest);
    s->table_key = SecureRegion::Allocate(32);
    std::memcpy(s->table_key->data(), sub->data() + 32, 32);
    f.payload_key = SecureRegion::Allocate(32);
    std::memcpy(f.payload_key->data(), sub->data() + 64, 32);
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
  s->in_fd = DupFd(env, in_fd, s->in_path);
  f.fd = DupFd(env, out_fd, f.path);
  auto ext = Napi::External<std::shared_ptr<SealState>>::New(env, &s);
  return Constructor(env, "NativeSealer").New({ext});
}

void Init(Napi::Env env, Napi::Object exports) {
  SetConstructor(env, "NativeSealer", SealerObject::Define(env));
  exports.Set("sealBegin", Napi::Function::New(env, SealBegin, "sealBegin"));
}

}  // namespace

SEALED_REGISTER(seal, Init);

}  // namespace sealed
