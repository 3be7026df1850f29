#include "client/npy/npy.h"

#include <cstring>
#include <fstream>
#include <regex>

#include <Eigen/Core>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attnroll::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

// Value of 'key' in the header dict, e.g. "'<f4'", "False", "(2, 3)".
std::string DictValue(const std::string& header, const std::string& key) {
  const std::regex re("'" + key + "'\\s*:\\s*(\\([^)]*\\)|'[^']*'|\\w+)");
  std::smatch m;
  return std::regex_search(header, m, re) ? m[1].str() : "";
}

}  // namespace

absl::StatusOr<Array> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  char preamble[8];
  if (!in.read(preamble, 8) || std::memcmp(preamble, kMagic, 6) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a .npy file (bad magic)"));
  }
  const int major = static_cast<unsigned char>(preamble[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) return absl::InvalidArgumentError(path + ": truncated");
    header_len = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) return absl::InvalidArgumentError(path + ": truncated");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported .npy version ", major));
  }
  if (header_len > (1u << 20)) return absl::InvalidArgumentError(path + ": header too large");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) return absl::InvalidArgumentError(path + ": truncated header");

  const std::string descr = DictValue(header, "descr");
  size_t elem;
  if (descr == "'<f4'") {
    elem = 4;
  } else if (descr == "'<f2'") {
    elem = 2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": expected dtype float32 or float16 (little-endian), got descr ", descr));
  }
  if (DictValue(header, "fortran_order") != "False") {
    return absl::InvalidArgumentError(path + ": Fortran-order arrays are not supported; save a C-order copy");
  }
  std::string shape_str = DictValue(header, "shape");
  if (shape_str.size() < 2) return absl::InvalidArgumentError(path + ": no shape in header");
  shape_str = shape_str.substr(1, shape_str.size() - 2);
  Array array;
  uint64_t count = 1;
  for (absl::string_view part : absl::StrSplit(shape_str, ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad shape (", shape_str, ")"));
    }
    array.shape.push_back(d);
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count) || count > (uint64_t{1} << 40)) {
      return absl::InvalidArgumentError(path + ": shape too large");
    }
  }
  std::string raw(count * elem, '\0');
  if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size()))) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated data (expected ", raw.size(), " bytes)"));
  }
  array.values.resize(count);
  if (elem == 4) {
    std::memcpy(array.values.data(), raw.data(), raw.size());
  } else {
    for (uint64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, raw.data() + 2 * i, 2);
      array.values[i] = Eigen::half_impl::half_to_float(Eigen::half_impl::raw_uint16_to_half(bits));
    }
  }
  return array;
}

absl::Status WriteNpy(const std::string& path, const Array& array) {
  std::string shape = absl::StrJoin(array.shape, ", ");
  if (array.shape.size() == 1) shape += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", shape, "), }");
  // Pad so the data starts on a 64-byte boundary; the header ends with '\n'.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  out.write(kMagic, 6);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(array.values.data()),
            static_cast<std::streamsize>(array.values.size() * sizeof(float)));
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace attnroll::npy
