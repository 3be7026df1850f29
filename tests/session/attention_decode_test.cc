// Wire decoding (fp32/fp16/bf16 bit patterns, round trips with the client's
// encoder) and the checks every attention block passes.
#include "server/session/attention_decode.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cpp/tensor_encode.h"

namespace attnroll::session {
namespace {

using ::testing::HasSubstr;

std::string Bits16(std::initializer_list<uint16_t> v) {
  std::string s;
  for (uint16_t x : v) s.append(reinterpret_cast<const char*>(&x), 2);
  return s;
}

TEST(DecodeTest, Fp16KnownBitPatterns) {
  // 1.0, 0.5, -2.0, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal)
  const std::string data = Bits16({0x3C00, 0x3800, 0xC000, 0x7BFF, 0x0001, 0x0400});
  float out[6];
  DecodeBlock(v1::DTYPE_FP16, data, 0, 1, 6, 6, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 0.5f);
  EXPECT_EQ(out[2], -2.0f);
  EXPECT_EQ(out[3], 65504.0f);
  EXPECT_EQ(out[4], std::ldexp(1.0f, -24));
  EXPECT_EQ(out[5], std::ldexp(1.0f, -14));
}

TEST(DecodeTest, Bf16KnownBitPatterns) {
  // 1.0, 0.5, 1 + 2^-7, -3.0
  const std::string data = Bits16({0x3F80, 0x3F00, 0x3F81, 0xC040});
  float out[4];
  DecodeBlock(v1::DTYPE_BF16, data, 0, 1, 4, 4, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 0.5f);
  EXPECT_EQ(out[2], 1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(out[3], -3.0f);
}

TEST(DecodeTest, EncoderRoundsToNearestEven) {
  // Halfway cases: 1 + 2^-11 lies between fp16 1 and 1 + 2^-10 -> 1 (even);
  // 1 + 3 * 2^-11 -> 1 + 2^-9 (even). bf16 likewise with 2^-8.
  const float in[4] = {1.0f + std::ldexp(1.0f, -11), 1.0f + 3 * std::ldexp(1.0f, -11),
                       1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8)};
  std::string fp16, bf16;
  client::AppendEncoded(v1::DTYPE_FP16, in, 2, &fp16);
  client::AppendEncoded(v1::DTYPE_BF16, in + 2, 2, &bf16);
  float out[2];
  DecodeBlock(v1::DTYPE_FP16, fp16, 0, 1, 2, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f + std::ldexp(1.0f, -9));
  DecodeBlock(v1::DTYPE_BF16, bf16, 0, 1, 2, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f + std::ldexp(1.0f, -6));
}

TEST(DecodeTest, StridedBlockCropsPadding) {
  // A 3 x 3 fp32 tensor; decode the top-left 2 x 2 starting at element 0.
  const float full[9] = {1, 2, 9, 3, 4, 9, 9, 9, 9};
  std::string data(reinterpret_cast<const char*>(full), sizeof(full));
  float out[4];
  DecodeBlock(v1::DTYPE_FP32, data, 0, 2, 2, 3, out);
  EXPECT_THAT(out, ::testing::ElementsAre(1, 2, 3, 4));
}

TEST(CheckTensorBytesTest, NamesFieldExpectedAndSeen) {
  v1::Tensor t;
  t.set_dtype(v1::DTYPE_FP16);
  t.add_shape(2);
  t.add_shape(3);
  t.set_data(std::string(10, '\0'));
  EXPECT_THAT(std::string(CheckTensorBytes(t, "layer[0].attention").message()),
              HasSubstr("layer[0].attention.data: expected 6 elements x 2 bytes (FP16) = 12 bytes, got 10"));
  t.set_data(std::string(12, '\0'));
  EXPECT_TRUE(CheckTensorBytes(t, "x").ok());
  t.set_dtype(static_cast<v1::DType>(9));
  EXPECT_THAT(std::string(CheckTensorBytes(t, "x").message()), HasSubstr("x.dtype: expected FP32, FP16 or BF16, got 9"));
  t.set_dtype(v1::DTYPE_FP32);
  t.clear_shape();
  for (int i = 0; i < 4; ++i) t.add_shape(int64_t{1} << 20);  // 2^80 elements
  EXPECT_THAT(std::string(CheckTensorBytes(t, "x").message()), HasSubstr("overflows"));
  t.clear_shape();
  t.add_shape(-1);
  EXPECT_THAT(std::string(CheckTensorBytes(t, "x").message()), HasSubstr("x.shape[0]: expected >= 0, got -1"));
}

TEST(ValidateAttentionBlockTest, RejectsEachKindOfBadValue) {
  const BlockLocation where{3, 1, 0};
  auto check = [&](std::vector<float> a, bool causal = false) {
    return std::string(ValidateAttentionBlock(a.data(), 2, 1e-3f, causal, where).message());
  };
  EXPECT_EQ(check({0.5f, 0.5f, 0.25f, 0.75f}), "");
  EXPECT_THAT(check({0.5f, 0.5f, NAN, 0.75f}), HasSubstr("layer 3, head 1, sequence 0, row 1): expected finite values"));
  EXPECT_THAT(check({0.5f, INFINITY, 0.25f, 0.75f}), HasSubstr("expected finite values"));
  EXPECT_THAT(check({1.5f, -0.5f, 0.25f, 0.75f}), HasSubstr("expected probabilities >= 0, got -0.5"));
  EXPECT_THAT(check({0.5f, 0.4f, 0.25f, 0.75f}), HasSubstr("row 0): expected the row over the 2 valid tokens to sum to 1 +- 0.001, got 0.9"));
  EXPECT_THAT(check({0.5f, 0.5f, 0.25f, 0.75f}, true), HasSubstr("causal layout expects no attention above the diagonal"));
  EXPECT_EQ(check({1.0f, 0.0f, 0.25f, 0.75f}, true), "");
}


// The encoder's vector path (8 values at a time) rounds exactly as the
// scalar conversion: random values over every magnitude, halfway cases,
// subnormals, overflow to infinity, zeros of both signs.
TEST(DecodeTest, EncoderVectorPathMatchesScalarRounding) {
  std::vector<float> in;
  uint32_t x = 12345;
  for (int i = 0; i < 20000; ++i) {
    x = x * 1664525u + 1013904223u;
    float f;
    const uint32_t bits = (x & 0x8FFFFFFFu) | 0x30000000u;  // exponents around fp16's range
    std::memcpy(&f, &bits, 4);
    in.push_back(f);
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e9f, -1e9f, 1.0f + std::ldexp(1.0f, -11),
                  std::ldexp(1.0f, -24), std::ldexp(1.0f, -25), std::ldexp(3.0f, -26), 0.1f}) {
    in.push_back(f);
  }
  for (v1::DType dtype : {v1::DTYPE_FP16, v1::DTYPE_BF16}) {
    std::string wire;
    client::AppendEncoded(dtype, in.data(), in.size(), &wire);
    ASSERT_EQ(wire.size(), in.size() * 2);
    for (size_t i = 0; i < in.size(); ++i) {
      const uint16_t want = dtype == v1::DTYPE_FP16
                                ? Eigen::numext::bit_cast<uint16_t>(Eigen::half(in[i]))
                                : Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(in[i]));
      uint16_t got;
      std::memcpy(&got, wire.data() + 2 * i, 2);
      ASSERT_EQ(got, want) << "value " << in[i] << " at " << i;
    }
  }
}

}  // namespace
}  // namespace attnroll::session
