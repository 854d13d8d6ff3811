// An open sealed file (FORMAT.md): its layout, descriptor and per-file subkeys in secure memory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "secure_memory.h"

namespace sealed {

constexpr size_t kTagBytes = 16;
constexpr size_t kHashBytes = 32;
constexpr size_t kFixedHeader = 120;

struct FileState {
  int fd = -1;       // -1: read from a source, its chunks fed by the caller (begin())
  std::string path;  // or the source's description (a URL), for messages
  uint64_t file_size = 0;
  std::vector<uint8_t> header;  // the public header bytes, as authenticated
  uint8_t header_digest[kHashBytes] = {};
  uint16_t suite = 0;
  uint32_t chunk_size = 0;
  uint32_t table_length = 0;
  uint64_t payload_length = 0;
  uint64_t chunk_count = 0;
  uint64_t payload_start = 0;
  // [0,32) payload key. The table key and commitment never outlive the open job.
  std::unique_ptr<SecureRegion> payload_key;

  ~FileState();
  uint64_t ChunkPlainLength(uint64_t c) const;
  uint64_t ChunkFileOffset(uint64_t c) const { return payload_start + c * (uint64_t{chunk_size} + kTagBytes); }
};

// Reads exactly `len` bytes at `off`; throws SealedError ERR_IO / ERR_TRUNCATED.
void PreadFull(int fd, uint8_t* buf, size_t len, uint64_t off, const std::string& path);

}  // namespace sealed
