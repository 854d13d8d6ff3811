// Errors that cross the native boundary carry the same stable codes as src/errors.ts;
// the TypeScript front turns { code, message } into the matching error class.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>

namespace sealed {

class SealedError : public std::runtime_error {
 public:
  SealedError(const char* code, const std::string& message) : std::runtime_error(message), code_(code) {}
  const char* code() const { return code_; }

 private:
  const char* code_;  // always a string literal
};

// What a worker thread records instead of throwing across threads (baton field).
struct ErrorSlot {
  std::string code;
  std::string message;
  bool set() const { return !code.empty(); }
  void Set(const char* c, const std::string& m) {
    if (code.empty()) {
      code = c;
      message = m;
    }
  }
};

inline Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

inline Napi::Error MakeError(Napi::Env env, const SealedError& e) { return MakeError(env, e.code(), e.what()); }

// "what failed: strerror" for errno-bearing failures.
std::string ErrnoText(const std::string& what, int err);

}  // namespace sealed
