// TEE guest-device ioctls: the fallbacks for kernels without configfs-tsm, and the Nitro NSM.
// The ioctl structures are declared here from the kernel uapi headers' layouts
// (linux/sev-guest.h, linux/tdx-guest.h, linux/nsm.h) so the addon builds without those headers.
#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "module.h"

namespace sealed {
namespace {

// ---- linux/sev-guest.h ----
struct SnpReportReq {
  uint8_t user_data[64];
  uint32_t vmpl;
  uint8_t rsvd[28];
};
struct SnpReportResp {
  uint8_t data[4000];
};
struct SnpGuestRequestIoctl {
  uint8_t msg_version;
  uint64_t req_data;
  uint64_t resp_data;
  uint64_t exitinfo2;  // union { exitinfo2; { fw_error; vmm_error; } }
};
static_assert(sizeof(SnpReportReq) == 96, "snp_report_req layout");
static_assert(sizeof(SnpGuestRequestIoctl) == 32, "snp_guest_request_ioctl layout");
constexpr unsigned long kSnpGetReport = _IOWR('S', 0x0, SnpGuestRequestIoctl);

// ---- linux/tdx-guest.h ----
struct TdxReportReq {
  uint8_t reportdata[64];
  uint8_t tdreport[1024];
};
static_assert(sizeof(TdxReportReq) == 1088, "tdx_report_req layout");
constexpr unsigned long kTdxGetReport0 = _IOWR('T', 1, TdxReportReq);

// ---- linux/nsm.h ----
struct NsmIovec {
  uint64_t addr;
  uint64_t len;
};
struct NsmRaw {
  NsmIovec request;
  NsmIovec response;
};
static_assert(sizeof(NsmRaw) == 32, "nsm_raw layout");
constexpr unsigned long kNsmIoctlRaw = _IOWR(0x0A, 0x0, NsmRaw);
constexpr size_t kNsmRequestMax = 0x1000;
constexpr size_t kNsmResponseMax = 0x3000;

// MSG_REPORT_RSP from the SNP firmware ABI: status, report size, 24 reserved bytes, then the report.
constexpr size_t kSnpRspHeader = 32;

std::string ErrnoText(const char* what, const char* path, int err) {
  // "ENOENT"-style names first so the TypeScript side can map them to typed errors.
  const char* name = err == ENOENT ? "ENOENT" : err == ENODEV ? "ENODEV" : err == EACCES ? "EACCES" : err == EPERM ? "EPERM"
                   : err == ENOTTY ? "ENOTTY" : err == EINVAL ? "EINVAL" : err == EIO ? "EIO" : "E";
  return std::string(name) + ": " + what + " " + path + " failed: " + std::strerror(err);
}

enum class Job { kSnpReport, kTdxReport0, kNsm };

// Baton: one job's inputs, outputs and error text. Execute() never touches JS values.
class TeeIoctlWorker : public Napi::AsyncWorker {
 public:
  TeeIoctlWorker(Napi::Env env, Job job, std::vector<uint8_t> input, uint32_t vmpl)
      : Napi::AsyncWorker(env), job_(job), input_(std::move(input)), vmpl_(vmpl), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    switch (job_) {
      case Job::kSnpReport: SnpReport(); break;
      case Job::kTdxReport0: TdxReport0(); break;
      case Job::kNsm: Nsm(); break;
    }
  }

  void OnOK() override {
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(Env(), output_.data(), output_.size()));
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  int OpenDevice(const char* path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) SetError(ErrnoText("open", path, errno));
    return fd;
  }

  void SnpReport() {
    const char* path = "/dev/sev-guest";
    int fd = OpenDevice(path);
    if (fd < 0) return;
    SnpReportReq req{};
    std::memcpy(req.user_data, input_.data(), sizeof(req.user_data));
    req.vmpl = vmpl_;
    SnpReportResp resp{};
    SnpGuestRequestIoctl io{};
    io.msg_version = 1;
    io.req_data = reinterpret_cast<uintptr_t>(&req);
    io.resp_data = reinterpret_cast<uintptr_t>(&resp);
    int rc = ioctl(fd, kSnpGetReport, &io);
    int err = errno;
    close(fd);
    if (rc < 0) {
      SetError(ErrnoText("SNP_GET_REPORT on", path, err) + " (firmware error 0x" + Hex(static_cast<uint32_t>(io.exitinfo2)) +
               ", VMM error 0x" + Hex(static_cast<uint32_t>(io.exitinfo2 >> 32)) + ")");
      return;
    }
    uint32_t status, size;
    std::memcpy(&status, resp.data, 4);
    std::memcpy(&size, resp.data + 4, 4);
    if (status != 0) {
      SetError("EIO: SNP firmware returned status 0x" + Hex(status) + " for the report request");
      return;
    }
    if (size == 0 || size > sizeof(resp.data) - kSnpRspHeader) {
      SetError("EIO: SNP firmware returned an impossible report size " + std::to_string(size));
      return;
    }
    output_.assign(resp.data + kSnpRspHeader, resp.data + kSnpRspHeader + size);
  }

  void TdxReport0() {
    const char* path = "/dev/tdx_guest";
    int fd = OpenDevice(path);
    if (fd < 0) return;
    TdxReportReq req{};
    std::memcpy(req.reportdata, input_.data(), sizeof(req.reportdata));
    int rc = ioctl(fd, kTdxGetReport0, &req);
    int err = errno;
    close(fd);
    if (rc < 0) {
      SetError(ErrnoText("TDX_CMD_GET_REPORT0 on", path, err));
      return;
    }
    output_.assign(req.tdreport, req.tdreport + sizeof(req.tdreport));
  }

  void Nsm() {
    const char* path = "/dev/nsm";
    int fd = OpenDevice(path);
    if (fd < 0) return;
    std::vector<uint8_t> response(kNsmResponseMax);
    NsmRaw raw{};
    raw.request.addr = reinterpret_cast<uintptr_t>(input_.data());
    raw.request.len = input_.size();
    raw.response.addr = reinterpret_cast<uintptr_t>(response.data());
    raw.response.len = response.size();
    int rc = ioctl(fd, kNsmIoctlRaw, &raw);
    int err = errno;
    close(fd);
    if (rc < 0) {
      SetError(ErrnoText("NSM request on", path, err));
      return;
    }
    if (raw.response.len > response.size()) {
      SetError("EIO: NSM returned a response longer than its buffer");
      return;
    }
    response.resize(raw.response.len);
    output_ = std::move(response);
  }

  static std::string Hex(uint32_t v) {
    char buf[9];
    std::snprintf(buf, sizeof(buf), "%x", v);
    return buf;
  }

  Job job_;
  std::vector<uint8_t> input_;
  uint32_t vmpl_;
  std::vector<uint8_t> output_;
  Napi::Promise::Deferred deferred_;
};

std::vector<uint8_t> BytesArg(const Napi::CallbackInfo& info, size_t index, size_t min, size_t max, const char* name) {
  if (info.Length() <= index || !info[index].IsTypedArray()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Uint8Array");
  }
  Napi::Uint8Array a = info[index].As<Napi::Uint8Array>();
  if (a.ElementLength() < min || a.ElementLength() > max) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be " + std::to_string(min) +
                                                (min == max ? "" : " to " + std::to_string(max)) + " bytes, got " +
                                                std::to_string(a.ElementLength()));
  }
  return std::vector<uint8_t>(a.Data(), a.Data() + a.ElementLength());
}

Napi::Value SnpGetReport(const Napi::CallbackInfo& info) {
  std::vector<uint8_t> data = BytesArg(info, 0, 64, 64, "reportData");
  uint32_t vmpl = 0;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "vmpl must be a number");
    int64_t v = info[1].As<Napi::Number>().Int64Value();
    if (v < 0 || v > 3) throw Napi::RangeError::New(info.Env(), "vmpl must be 0 to 3");
    vmpl = static_cast<uint32_t>(v);
  }
  auto* w = new TeeIoctlWorker(info.Env(), Job::kSnpReport, std::move(data), vmpl);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value TdxGetReport0(const Napi::CallbackInfo& info) {
  std::vector<uint8_t> data = BytesArg(info, 0, 64, 64, "reportData");
  auto* w = new TeeIoctlWorker(info.Env(), Job::kTdxReport0, std::move(data), 0);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value NsmRequest(const Napi::CallbackInfo& info) {
  std::vector<uint8_t> data = BytesArg(info, 0, 1, kNsmRequestMax, "request");
  auto* w = new TeeIoctlWorker(info.Env(), Job::kNsm, std::move(data), 0);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

void InitTeeIoctl(Napi::Env env, Napi::Object exports) {
  exports.Set("teeSnpGetReport", Napi::Function::New(env, SnpGetReport, "teeSnpGetReport"));
  exports.Set("teeTdxGetReport0", Napi::Function::New(env, TdxGetReport0, "teeTdxGetReport0"));
  exports.Set("teeNsmRequest", Napi::Function::New(env, NsmRequest, "teeNsmRequest"));
}

}  // namespace

SEALED_REGISTER(tee_ioctl, InitTeeIoctl);

}  // namespace sealed
