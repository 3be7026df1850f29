// Wire tensors -> fp32 blocks, and the checks every attention block must pass
// before any math sees it.
#ifndef ATTNROLL_SERVER_SESSION_ATTENTION_DECODE_H_
#define ATTNROLL_SERVER_SESSION_ATTENTION_DECODE_H_

#include <cstddef>
#include <cstdint>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "attnroll/v1/tensor.pb.h"
#include "server/analysis/fuse_kernels.h"
#include "server/analysis/row_stats.h"

namespace attnroll::session {

// A whole (small, already byte-checked) tensor decoded to fp32.
std::vector<float> DecodeAllValues(const v1::Tensor& t);

// Bytes per element; 0 for an unknown dtype.
size_t DTypeSize(int dtype);
const char* DTypeName(int dtype);

// Checks that dtype is known, no dim is negative, the element count does not
// overflow, and len(data) == product(shape) * sizeof(dtype). `field` names the
// tensor in messages.
absl::Status CheckTensorBytes(const v1::Tensor& tensor, absl::string_view field);

// Decodes a rows x cols block whose first element is element `offset` of the
// tensor and whose rows are `stride` elements apart, into dst (row-major).
void DecodeBlock(int dtype, const std::string& data, int64_t offset, int rows, int cols,
                 int64_t stride, float* dst);

// The kernels' name of a (known) wire dtype.
analysis::WireType WireTypeOf(int dtype);

// Where a block came from, for error messages.
struct BlockLocation {
  int layer;
  int head;
  int sequence;
};

// Rows [row0, row0 + rows) of an attention block with `cols` valid columns
// (row r starts at a + r * stride) must be finite, non-negative, sum to 1
// within `tolerance`, and (causal) hold no mass above the diagonal beyond it.
// `stats` (one per row, upper_max filled when causal) decide quickly; a row
// they reject is re-checked exactly for the message.
absl::Status ValidateAttentionRows(const float* a, int rows, int cols, int64_t stride, int row0,
                                   float tolerance, bool causal, const BlockLocation& where,
                                   const analysis::RowStats* stats);

// The same for rows as they arrived (`dtype`, row r at data + r * stride
// elements): a row the stats reject is decoded and re-checked exactly.
absl::Status ValidateWireRows(int dtype, const char* data, int64_t stride, int rows, int cols,
                              int row0, float tolerance, bool causal, const BlockLocation& where,
                              const analysis::RowStats* stats);

// The same for a whole contiguous m x m block (computes the stats itself).
absl::Status ValidateAttentionBlock(const float* a, int m, float tolerance, bool causal,
                                    const BlockLocation& where);

// Rows of a gradient block must be finite.
absl::Status ValidateGradientRows(const float* g, int rows, int cols, int64_t stride, int row0,
                                  const BlockLocation& where);

// Default row-sum tolerance for a wire dtype.
float DefaultRowSumTolerance(int dtype);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_ATTENTION_DECODE_H_
