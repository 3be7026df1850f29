// Reading and writing NumPy arrays: .npy files (format versions 1-3), .npz
// archives (np.savez, stored, and np.savez_compressed, deflate; read with
// libzip) and directories of .npy files. float32, float16 and float64
// little-endian C-order arrays in (converted to float32), float32 out.
// Errors are absl::Status values naming the file (and the archive member)
// and what was expected and seen.
#ifndef ATTNROLL_CLIENT_NPY_NPY_H_
#define ATTNROLL_CLIENT_NPY_NPY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnroll::npy {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
};

// An array and its name: the archive member without ".npy" ("arr_0", or the
// keyword of np.savez(f, name=array)), or the file name without ".npy".
using NamedArray = std::pair<std::string, Array>;

// Loads a .npy file: float32, float16 or float64 (converted to float32).
// Big-endian, Fortran-order and other dtypes are refused (INVALID_ARGUMENT),
// as is a file shorter than its header says; a missing file is NOT_FOUND.
absl::StatusOr<Array> ReadNpy(const std::string& path);

// A .npy file's values as float32 without copying a float32 file: it is
// mapped read-only and `data` points into the mapping, which `keep` holds
// (array.values stays empty; array.shape is set). Other dtypes are converted
// into array.values and `data` points there. The same checks as ReadNpy.
struct MappedArray {
  Array array;
  const float* data = nullptr;
  std::shared_ptr<const void> keep;
};
absl::StatusOr<MappedArray> MapNpy(const std::string& path);

// Parses the bytes of a .npy file; `name` only labels the errors.
absl::StatusOr<Array> ParseNpy(absl::string_view bytes, const std::string& name);

// Writes a float32 C-order .npy file (version 1.0).
absl::Status WriteNpy(const std::string& path, const Array& array);

// Loads every array of a .npz archive (np.savez or np.savez_compressed), in
// the archive's order, except that the positional arrays arr_0, arr_1, ...
// come first and by their index (arr_10 after arr_9) whatever the order of
// the zip's directory. Every member must be a .npy file.
absl::StatusOr<std::vector<NamedArray>> ReadNpz(const std::string& path);

// The same for the bytes of a .npz archive in memory; `name` labels errors.
absl::StatusOr<std::vector<NamedArray>> ParseNpz(absl::string_view bytes, const std::string& name);

// The .npy files of a directory (names only), in natural order: runs of
// digits compare as numbers, so layer_2.npy comes before layer_10.npy.
absl::StatusOr<std::vector<std::string>> ListNpyFiles(const std::string& dir);

// A .npy file (one array), a .npz archive (ReadNpz's order) or a directory
// of .npy files (ListNpyFiles's order), by what `path` is.
absl::StatusOr<std::vector<NamedArray>> ReadArrays(const std::string& path);

// Natural order of names: digit runs by value, the rest byte-wise.
bool NaturalLess(absl::string_view a, absl::string_view b);

}  // namespace attnroll::npy

#endif  // ATTNROLL_CLIENT_NPY_NPY_H_
