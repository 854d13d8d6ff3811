// What the decrypt and seal engines share: the STREAM nonce (FORMAT.md 5.2), the ordered turn
// that feeds plain SHA-256 in payload order while chunks run on every core, and the tensor-digest
// roots over chunk-aligned leaves (section 6).
#pragma once
#include <openssl/evp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "crypto.h"
#include "errors.h"
#include "sealed_file.h"

namespace sealed {

// A sub-block (one pread) stays in L2 (512 KiB per core here); a piece (decrypt or encrypt, and
// hash at once) stays in L1. Measured differences between nearby values are within run-to-run noise.
constexpr size_t kDefaultSubBlock = 256 * 1024;
constexpr size_t kPiece = 32 * 1024;
// Whole-chunk buffers per thread only up to this chunk size (memory per thread).
constexpr size_t kMaxBufferedChunk = 32u << 20;

// nonce_i = 3 zero bytes || u64be(i) || u8(last_i)
inline void ChunkNonce(uint64_t c, bool last, uint8_t nonce[kNonceBytes]) {
  for (size_t i = 0; i < kNonceBytes; ++i) nonce[i] = 0;
  for (int i = 0; i < 8; ++i) nonce[3 + i] = static_cast<uint8_t>(c >> (56 - 8 * i));
  nonce[11] = last ? 1 : 0;
}

// Chunk idx may take its turn once chunk idx - 1 passed it; Stop() releases every waiter.
class TurnGate {
 public:
  // False when stopping.
  bool Await(size_t idx) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return turn_ == idx || stop_.load(); });
    return !stop_.load();
  }
  void Pass(size_t idx) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      turn_ = idx + 1;
    }
    cv_.notify_all();
  }
  // Set under the lock so a thread about to wait cannot miss the wake-up.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
  }
  bool stopped() const { return stop_.load(std::memory_order_relaxed); }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  size_t turn_ = 0;
  std::atomic<bool> stop_{false};
};

// Leaves of tensor r in chunk c live at leaf_hashes[32 * (leaf_base[r] + c - first_chunk[r])].
struct LeafPlan {
  std::vector<uint64_t> first_chunk, leaf_base;
  std::vector<uint8_t> leaf_hashes;

  void Plan(const std::vector<uint64_t>& begin, const std::vector<uint64_t>& end, uint64_t chunk_size) {
    const size_t nr = begin.size();
    first_chunk.resize(nr);
    leaf_base.resize(nr);
    uint64_t leaves = 0;
    for (size_t r = 0; r < nr; ++r) {
      first_chunk[r] = begin[r] / chunk_size;
      leaf_base[r] = leaves;
      if (end[r] > begin[r]) leaves += (end[r] - 1) / chunk_size - first_chunk[r] + 1;
    }
    leaf_hashes.resize(kHashBytes * leaves);
  }

  uint8_t* Leaf(size_t r, uint64_t c) { return leaf_hashes.data() + kHashBytes * (leaf_base[r] + (c - first_chunk[r])); }

  // digest = SHA-256(0x01 || u64le(len) || leaf hashes), 32 bytes per range into `out`.
  void Roots(const EVP_MD* sha256, const std::vector<uint64_t>& begin, const std::vector<uint64_t>& end, uint64_t chunk_size,
             std::vector<uint8_t>& out) const {
    const size_t nr = begin.size();
    out.resize(kHashBytes * nr);
    MdCtx root;
    for (size_t r = 0; r < nr; ++r) {
      const uint64_t len = end[r] - begin[r];
      uint8_t head[9] = {0x01};
      for (int i = 0; i < 8; ++i) head[1 + i] = static_cast<uint8_t>(len >> (8 * i));
      const uint64_t leaves = len == 0 ? 0 : (end[r] - 1) / chunk_size - first_chunk[r] + 1;
      unsigned int out_len = 0;
      if (EVP_DigestInit_ex2(root.ctx, sha256, nullptr) != 1 || EVP_DigestUpdate(root.ctx, head, sizeof head) != 1 ||
          EVP_DigestUpdate(root.ctx, leaf_hashes.data() + kHashBytes * leaf_base[r], kHashBytes * leaves) != 1 ||
          EVP_DigestFinal_ex(root.ctx, out.data() + kHashBytes * r, &out_len) != 1) {
        throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed");
      }
    }
  }
};

}  // namespace sealed
