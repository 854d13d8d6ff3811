// The baton pattern on the libuv threadpool: a subclass keeps its job's inputs and outputs as plain
// fields, Run() (worker thread) never touches JS values, Resolve() (JS thread) builds the result.
#pragma once
#include <napi.h>

#include "errors.h"
#include "secure_memory.h"

namespace sealed {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Start() {
    Queue();
    return deferred_.Promise();
  }

 protected:
  virtual void Run() = 0;                          // worker thread; throw SealedError on failure
  virtual Napi::Value Resolve(Napi::Env env) = 0;  // JS thread

  ErrorSlot error_;

 private:
  void Execute() override {
    try {
      Run();
    } catch (const SealedError& e) {
      error_.Set(e.code(), e.what());
    } catch (const std::bad_alloc&) {
      error_.Set("ERR_RESOURCE_LIMIT", "out of memory");
    } catch (const std::exception& e) {
      error_.Set("ERR_IO", e.what());
    }
    if (error_.set()) SetError(error_.message);
    // Run()'s frames, and OpenSSL's below them, may have held keys or plaintext: this libuv thread
    // goes back to the pool with them zeroed (test/e2e/session-heap).
    WipeStackBelow();
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(Resolve(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error&) override { deferred_.Reject(MakeError(Env(), error_.code, error_.message).Value()); }
  // A worker terminated (or the process exits) while the job ran: its environment can no longer run
  // JS, so settling the promise throws, and an exception out of this libuv callback aborts the whole
  // process. Drop the settlement, and still destroy the job: that wipes and unmaps its secure memory.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    try {
      Napi::AsyncWorker::OnWorkComplete(env, status);
    } catch (...) {
      Destroy();
    }
  }

  Napi::Promise::Deferred deferred_;
};

}  // namespace sealed
