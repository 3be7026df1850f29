// Client-side head fusion: when every analysis of a pass fuses heads by mean
// or fixed non-negative weights, the client can fuse each layer itself and
// send one head, dividing the attention bytes on the wire by H
// (`Layout.heads_fused_by_client`). The server's maps are those of the full
// pass up to rounding. The server then sees only the fused rows, so the
// client validates every head as it fuses (finite, >= 0, rows summing to 1
// within the tolerance the server would apply at the wire dtype, nothing
// above the diagonal of a causal layout) and refuses the call with the
// message the server would give, naming layer, head, sequence and row.
#ifndef ATTNROLL_CLIENT_CPP_HEAD_FUSION_H_
#define ATTNROLL_CLIENT_CPP_HEAD_FUSION_H_

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "absl/status/statusor.h"
#include "attnroll/v1/pass.pb.h"
#include "client/cpp/attention_view.h"

namespace attnroll::client {

// Whether the client fuses heads before sending.
enum class ClientFusion {
  kAuto,  // when the pass allows it (and H > 1); otherwise every head is sent
  kOff,   // always send every head (full per-head validation)
  kOn,    // fuse, or refuse the call with INVALID_ARGUMENT saying why it cannot
};

// A view whose heads were fused: [B, L, 1, rows, n], owning its data.
struct FusedAttention {
  AttentionView view;
  std::vector<float> data;
};

// Decides for `header` (its layout complete, num_heads = the views' heads)
// and the views of one pass (two for a pair: same shape) sent at `wire`:
// with fusion, sets header->layout.heads_fused_by_client and returns the
// fused views, in order; without, returns none. kOn and a pass that does
// not allow it: INVALID_ARGUMENT naming the field that needs the heads. A
// head that fails validation: INVALID_ARGUMENT (in every mode but kOff).
// `threads` as FuseHeads'.
absl::StatusOr<std::vector<FusedAttention>> MaybeFuseHeads(
    v1::PassHeader* header, std::initializer_list<const AttentionView*> views, ClientFusion mode,
    v1::DType wire = v1::DTYPE_FP32, int threads = 1);

// What each head is checked against while it is fused.
struct HeadChecks {
  float tolerance = 1e-3f;  // allowed |row sum - 1|, and entry above the diagonal (causal)
  bool causal = false;
  std::vector<int> valid;   // valid length of each sequence; empty: every token
};
// The checks the server would apply to `header`'s pass at `wire`.
HeadChecks ChecksFor(const v1::PassHeader& header, v1::DType wire);

// A view of at least this many bytes is fused on up to `threads` threads.
// Below it a thread's start-up is a sizeable share of the work (a 2 MiB pass
// fuses in ~0.2 ms).
constexpr int64_t kParallelFusionBytes = int64_t{4} << 20;

// F^[b, l] = sum_h w_h A[b, l, h] / sum_h w_h for every (b, l): `weights`
// one per head, >= 0, summing to > 0. With `checks`, every head's valid
// rows are validated on the way (the first failure, in (sequence, layer,
// head, row) order, is returned). `threads` > 1: the layers of a view of at
// least kParallelFusionBytes are shared by the calling thread and
// threads - 1 started for the call (the values are the same: each layer is
// fused by one thread, as on one).
absl::StatusOr<FusedAttention> FuseHeads(const AttentionView& attention,
                                         const std::vector<float>& weights,
                                         const HeadChecks* checks = nullptr, int threads = 1);

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_HEAD_FUSION_H_
