#include "sealed_file.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "crypto.h"
#include "decrypt.h"
#include "errors.h"
#include "key_handle.h"
#include "module.h"
#include "promise_worker.h"

namespace sealed {

FileState::~FileState() {
  if (fd >= 0) close(fd);
}

uint64_t FileState::ChunkPlainLength(uint64_t c) const {
  uint64_t start = c * chunk_size;
  if (start >= payload_length) return 0;
  return std::min<uint64_t>(chunk_size, payload_length - start);
}

void PreadFull(int fd, uint8_t* buf, size_t len, uint64_t off, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SealedError("ERR_IO", ErrnoText("read " + path + " at offset " + std::to_string(off + done), errno));
    }
    if (n == 0) {
      throw SealedError("ERR_TRUNCATED", path + " ends at byte " + std::to_string(off + done) + " but " +
                                             std::to_string(off + len) + " are needed: the file was truncated while open");
    }
    done += static_cast<size_t>(n);
  }
}

namespace {

const uint8_t kMagic[8] = {0x89, 0x53, 0x54, 0x53, 0x0d, 0x0a, 0x1a, 0x0a};

uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t Le32(const uint8_t* p) { return Le16(p) | static_cast<uint32_t>(Le16(p + 2)) << 16; }
uint64_t Le64(const uint8_t* p) { return Le32(p) | static_cast<uint64_t>(Le32(p + 4)) << 32; }

// Tags our sealed-file objects: methods check it on `this` (UnwrapTagged).
constexpr napi_type_tag kFileTag = {0x5ea1ed5ea1edf11eULL, 0x6e61746976656669ULL};

class SealedFileObject : public Napi::ObjectWrap<SealedFileObject> {
 public:
  static SealedFileObject* Unwrap(Napi::Object self) { return UnwrapTagged<SealedFileObject>(self, &kFileTag, "NativeSealedFile"); }

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeSealedFile",
                       {InstanceMethod<&SealedFileObject::Run>("run"), InstanceMethod<&SealedFileObject::Begin>("begin"),
                        InstanceMethod<&SealedFileObject::Close>("close"),
                        InstanceAccessor<&SealedFileObject::ChunkSize>("chunkSize"),
                        InstanceAccessor<&SealedFileObject::ChunkCount>("chunkCount"),
                        InstanceAccessor<&SealedFileObject::PayloadLength>("payloadLength")});
  }

  explicit SealedFileObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SealedFileObject>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw MakeError(info.Env(), "ERR_INVALID_ARGUMENT", "use sealedOpen() to open a sealed file");
    }
    state_ = *info[0].As<Napi::External<std::shared_ptr<FileState>>>().Data();
    info.This().As<Napi::Object>().TypeTag(&kFileTag);
  }

 private:
  std::shared_ptr<FileState> Live(Napi::Env env) {
    if (!state_) throw MakeError(env, "ERR_RELEASED", "sealed file was closed: open it again to read");
    return state_;
  }
  Napi::Value Run(const Napi::CallbackInfo& info) { return StartRun(info, Live(info.Env())); }
  Napi::Value Begin(const Napi::CallbackInfo& info) { return BeginRun(info, Live(info.Env())); }
  // Running jobs keep their own reference: the descriptor and key go when the last one ends.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    state_.reset();
    return info.Env().Undefined();
  }
  Napi::Value ChunkSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), Live(info.Env())->chunk_size); }
  Napi::Value ChunkCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(Live(info.Env())->chunk_count));
  }
  Napi::Value PayloadLength(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(Live(info.Env())->payload_length));
  }

  std::shared_ptr<FileState> state_;
};

// Open job: header (must equal the bytes the TypeScript front validated), file length, key
// commitment, table. Subkeys are derived into secure memory; only the payload key is kept.
// From a path the job reads the file itself; from a source (HTTP) the caller passes the file's
// first bytes (header and sealed table: ciphertext, not secret) and its size, and feeds the chunks later.
class OpenJob : public PromiseWorker {
 public:
  OpenJob(Napi::Env env, std::string path, std::shared_ptr<SecureRegion> key, std::vector<uint8_t> expected_header)
      : PromiseWorker(env, "sealed-tensors:open"),
        path_(std::move(path)),
        key_(std::move(key)),
        expected_header_(std::move(expected_header)) {}
  OpenJob(Napi::Env env, std::string description, std::shared_ptr<SecureRegion> key, std::vector<uint8_t> expected_header,
          std::vector<uint8_t> prefix, uint64_t file_size)
      : OpenJob(env, std::move(description), std::move(key), std::move(expected_header)) {
    fed_ = true;
    prefix_ = std::move(prefix);
    fed_size_ = file_size;
  }

 protected:
  void Run() override {
    auto st = std::make_shared<FileState>();
    st->path = path_;
    if (fed_) {
      OpenFed(*st);
    } else {
      OpenFile(*st);
    }
    state_ = std::move(st);
  }

  void OpenFed(FileState& st) {
    st.file_size = fed_size_;
    const size_t hl = expected_header_.size();
    if (hl < kFixedHeader || prefix_.size() < hl) throw SealedError("ERR_TRUNCATED", path_ + " is shorter than its header");
    st.header.assign(prefix_.begin(), prefix_.begin() + static_cast<std::ptrdiff_t>(hl));
    Authenticate(st, [&](uint8_t* buf, size_t len, uint64_t off) {
      if (off > prefix_.size() || len != prefix_.size() - off) {
        throw SealedError("ERR_INVALID_ARGUMENT", path_ + ": pass exactly the header and the sealed table");
      }
      std::memcpy(buf, prefix_.data() + off, len);
    });
  }

  void OpenFile(FileState& fs) {
    auto* st = &fs;
    // O_NONBLOCK: a FIFO (or a tty, a device) at the path must not block this threadpool thread
    // in open(); it is refused below. Reads of a regular file ignore the flag.
    st->fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (st->fd < 0) throw SealedError("ERR_IO", ErrnoText("cannot open " + path_ + " (check the path and permissions)", errno));
    struct stat sb {};
    if (fstat(st->fd, &sb) != 0) throw SealedError("ERR_IO", ErrnoText("stat " + path_, errno));
    if (!S_ISREG(sb.st_mode)) {
      const char* kind = S_ISFIFO(sb.st_mode) ? "a FIFO (named pipe)" : S_ISDIR(sb.st_mode) ? "a folder"
                       : S_ISCHR(sb.st_mode) ? "a character device" : S_ISBLK(sb.st_mode) ? "a block device"
                       : S_ISSOCK(sb.st_mode) ? "a socket" : "not a regular file";
      throw SealedError("ERR_IO", path_ + " is " + kind + ", not a regular file: pass the path of a sealed model file");
    }
    st->file_size = static_cast<uint64_t>(sb.st_size);

    const size_t hl = expected_header_.size();
    if (hl < kFixedHeader || st->file_size < hl) throw SealedError("ERR_TRUNCATED", path_ + " is shorter than its header");
    st->header.resize(hl);
    PreadFull(st->fd, st->header.data(), hl, 0, path_);
    const int fd = st->fd;
    Authenticate(fs, [&](uint8_t* buf, size_t len, uint64_t off) { PreadFull(fd, buf, len, off, path_); });
  }

  // Header as validated, key commitment, subkeys, table; `read(buf, len, offset)` reads the file's bytes.
  template <typename Read>
  void Authenticate(FileState& fs, Read read) {
    auto* st = &fs;
    const size_t hl = st->header.size();
    if (st->header != expected_header_) {
      throw SealedError("ERR_INTEGRITY", path_ + ": the header changed while the file was being opened");
    }
    ParseHeader(*st);
    Sha256(st->header.data(), hl, st->header_digest);

    // commitment || table key || payload key
    std::unique_ptr<SecureRegion> sub = SecureRegion::Allocate(3 * 32);
    const uint8_t* salt = st->header.data() + 56;
    // FORMAT.md section 4: every subkey is bound to version, suite and kind (src/format/constants.ts hkdfInfo).
    const std::string context = "sealed-tensors/v" + std::to_string(Le16(st->header.data() + 8)) + " suite " +
                                std::to_string(st->suite) + " kind " + std::to_string(st->header[12]) + " ";
    HkdfSha256(key_->data(), 32, salt, 32, (context + "key commitment").c_str(), sub->data(), 32);
    if (CRYPTO_memcmp(sub->data(), st->header.data() + 88, 32) != 0) {
      std::string key_id(reinterpret_cast<const char*>(st->header.data() + kFixedHeader), hl - kFixedHeader);
      throw SealedError("ERR_KEY_MISMATCH", "the data key does not open this file (its key id is \"" + key_id +
                                                "\"): use the key the file was sealed with");
    }
    HkdfSha256(key_->data(), 32, salt, 32, (context + "table key").c_str(), sub->data() + 32, 32);
    HkdfSha256(key_->data(), 32, salt, 32, (context + "payload key").c_str(), sub->data() + 64, 32);
    key_.reset();

    Algorithms alg(st->suite);
    table_ = SecureRegion::Allocate(st->table_length);
    read(table_->data(), st->table_length, hl);
    const uint8_t zero_nonce[kNonceBytes] = {};
    const size_t tlen = st->table_length - kTagBytes;
    if (!AeadOpenInPlace(alg, sub->data() + 32, zero_nonce, st->header_digest, kHashBytes, table_->data(), tlen,
                         table_->data() + tlen)) {
      throw SealedError("ERR_INTEGRITY", path_ + ": the header or the tensor table failed authentication: the file is "
                                                 "corrupted or was tampered with");
    }
    table_plain_ = tlen;
    st->payload_key = SecureRegion::Allocate(32);
    std::memcpy(st->payload_key->data(), sub->data() + 64, 32);
  }

  Napi::Value Resolve(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    auto ext = Napi::External<std::shared_ptr<FileState>>::New(env, &state_);
    out.Set("file", Constructor(env, "NativeSealedFile").New({ext}));
    out.Set("header", Napi::Buffer<uint8_t>::Copy(env, state_->header.data(), state_->header.size()));
    out.Set("fileSize", static_cast<double>(state_->file_size));
    out.Set("table", Napi::Buffer<uint8_t>::Copy(env, table_->data(), table_plain_));
    table_.reset();
    return out;
  }

 private:
  // Defence in depth: the TypeScript front has already applied every rule of FORMAT.md section 3.
  void ParseHeader(FileState& st) {
    const uint8_t* h = st.header.data();
    auto bad = [&](const std::string& what) { throw SealedError("ERR_FORMAT", path_ + ": " + what); };
    if (std::memcmp(h, kMagic, 8) != 0) bad("bad magic");
    if (Le16(h + 8) != 1) throw SealedError("ERR_UNSUPPORTED_VERSION", path_ + ": format version is not 1");
    st.suite = Le16(h + 10);
    if (st.suite != kSuiteAesGcm && st.suite != kSuiteChaChaPoly) {
      throw SealedError("ERR_UNSUPPORTED_VERSION", path_ + ": unknown cipher suite");
    }
    if (h[13] == 0 || kFixedHeader + h[13] != st.header.size()) bad("key id length disagrees with the header length");
    if (Le16(h + 14) != 0) bad("flags set");
    st.chunk_size = Le32(h + 16);
    if (st.chunk_size < 4096 || st.chunk_size > (256u << 20) || st.chunk_size % 4096 != 0) bad("chunk size out of range");
    st.table_length = Le32(h + 28);
    // The table plaintext is padded to a power of two from 4 KiB, or to the 100 MiB cap (section 5.1).
    const uint32_t padded = st.table_length - kTagBytes;
    if (st.table_length < kTagBytes ||
        !(padded == (100u << 20) || (padded >= 4096 && padded < (100u << 20) && (padded & (padded - 1)) == 0))) {
      bad("table length is not a padded table size");
    }
    st.payload_length = Le64(h + 32);
    if (st.payload_length > (uint64_t{1} << 53) - 1) bad("payload length out of range");
    st.chunk_count = std::max<uint64_t>(1, (st.payload_length + st.chunk_size - 1) / st.chunk_size);
    st.payload_start = st.header.size() + st.table_length;
    const uint64_t expected = st.payload_start + st.payload_length + kTagBytes * st.chunk_count;
    if (st.file_size < expected) {
      throw SealedError("ERR_TRUNCATED", path_ + " is " + std::to_string(st.file_size) + " bytes but its header says " +
                                             std::to_string(expected) + ": the file is truncated (copy it again)");
    }
    if (st.file_size > expected) {
      bad("is " + std::to_string(st.file_size) + " bytes but its header says " + std::to_string(expected) + ": it has trailing data");
    }
  }

  std::string path_;
  std::shared_ptr<SecureRegion> key_;
  std::vector<uint8_t> expected_header_;
  bool fed_ = false;              // from a source: prefix_ holds the header and sealed table
  std::vector<uint8_t> prefix_;
  uint64_t fed_size_ = 0;         // the source's size, as it reported it
  std::shared_ptr<FileState> state_;
  std::unique_ptr<SecureRegion> table_;
  size_t table_plain_ = 0;
};

// sealedOpen(path, keyHandle, headerBytes) -> Promise<{ file, header, fileSize, table }>
Napi::Value SealedOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "path must be a string");
  std::shared_ptr<SecureRegion> key = KeyFromHandle(env, info[1]);
  if (!info[2].IsTypedArray()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "header must be a Uint8Array");
  Napi::Uint8Array hdr = info[2].As<Napi::Uint8Array>();
  std::vector<uint8_t> expected(hdr.Data(), hdr.Data() + hdr.ByteLength());
  HardenProcess();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  // open() would stop at a NUL and open another file than the one named (and checked by the caller).
  if (path.empty() || path.find('\0') != std::string::npos) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "path must be a non-empty string without NUL characters");
  }
  auto* job = new OpenJob(env, std::move(path), std::move(key), std::move(expected));
  return job->Start();
}

std::vector<uint8_t> BytesArg(Napi::Env env, Napi::Value v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string(name) + " must be a Uint8Array");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return std::vector<uint8_t>(a.Data(), a.Data() + a.ByteLength());
}

// sealedOpenFed(description, keyHandle, headerBytes, prefix, fileSize) -> Promise<{ file, header, fileSize, table }>:
// a sealed file read from a source other than a local file. `prefix`: the file's bytes from 0 up to the end of its
// sealed table; `fileSize`: the source's size. The file's runs are then fed with begin(), never run().
Napi::Value SealedOpenFed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "description must be a string");
  std::shared_ptr<SecureRegion> key = KeyFromHandle(env, info[1]);
  std::vector<uint8_t> expected = BytesArg(env, info[2], "header");
  std::vector<uint8_t> prefix = BytesArg(env, info[3], "prefix");
  if (!info[4].IsNumber()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "fileSize must be a number");
  const double size = info[4].As<Napi::Number>().DoubleValue();
  if (!(size >= 0 && size <= 9007199254740991.0) || size != static_cast<double>(static_cast<uint64_t>(size))) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "fileSize must be a byte count");
  }
  HardenProcess();
  auto* job = new OpenJob(env, info[0].As<Napi::String>().Utf8Value(), std::move(key), std::move(expected), std::move(prefix),
                          static_cast<uint64_t>(size));
  return job->Start();
}

void Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = SealedFileObject::Define(env);
  SetConstructor(env, "NativeSealedFile", cls);
  exports.Set("sealedOpen", Napi::Function::New(env, SealedOpen, "sealedOpen"));
  exports.Set("sealedOpenFed", Napi::Function::New(env, SealedOpenFed, "sealedOpenFed"));
}

}  // namespace

SEALED_REGISTER(sealed_file, Init);

}  // namespace sealed
