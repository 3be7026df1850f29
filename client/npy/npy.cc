#include "client/npy/npy.h"

#include <dirent.h>
#include <sys/stat.h>
#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <regex>
#include <utility>

#include <Eigen/Core>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attnroll::npy {
namespace {

constexpr absl::string_view kNpyMagic("\x93NUMPY", 6);
// A zip archive starts with a local file header, or (no member) with the end
// of its central directory.
constexpr absl::string_view kZipMagic("PK\x03\x04", 4);
constexpr absl::string_view kEmptyZipMagic("PK\x05\x06", 4);
// No .npz member larger than this is read (a zip's sizes are the archive's
// word; this keeps a damaged one from asking for all memory).
constexpr uint64_t kMaxMemberBytes = uint64_t{1} << 36;

// Value of 'key' in the header dict, e.g. "'<f4'", "False", "(2, 3)".
std::string DictValue(const std::string& header, const std::string& key) {
  const std::regex re("'" + key + "'\\s*:\\s*(\\([^)]*\\)|'[^']*'|\\w+)");
  std::smatch m;
  return std::regex_search(header, m, re) ? m[1].str() : "";
}

uint32_t LittleEndian(absl::string_view bytes) {
  uint32_t v = 0;
  for (size_t i = bytes.size(); i-- > 0;) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}

// A regular file mapped read-only (no copy into a buffer of ours; the pages
// come from the page cache, read ahead sequentially), unmapped when it goes.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    }
    MappedFile f;
    f.size_ = static_cast<size_t>(st.st_size);
    if (f.size_ > 0) {
      void* p = mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        return absl::DataLossError(absl::StrCat(path, ": read failed (mmap)"));
      }
      madvise(p, f.size_, MADV_SEQUENTIAL);
      f.data_ = static_cast<const char*>(p);
    }
    ::close(fd);
    return f;
  }
  MappedFile(MappedFile&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(o.size_) {}
  MappedFile(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(const_cast<char*>(data_), size_);
  }
  absl::string_view bytes() const { return absl::string_view(data_, size_); }

 private:
  MappedFile() = default;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

std::string WithoutNpySuffix(absl::string_view name) {
  return std::string(absl::StripSuffix(name, ".npy"));
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// N for "arr_N" (np.savez's name for its N-th positional array), else -1.
int64_t PositionalIndex(absl::string_view name) {
  int64_t index;
  if (!absl::ConsumePrefix(&name, "arr_") || name.empty() ||
      !std::all_of(name.begin(), name.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(name, &index)) {
    return -1;
  }
  return index;
}

std::string ZipErrorString(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string message = zip_error_strerror(&error);
  zip_error_fini(&error);
  return message;
}

// Deflate's largest expansion: 1032 bytes out per byte in.
constexpr uint64_t kMaxDeflateRatio = 1032;

// The bytes of member `index`, read to its end so libzip checks its CRC.
// `archive_bytes` (the whole archive's size) bounds what is allocated before
// anything is read: a damaged archive's size fields claim what they like.
absl::StatusOr<std::string> ReadMember(zip_t* archive, zip_uint64_t index, const zip_stat_t& st,
                                       uint64_t archive_bytes, const std::string& label) {
  if ((st.valid & ZIP_STAT_SIZE) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": the archive gives no size"));
  }
  if (st.size > kMaxMemberBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(label, ": expected at most ", kMaxMemberBytes,
                                                     " bytes per member, got ", st.size));
  }
  std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> file(zip_fopen_index(archive, index, 0),
                                                          &zip_fclose);
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": cannot open: ", zip_strerror(archive)));
  }
  // A stored or deflated member of a real archive fits in this at once; past
  // it the buffer doubles as bytes actually arrive.
  uint64_t room = archive_bytes;
  if (__builtin_mul_overflow(archive_bytes, kMaxDeflateRatio, &room)) room = st.size;
  std::string bytes(static_cast<size_t>(std::min<uint64_t>(st.size, room)), '\0');
  zip_uint64_t got = 0;
  while (got < st.size) {
    if (got == bytes.size()) {
      bytes.resize(static_cast<size_t>(std::min<uint64_t>(st.size, std::max<uint64_t>(2 * got, 1 << 16))));
    }
    const zip_int64_t n = zip_fread(file.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": cannot read: ", zip_file_strerror(file.get())));
    }
    if (n == 0) break;
    got += static_cast<zip_uint64_t>(n);
  }
  char extra;
  const zip_int64_t tail = zip_fread(file.get(), &extra, 1);
  if (tail < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": cannot read: ", zip_file_strerror(file.get())));
  }
  if (got != st.size || tail != 0) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": expected ", st.size,
                                                   " bytes as the archive says, got ",
                                                   got + static_cast<zip_uint64_t>(tail),
                                                   tail != 0 ? " or more" : ""));
  }
  return bytes;
}

}  // namespace

namespace {

// ParseNpy, and with `in_place` a float32 array's data is not copied: *in_place
// points at it in `bytes` (when aligned for floats) and values stay empty.
absl::StatusOr<Array> ParseNpyInto(absl::string_view bytes, const std::string& name,
                                   const float** in_place) {
  if (bytes.size() < 8 || bytes.substr(0, 6) != kNpyMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": not a .npy file (expected the magic \\x93NUMPY)"));
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t len_bytes;
  if (major == 1) {
    len_bytes = 2;
  } else if (major == 2 || major == 3) {
    len_bytes = 4;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected .npy format version 1, 2 or 3, got ", major));
  }
  if (bytes.size() < 8 + len_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": truncated in the preamble (",
                                                   bytes.size(), " bytes)"));
  }
  const uint32_t header_len = LittleEndian(bytes.substr(8, len_bytes));
  if (header_len > (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a header of at most 1 MiB, got ", header_len, " bytes"));
  }
  const size_t data_offset = 8 + len_bytes + header_len;
  if (bytes.size() < data_offset) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": truncated header (expected ",
                                                   header_len, " bytes, got ",
                                                   bytes.size() - 8 - len_bytes, ")"));
  }
  const std::string header(bytes.substr(8 + len_bytes, header_len));

  const std::string descr = DictValue(header, "descr");
  size_t elem;
  if (descr == "'<f4'") {
    elem = 4;
  } else if (descr == "'<f2'") {
    elem = 2;
  } else if (descr == "'<f8'") {
    elem = 8;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": expected dtype float32, float16 or float64, little-endian ('<f4', "
                     "'<f2', '<f8'), got descr ",
                     descr.empty() ? "(none)" : descr));
  }
  const std::string fortran = DictValue(header, "fortran_order");
  if (fortran != "False") {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected a C-order array (fortran_order False), got fortran_order ",
        fortran.empty() ? "(none)" : fortran, "; save np.ascontiguousarray(a) instead"));
  }
  std::string shape_str = DictValue(header, "shape");
  if (shape_str.size() < 2 || shape_str.front() != '(') {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a shape tuple in the header"));
  }
  shape_str = shape_str.substr(1, shape_str.size() - 2);
  Array array;
  uint64_t count = 1;
  for (absl::string_view part : absl::StrSplit(shape_str, ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": bad shape (", shape_str, ")"));
    }
    array.shape.push_back(d);
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count) ||
        count > (uint64_t{1} << 40)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": shape (", shape_str, ") has more than 2^40 elements"));
    }
  }
  const uint64_t need = count * elem;
  const absl::string_view data = bytes.substr(data_offset);
  if (data.size() < need) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": truncated data (expected ", need, " bytes for shape (", shape_str, ") of ",
        elem * 8, "-bit floats, got ", data.size(), ")"));
  }
  if (in_place != nullptr && elem == 4 &&
      reinterpret_cast<uintptr_t>(data.data()) % alignof(float) == 0) {
    *in_place = reinterpret_cast<const float*>(data.data());
    return array;
  }
  array.values.resize(count);
  if (count == 0) return array;  // values.data() may be null: no memcpy from or to it
  if (elem == 4) {
    std::memcpy(array.values.data(), data.data(), need);
  } else if (elem == 2) {
    for (uint64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, data.data() + 2 * i, 2);
      array.values[i] = Eigen::half_impl::half_to_float(Eigen::half_impl::raw_uint16_to_half(bits));
    }
  } else {
    for (uint64_t i = 0; i < count; ++i) {
      double v;
      std::memcpy(&v, data.data() + 8 * i, 8);
      array.values[i] = static_cast<float>(v);
    }
  }
  return array;
}

}  // namespace

absl::StatusOr<Array> ParseNpy(absl::string_view bytes, const std::string& name) {
  return ParseNpyInto(bytes, name, nullptr);
}

absl::StatusOr<MappedArray> MapNpy(const std::string& path) {
  absl::StatusOr<MappedFile> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  auto keep = std::make_shared<MappedFile>(*std::move(file));
  const float* in_place = nullptr;
  absl::StatusOr<Array> array = ParseNpyInto(keep->bytes(), path, &in_place);
  if (!array.ok()) return array.status();
  MappedArray out;
  out.array = *std::move(array);
  if (in_place != nullptr) {
    out.data = in_place;
    out.keep = std::move(keep);
  } else {
    out.data = out.array.values.data();
  }
  return out;
}

absl::StatusOr<Array> ReadNpy(const std::string& path) {
  absl::StatusOr<MappedFile> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return ParseNpy(file->bytes(), path);
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
  out.write(kNpyMagic.data(), static_cast<std::streamsize>(kNpyMagic.size()));
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

namespace {

// Every member of an open archive of `archive_bytes` bytes, in ReadNpz's
// order; `path` labels errors.
absl::StatusOr<std::vector<NamedArray>> ReadArchive(zip_t* archive, uint64_t archive_bytes,
                                                    const std::string& path) {
  const zip_int64_t entries = zip_get_num_entries(archive, 0);
  struct Member {
    int64_t positional;  // arr_N's N, or -1
    size_t position;     // in the archive
    NamedArray array;
  };
  std::vector<Member> members;
  for (zip_int64_t i = 0; i < entries; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive, static_cast<zip_uint64_t>(i), 0, &st) != 0 ||
        (st.valid & ZIP_STAT_NAME) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": member ", i, ": cannot read: ",
                                                     zip_strerror(archive)));
    }
    const std::string member = st.name;
    const std::string label = absl::StrCat(path, " (member ", member, ")");
    if (!absl::EndsWith(member, ".npy")) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": expected NAME.npy members, as np.savez writes"));
    }
    absl::StatusOr<std::string> bytes =
        ReadMember(archive, static_cast<zip_uint64_t>(i), st, archive_bytes, label);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<Array> array = ParseNpy(*bytes, label);
    if (!array.ok()) return array.status();
    const std::string name = WithoutNpySuffix(member);
    members.push_back({PositionalIndex(name), members.size(), {name, std::move(*array)}});
  }
  // Positional arrays first, by index; named ones after, in archive order.
  std::stable_sort(members.begin(), members.end(), [](const Member& a, const Member& b) {
    const bool pa = a.positional >= 0, pb = b.positional >= 0;
    if (pa != pb) return pa;
    return pa ? a.positional < b.positional : a.position < b.position;
  });
  std::vector<NamedArray> out;
  out.reserve(members.size());
  for (Member& m : members) out.push_back(std::move(m.array));
  return out;
}

}  // namespace

absl::StatusOr<std::vector<NamedArray>> ReadNpz(const std::string& path) {
  int error = 0;
  std::unique_ptr<zip_t, void (*)(zip_t*)> archive(zip_open(path.c_str(), ZIP_RDONLY, &error),
                                                    &zip_discard);
  if (archive == nullptr) {
    const std::string why = ZipErrorString(error);
    if (error == ZIP_ER_NOENT || error == ZIP_ER_OPEN) {
      return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", why));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a .npz (zip) archive: ", why));
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  return ReadArchive(archive.get(), static_cast<uint64_t>(st.st_size), path);
}

absl::StatusOr<std::vector<NamedArray>> ParseNpz(absl::string_view bytes, const std::string& name) {
  zip_error_t error;
  zip_error_init(&error);
  // The source reads `bytes` in place (freep 0: it does not own them).
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (source == nullptr) {
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    return absl::InternalError(absl::StrCat(name, ": cannot read the bytes: ", why));
  }
  zip_t* opened = zip_open_from_source(source, ZIP_RDONLY, &error);
  if (opened == nullptr) {
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    zip_source_free(source);
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a .npz (zip) archive: ", why));
  }
  zip_error_fini(&error);
  std::unique_ptr<zip_t, void (*)(zip_t*)> archive(opened, &zip_discard);  // frees the source
  return ReadArchive(archive.get(), bytes.size(), name);
}

bool NaturalLess(absl::string_view a, absl::string_view b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (absl::ascii_isdigit(a[i]) && absl::ascii_isdigit(b[j])) {
      size_t ie = i, je = j;
      while (ie < a.size() && absl::ascii_isdigit(a[ie])) ++ie;
      while (je < b.size() && absl::ascii_isdigit(b[je])) ++je;
      // Compare the runs as numbers: without leading zeros, longer is larger.
      absl::string_view x = a.substr(i, ie - i), y = b.substr(j, je - j);
      while (x.size() > 1 && x[0] == '0') x.remove_prefix(1);
      while (y.size() > 1 && y[0] == '0') y.remove_prefix(1);
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
      ++i;
      ++j;
    }
  }
  if ((a.size() - i) != (b.size() - j)) return a.size() - i < b.size() - j;
  return a < b;  // equal up to leading zeros: keep a total order
}

absl::StatusOr<std::vector<std::string>> ListNpyFiles(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    const std::string why = absl::StrCat(dir, ": cannot open the directory: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(why) : absl::InvalidArgumentError(why);
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 4 && absl::EndsWith(name, ".npy")) names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end(),
            [](const std::string& a, const std::string& b) { return NaturalLess(a, b); });
  return names;
}

absl::StatusOr<std::vector<NamedArray>> ReadArrays(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::vector<NamedArray> out;
  if (S_ISDIR(st.st_mode)) {
    absl::StatusOr<std::vector<std::string>> names = ListNpyFiles(path);
    if (!names.ok()) return names.status();
    if (names->empty()) {
      return absl::NotFoundError(absl::StrCat(path, ": expected .npy files in the directory, found none"));
    }
    for (const std::string& name : *names) {
      absl::StatusOr<Array> array = ReadNpy(path + "/" + name);
      if (!array.ok()) return array.status();
      out.emplace_back(WithoutNpySuffix(name), std::move(*array));
    }
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  char magic[6] = {};
  in.read(magic, sizeof(magic));
  const absl::string_view head(magic, static_cast<size_t>(in.gcount()));
  in.close();
  if (absl::StartsWith(head, kZipMagic) || absl::StartsWith(head, kEmptyZipMagic)) {
    return ReadNpz(path);
  }
  if (head != kNpyMagic) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": expected a .npy file (\\x93NUMPY), a .npz archive (PK\\x03\\x04) or a directory"));
  }
  absl::StatusOr<Array> array = ReadNpy(path);
  if (!array.ok()) return array.status();
  out.emplace_back(WithoutNpySuffix(BaseName(path)), std::move(*array));
  return out;
}

}  // namespace attnroll::npy
