// The one rule for when a client may fuse each layer's heads itself and send
// the fused matrix as one head (`Layout.heads_fused_by_client`): shared by the
// server, which refuses a pass that breaks it, and the clients, which fuse
// only when it holds. Pure protobuf + absl (no gRPC).
#ifndef ATTNROLL_PROTO_CPP_CLIENT_FUSION_H_
#define ATTNROLL_PROTO_CPP_CLIENT_FUSION_H_

#include <vector>

#include "absl/status/statusor.h"
#include "attnroll/v1/pass.pb.h"

namespace attnroll::v1 {

// The weights the heads are fused with, one per head of
// `header.layout().num_heads()` (all 1 for mean fusion), when every analysis
// of the pass allows fusing on the client: a single-stack pass whose
// analyses (an empty list: the default rollout) are all mean, or all
// weighted with the same non-negative weights summing to > 0, with no
// gradient and no head-specific rollout. Validate-only analyses allow it.
// Otherwise INVALID_ARGUMENT naming the field that needs the heads, e.g.
// "analyses[1].rollout.fusion: fusing heads on the client needs MEAN or
// WEIGHTED fusion, got MAX". Value norms (per head) are a property of the
// layer messages, not the header: the caller checks them.
absl::StatusOr<std::vector<float>> ClientFusionWeights(const PassHeader& header);

}  // namespace attnroll::v1

#endif  // ATTNROLL_PROTO_CPP_CLIENT_FUSION_H_
