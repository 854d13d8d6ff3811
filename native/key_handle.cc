#include "key_handle.h"

#include <openssl/crypto.h>

#include "errors.h"
#include "module.h"

namespace sealed {
namespace {

// Tags our handles so an unrelated wrapped object is never mistaken for a key.
constexpr napi_type_tag kKeyTag = {0x5ea1ed7e2502c0deULL, 0x6b65792d68616e64ULL};

class KeyHandle : public Napi::ObjectWrap<KeyHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeKeyHandle",
                       {InstanceMethod<&KeyHandle::Release>("release"),
                        InstanceAccessor<&KeyHandle::Released>("released")});
  }

  explicit KeyHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KeyHandle>(info) {
    // Only keyImport constructs; it passes the region through an External.
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw MakeError(info.Env(), "ERR_INVALID_ARGUMENT", "use keyImport() to make a key handle");
    }
    auto* region = info[0].As<Napi::External<std::shared_ptr<SecureRegion>>>().Data();
    key_ = std::move(*region);
    info.This().As<Napi::Object>().TypeTag(&kKeyTag);
  }

  static KeyHandle* Unwrap(Napi::Object self) { return UnwrapTagged<KeyHandle>(self, &kKeyTag, "NativeKeyHandle"); }

  std::shared_ptr<SecureRegion> key() const { return key_; }

 private:
  Napi::Value Release(const Napi::CallbackInfo& info) {
    bool was = key_ != nullptr;
    key_.reset();  // the last owner's destructor zeroizes and unmaps
    return Napi::Boolean::New(info.Env(), was);
  }
  Napi::Value Released(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), key_ == nullptr); }

  std::shared_ptr<SecureRegion> key_;
};

// keyImport(bytes: Uint8Array(32)): copies the key into secure memory and wipes the source.
Napi::Value KeyImport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "key must be a Uint8Array");
  }
  Napi::Uint8Array src = info[0].As<Napi::Uint8Array>();
  if (src.ByteLength() != kDataKeyBytes) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "key must be 32 bytes, got " + std::to_string(src.ByteLength()));
  }
  std::shared_ptr<SecureRegion> region;
  try {
    region = SecureRegion::Allocate(kDataKeyBytes);
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
  std::memcpy(region->data(), src.Data(), kDataKeyBytes);
  OPENSSL_cleanse(src.Data(), kDataKeyBytes);
  return NewKeyHandle(env, std::move(region));
}

void Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = KeyHandle::Define(env);
  SetConstructor(env, "NativeKeyHandle", cls);
  exports.Set("NativeKeyHandle", cls);
  exports.Set("keyImport", Napi::Function::New(env, KeyImport, "keyImport"));
}

}  // namespace

Napi::Object NewKeyHandle(Napi::Env env, std::shared_ptr<SecureRegion> key) {
  Napi::External<std::shared_ptr<SecureRegion>> ext = Napi::External<std::shared_ptr<SecureRegion>>::New(env, &key);
  return Constructor(env, "NativeKeyHandle").New({ext});
}

std::shared_ptr<SecureRegion> KeyFromHandle(Napi::Env env, Napi::Value handle) {
  if (!handle.IsObject() || !handle.As<Napi::Object>().CheckTypeTag(&kKeyTag)) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "expected a key handle from importKey()");
  }
  std::shared_ptr<SecureRegion> key = KeyHandle::Unwrap(handle.As<Napi::Object>())->key();
  if (!key) throw MakeError(env, "ERR_RELEASED", "key handle was released");
  return key;
}

SEALED_REGISTER(key_handle, Init);

}  // namespace sealed
