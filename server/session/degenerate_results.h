// Results that carry no information (a layer whose gradient is zero
// everywhere, a layer whose gradient-weighted attention is zero everywhere, a
// map with no mass), said in words instead of returned silently: warnings on
// the result, or one error when the request asks for it.
#ifndef ATTNROLL_SERVER_SESSION_DEGENERATE_RESULTS_H_
#define ATTNROLL_SERVER_SESSION_DEGENERATE_RESULTS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace attnroll::session {

// What one sequence's analysis saw.
struct Degenerate {
  std::vector<int> zero_gradient_layers;  // the gradient was 0 everywhere
  std::vector<int> zero_layers;           // G (*) A fused and clamped was 0 everywhere
  int64_t zero_maps = 0;                  // maps with no mass
  int64_t maps = 0;                       // maps in all
};

// "0..3, 7, 9..10"
std::string LayerList(const std::vector<int>& layers);

// One sentence per finding, each naming sequence `b` and the layers.
std::vector<std::string> DegenerateMessages(int b, const Degenerate& d);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_DEGENERATE_RESULTS_H_
