// Reading and writing NumPy .npy files (format versions 1-3): float32 and
// float16 little-endian C-order arrays in, float32 out.
#ifndef ATTNROLL_CLIENT_NPY_NPY_H_
#define ATTNROLL_CLIENT_NPY_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnroll::npy {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
};

// Loads a float32 or float16 array (converted to float32).
absl::StatusOr<Array> ReadNpy(const std::string& path);
absl::Status WriteNpy(const std::string& path, const Array& array);

}  // namespace attnroll::npy

#endif  // ATTNROLL_CLIENT_NPY_NPY_H_
