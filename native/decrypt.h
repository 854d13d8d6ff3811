// The payload job: chunks pread (or fed) into secure memory, decrypted in place and digested in one pass.
#pragma once
#include <napi.h>

#include <memory>

#include "sealed_file.h"

namespace sealed {

// file.run(options) -> Promise<{ digests, failedChunks, chunksProcessed, sha256? }>
Napi::Value StartRun(const Napi::CallbackInfo& info, std::shared_ptr<FileState> file);

// file.begin(options) -> NativeSealedRun { chunks, feed(fileOffset, pieces), finish(), abort() }: the same
// job, with the ciphertext fed by the caller window by window instead of read from a descriptor.
Napi::Value BeginRun(const Napi::CallbackInfo& info, std::shared_ptr<FileState> file);

}  // namespace sealed
