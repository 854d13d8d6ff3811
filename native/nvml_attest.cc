// NVIDIA GPU attestation through NVML (libnvidia-ml.so.1, NVIDIA's driver library), loaded with
// dlopen on first use so the addon builds and loads on machines without NVIDIA's driver. For each
// GPU: the Confidential Computing attestation report (SPDM GET_MEASUREMENTS request and signed
// response, with the caller's 32-byte requester nonce) and the attestation certificate chain (PEM).
// The structures are declared from nvml.h's documented layouts (NVML 12.2+), not included.
#include <napi.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <dlfcn.h>

#include "module.h"
#include "promise_worker.h"

namespace sealed {
namespace {

using nvmlReturn_t = int;
using nvmlDevice_t = void*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr unsigned kHopper = 9;  // NVML_DEVICE_ARCH_HOPPER
constexpr unsigned kUuidBuffer = 96;  // NVML_DEVICE_UUID_V2_BUFFER_SIZE
constexpr unsigned kMaxGpus = 16;     // the broker's device limit (src/protocol/device-evidence.ts)

struct NvmlGpuCertificate {
  unsigned int certChainSize;
  unsigned int attestationCertChainSize;
  unsigned char certChain[0x1000];
  unsigned char attestationCertChain[0x1400];
};
struct NvmlGpuAttestationReport {
  unsigned int isCecAttestationReportPresent;
  unsigned int attestationReportSize;
  unsigned int cecAttestationReportSize;
  unsigned char nonce[0x20];
  unsigned char attestationReport[0x2000];
  unsigned char cecAttestationReport[0x1000];
};

struct Nvml {
  void* lib = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  const char* (*errorString)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*count)(unsigned*) = nullptr;
  nvmlReturn_t (*handle)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*arch)(nvmlDevice_t, unsigned*) = nullptr;
  nvmlReturn_t (*report)(nvmlDevice_t, NvmlGpuAttestationReport*) = nullptr;
  nvmlReturn_t (*certificate)(nvmlDevice_t, NvmlGpuCertificate*) = nullptr;
};

template <typename F>
void Sym(void* lib, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  if (!out) {
    throw SealedError("ERR_UNSUPPORTED", std::string("NVIDIA's NVML (libnvidia-ml.so.1) has no ") + name +
                                             ": GPU attestation needs NVIDIA driver 535 or later with Confidential Computing support");
  }
}

// Loaded once per process and never unloaded (NVML keeps its own threads).
const Nvml& LoadNvml() {
  static Nvml n;
  static std::string failure;
  static bool tried = false;
  static std::mutex m;
  std::lock_guard<std::mutex> lock(m);
  if (!tried) {
    tried = true;
    try {
      void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
      if (!lib) {
        const char* e = dlerror();
        throw SealedError("ERR_NO_TEE", std::string("NVIDIA's NVML library (libnvidia-ml.so.1) is not installed or cannot be loaded (") +
                                            (e ? e : "dlopen failed") + "): GPU evidence needs NVIDIA's driver inside the confidential VM");
      }
      Nvml t;
      t.lib = lib;
      Sym(lib, "nvmlInit_v2", t.init);
      Sym(lib, "nvmlShutdown", t.shutdown);
      Sym(lib, "nvmlErrorString", t.errorString);
      Sym(lib, "nvmlDeviceGetCount_v2", t.count);
      Sym(lib, "nvmlDeviceGetHandleByIndex_v2", t.handle);
      Sym(lib, "nvmlDeviceGetUUID", t.uuid);
      Sym(lib, "nvmlDeviceGetArchitecture", t.arch);
      Sym(lib, "nvmlDeviceGetConfComputeGpuAttestationReport", t.report);
      Sym(lib, "nvmlDeviceGetConfComputeGpuCertificate", t.certificate);
      n = t;
    } catch (const SealedError& e) {
      failure = std::string(e.code()) + "\n" + e.what();
    }
  }
  if (!failure.empty()) {
    size_t nl = failure.find('\n');
    std::string code = failure.substr(0, nl);
    throw SealedError(code == "ERR_NO_TEE" ? "ERR_NO_TEE" : "ERR_UNSUPPORTED", failure.substr(nl + 1));
  }
  return n;
}

struct Gpu {
  std::string uuid;
  unsigned arch = 0;
  std::vector<uint8_t> report;
  std::string chain;
};

class NvmlAttestWorker : public PromiseWorker {
 public:
  NvmlAttestWorker(Napi::Env env, std::vector<uint8_t> nonce) : PromiseWorker(env, "sealed-tensors:nvml"), nonce_(std::move(nonce)) {}

 protected:
  void Run() override {
    const Nvml& n = LoadNvml();
    auto check = [&](nvmlReturn_t r, const std::string& what) {
      if (r == kNvmlSuccess) return;
      const char* s = n.errorString ? n.errorString(r) : nullptr;
      std::string text = what + " failed: " + (s ? s : "NVML error") + " (" + std::to_string(r) + ")";
      // NOT_SUPPORTED (3) / NO_PERMISSION (4) / UNINITIALIZED...: Confidential Computing off, or no access.
      if (r == 3) text += ": the GPU's Confidential Computing mode is off (nvidia-smi conf-compute -f) or the driver does not support it";
      if (r == 4) text += ": this process may not query the GPU (permissions of /dev/nvidia*)";
      throw SealedError("ERR_NO_TEE", text);
    };
    check(n.init(), "nvmlInit_v2");
    try {
      unsigned count = 0;
      check(n.count(&count), "nvmlDeviceGetCount_v2");
      if (count == 0) throw SealedError("ERR_NO_TEE", "NVML found no NVIDIA GPU");
      if (count > kMaxGpus) throw SealedError("ERR_UNSUPPORTED", std::to_string(count) + " GPUs are more than the " + std::to_string(kMaxGpus) + " a broker accepts");
      for (unsigned i = 0; i < count; i++) {
        std::string at = "GPU " + std::to_string(i) + ": ";
        nvmlDevice_t dev = nullptr;
        check(n.handle(i, &dev), at + "nvmlDeviceGetHandleByIndex_v2");
        Gpu g;
        char uuid[kUuidBuffer] = {};
        check(n.uuid(dev, uuid, kUuidBuffer), at + "nvmlDeviceGetUUID");
        g.uuid.assign(uuid, strnlen(uuid, kUuidBuffer));
        check(n.arch(dev, &g.arch), at + "nvmlDeviceGetArchitecture");
        if (g.arch != kHopper) {
          throw SealedError("ERR_UNSUPPORTED", at + g.uuid + " is not a Hopper GPU (NVML architecture " + std::to_string(g.arch) +
                                                   "): only Hopper evidence is verified by the broker");
        }
        auto report = std::make_unique<NvmlGpuAttestationReport>();
        std::memset(report.get(), 0, sizeof(*report));
        std::memcpy(report->nonce, nonce_.data(), sizeof(report->nonce));
        check(n.report(dev, report.get()), at + "nvmlDeviceGetConfComputeGpuAttestationReport");
        if (report->attestationReportSize == 0 || report->attestationReportSize > sizeof(report->attestationReport)) {
          throw SealedError("ERR_IO", at + "NVML returned an attestation report of " + std::to_string(report->attestationReportSize) + " bytes");
        }
        g.report.assign(report->attestationReport, report->attestationReport + report->attestationReportSize);
        auto cert = std::make_unique<NvmlGpuCertificate>();
        std::memset(cert.get(), 0, sizeof(*cert));
        check(n.certificate(dev, cert.get()), at + "nvmlDeviceGetConfComputeGpuCertificate");
        if (cert->attestationCertChainSize == 0 || cert->attestationCertChainSize > sizeof(cert->attestationCertChain)) {
          throw SealedError("ERR_IO", at + "NVML returned an attestation certificate chain of " + std::to_string(cert->attestationCertChainSize) + " bytes");
        }
        g.chain.assign(reinterpret_cast<const char*>(cert->attestationCertChain), cert->attestationCertChainSize);
        gpus_.push_back(std::move(g));
      }
    } catch (...) {
      n.shutdown();
      throw;
    }
    n.shutdown();
  }

  Napi::Value Resolve(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, gpus_.size());
    for (size_t i = 0; i < gpus_.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("uuid", gpus_[i].uuid);
      o.Set("architecture", gpus_[i].arch);
      o.Set("evidence", Napi::Buffer<uint8_t>::Copy(env, gpus_[i].report.data(), gpus_[i].report.size()));
      o.Set("certificatesPem", gpus_[i].chain);
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  }

 private:
  std::vector<uint8_t> nonce_;
  std::vector<Gpu> gpus_;
};

Napi::Value NvmlGpuAttestation(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::Uint8Array>().ElementLength() != 32) {
    throw Napi::TypeError::New(info.Env(), "nonce must be a 32-byte Uint8Array");
  }
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  auto* w = new NvmlAttestWorker(info.Env(), std::vector<uint8_t>(a.Data(), a.Data() + 32));
  return w->Start();
}

void InitNvml(Napi::Env env, Napi::Object exports) {
  exports.Set("nvmlGpuAttestation", Napi::Function::New(env, NvmlGpuAttestation, "nvmlGpuAttestation"));
}

}  // namespace

SEALED_REGISTER(nvml_attest, InitNvml);

}  // namespace sealed
