// client/npy against files numpy itself writes at test time (Debian's
// /usr/bin/python3 with python3-numpy): np.save in every dtype the reader
// takes, .npy format versions 2 and 3, np.savez (positional and named),
// np.savez_compressed, directories of per-layer files, and the files it must
// refuse (Fortran order, other dtypes, truncated files and archives). Values
// are built from formulas both sides compute exactly, so they are compared
// for equality.
#include "client/npy/npy.h"

#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/testutil/run_command.h"

namespace attnroll::npy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Writes every file the tests read, in the directory given as argv[1].
constexpr char kWriter[] = R"PY(
import os, sys, zipfile
import numpy as np

d = sys.argv[1]
p = lambda *names: os.path.join(d, *names)

# float32 [2, 3, 4]: i / 7 rounded to float32.
np.save(p("f32.npy"), (np.arange(24, dtype=np.float64) / 7).astype(np.float32).reshape(2, 3, 4))
# float16 [4, 6]: (i - 12) / 8, exact in float16.
np.save(p("f16.npy"), ((np.arange(24) - 12) / 8).astype(np.float16).reshape(4, 6))
# float64 [10]: i / 3, not exact in float32 (the reader rounds to nearest).
np.save(p("f64.npy"), np.arange(10, dtype=np.float64) / 3)
# Format versions 2.0 and 3.0.
for v in (2, 3):
    with open(p("v%d.npy" % v), "wb") as f:
        np.lib.format.write_array(f, np.arange(6, dtype=np.float32).reshape(3, 2), version=(v, 0))
# A scalar and an empty array.
np.save(p("scalar.npy"), np.float32(2.5))
np.save(p("empty.npy"), np.zeros((0, 3), np.float32))

# np.savez with 12 positional arrays: arr_0 .. arr_11, arr_k filled with k.
np.savez(p("positional.npz"), *[np.full((2, 2), k, np.float32) for k in range(12)])
# Named arrays, in keyword order; then positional and named mixed.
np.savez(p("named.npz"), attention=np.ones((1, 2, 3, 3), np.float32) / 3,
         gradient=np.arange(18, dtype=np.float64).reshape(1, 2, 3, 3))
np.savez(p("mixed.npz"), np.zeros(2, np.float32), np.ones(2, np.float16), mask=np.full(3, 7.0))
# np.savez_compressed: deflate members.
big = (np.arange(4096, dtype=np.float64) % 17 / 16).astype(np.float32).reshape(64, 64)
np.savez_compressed(p("compressed.npz"), big, small=np.arange(5, dtype=np.float16))
with zipfile.ZipFile(p("compressed.npz")) as z:
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
with zipfile.ZipFile(p("positional.npz")) as z:
    assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())

# A model's layers, one file each: layer_0 .. layer_11, layer_l filled with l.
os.mkdir(p("layers"))
for l in range(12):
    np.save(p("layers", "layer_%d.npy" % l), np.full((2, 4, 4), l, np.float32))
with open(p("layers", "README.txt"), "w") as f:
    f.write("not an array\n")
os.mkdir(p("no_arrays"))

# What the reader refuses.
np.save(p("fortran.npy"), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
np.save(p("int32.npy"), np.arange(4, dtype=np.int32))
np.save(p("big_endian.npy"), np.arange(4, dtype=">f4"))
raw = open(p("f32.npy"), "rb").read()
open(p("truncated.npy"), "wb").write(raw[:-10])
open(p("truncated_header.npy"), "wb").write(raw[:20])
zraw = open(p("positional.npz"), "rb").read()
open(p("truncated.npz"), "wb").write(zraw[:len(zraw) // 2])
# One data byte of arr_0 flipped: the member's CRC no longer matches.
bad = bytearray(zraw)
bad[zraw.index(b"\x93NUMPY") + 128 + 1] ^= 0xFF
open(p("bad_crc.npz"), "wb").write(bytes(bad))
with zipfile.ZipFile(p("not_npy.npz"), "w") as z:
    z.writestr("notes.txt", "hello")
open(p("text.txt"), "w").write("hello\n")
# A deflated member whose size fields (local header and central directory)
# claim 0xF0000000 bytes (3.75 GiB); its data inflates to 176 bytes.
with zipfile.ZipFile(p("huge_claim.npz"), "w", zipfile.ZIP_DEFLATED) as z:
    buf = __import__("io").BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert len(buf.getvalue()) == 176
    z.writestr("arr_0.npy", buf.getvalue())
claim = bytearray(open(p("huge_claim.npz"), "rb").read())
assert claim[22:26] == (176).to_bytes(4, "little")
claim[22:26] = (0xF0000000).to_bytes(4, "little")
cd = claim.index(b"PK\x01\x02")
assert claim[cd + 24:cd + 28] == (176).to_bytes(4, "little")
claim[cd + 24:cd + 28] = (0xF0000000).to_bytes(4, "little")
open(p("huge_claim.npz"), "wb").write(bytes(claim))
)PY";

class NpyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/attnroll_npy_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    const std::string script = *dir_ + "/write_arrays.py";
    std::ofstream(script) << kWriter;
    int status = 0;
    const std::string out =
        testing::RunCommand(absl::StrCat("/usr/bin/python3 ", script, " ", *dir_, " 2>&1"), &status);
    ASSERT_EQ(status, 0) << out;
  }
  static void TearDownTestSuite() {
    int status = 0;
    testing::RunCommand("rm -rf '" + *dir_ + "'", &status);
    delete dir_;
  }
  static std::string Path(const std::string& name) { return *dir_ + "/" + name; }

  static std::string* dir_;
};
std::string* NpyTest::dir_ = nullptr;

std::vector<float> Filled(size_t n, float v) { return std::vector<float>(n, v); }

TEST_F(NpyTest, ReadsFloat32Float16AndFloat64Exactly) {
  absl::StatusOr<Array> f32 = ReadNpy(Path("f32.npy"));
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_THAT(f32->shape, ElementsAre(2, 3, 4));
  ASSERT_EQ(f32->values.size(), 24u);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(f32->values[i], static_cast<float>(i / 7.0)) << i;

  absl::StatusOr<Array> f16 = ReadNpy(Path("f16.npy"));
  ASSERT_TRUE(f16.ok()) << f16.status();
  EXPECT_THAT(f16->shape, ElementsAre(4, 6));
  for (int i = 0; i < 24; ++i) EXPECT_EQ(f16->values[i], (i - 12) / 8.0f) << i;

  absl::StatusOr<Array> f64 = ReadNpy(Path("f64.npy"));
  ASSERT_TRUE(f64.ok()) << f64.status();
  EXPECT_THAT(f64->shape, ElementsAre(10));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f64->values[i], static_cast<float>(i / 3.0)) << i;
}

TEST_F(NpyTest, MapNpyUsesFloat32InPlaceAndConvertsTheOthers) {
  absl::StatusOr<MappedArray> f32 = MapNpy(Path("f32.npy"));
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_THAT(f32->array.shape, ElementsAre(2, 3, 4));
  EXPECT_NE(f32->keep, nullptr);            // the mapping holds the values
  EXPECT_TRUE(f32->array.values.empty());  // nothing copied
  for (int i = 0; i < 24; ++i) EXPECT_EQ(f32->data[i], static_cast<float>(i / 7.0)) << i;

  absl::StatusOr<MappedArray> f16 = MapNpy(Path("f16.npy"));
  ASSERT_TRUE(f16.ok()) << f16.status();
  EXPECT_EQ(f16->keep, nullptr);
  ASSERT_EQ(f16->array.values.size(), 24u);
  EXPECT_EQ(f16->data, f16->array.values.data());
  for (int i = 0; i < 24; ++i) EXPECT_EQ(f16->data[i], (i - 12) / 8.0f) << i;

  // The same refusals as ReadNpy.
  absl::StatusOr<MappedArray> missing = MapNpy(Path("no_such_file.npy"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), ReadNpy(Path("no_such_file.npy")).status().message());
}

TEST_F(NpyTest, ReadsFormatVersionsTwoAndThreeScalarsAndEmptyArrays) {
  for (const char* name : {"v2.npy", "v3.npy"}) {
    absl::StatusOr<Array> a = ReadNpy(Path(name));
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_THAT(a->shape, ElementsAre(3, 2));
    EXPECT_THAT(a->values, ElementsAre(0, 1, 2, 3, 4, 5));
  }
  absl::StatusOr<Array> scalar = ReadNpy(Path("scalar.npy"));
  ASSERT_TRUE(scalar.ok()) << scalar.status();
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_THAT(scalar->values, ElementsAre(2.5f));
  absl::StatusOr<Array> empty = ReadNpy(Path("empty.npy"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_THAT(empty->shape, ElementsAre(0, 3));
  EXPECT_TRUE(empty->values.empty());
}

TEST_F(NpyTest, SavezPositionalArraysComeInIndexOrder) {
  absl::StatusOr<std::vector<NamedArray>> arrays = ReadNpz(Path("positional.npz"));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 12u);
  for (int k = 0; k < 12; ++k) {
    EXPECT_EQ((*arrays)[k].first, absl::StrCat("arr_", k));  // arr_10 after arr_9
    EXPECT_THAT((*arrays)[k].second.shape, ElementsAre(2, 2));
    EXPECT_EQ((*arrays)[k].second.values, Filled(4, static_cast<float>(k)));
  }
}

TEST_F(NpyTest, SavezNamedAndMixedArraysKeepTheirNamesAndOrder) {
  absl::StatusOr<std::vector<NamedArray>> named = ReadNpz(Path("named.npz"));
  ASSERT_TRUE(named.ok()) << named.status();
  ASSERT_EQ(named->size(), 2u);
  EXPECT_EQ((*named)[0].first, "attention");
  EXPECT_THAT((*named)[0].second.shape, ElementsAre(1, 2, 3, 3));
  EXPECT_EQ((*named)[0].second.values, Filled(18, static_cast<float>(1.0 / 3)));
  EXPECT_EQ((*named)[1].first, "gradient");
  for (int i = 0; i < 18; ++i) EXPECT_EQ((*named)[1].second.values[i], static_cast<float>(i));

  absl::StatusOr<std::vector<NamedArray>> mixed = ReadNpz(Path("mixed.npz"));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  ASSERT_EQ(mixed->size(), 3u);
  EXPECT_EQ((*mixed)[0].first, "arr_0");
  EXPECT_EQ((*mixed)[0].second.values, Filled(2, 0.0f));
  EXPECT_EQ((*mixed)[1].first, "arr_1");
  EXPECT_EQ((*mixed)[1].second.values, Filled(2, 1.0f));  // float16 in
  EXPECT_EQ((*mixed)[2].first, "mask");
  EXPECT_EQ((*mixed)[2].second.values, Filled(3, 7.0f));  // float64 in
}

TEST_F(NpyTest, SavezCompressedIsInflated) {
  absl::StatusOr<std::vector<NamedArray>> arrays = ReadNpz(Path("compressed.npz"));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 2u);
  EXPECT_EQ((*arrays)[0].first, "arr_0");
  EXPECT_THAT((*arrays)[0].second.shape, ElementsAre(64, 64));
  for (int i = 0; i < 4096; ++i) {
    ASSERT_EQ((*arrays)[0].second.values[i], static_cast<float>((i % 17) / 16.0)) << i;
  }
  EXPECT_EQ((*arrays)[1].first, "small");
  EXPECT_THAT((*arrays)[1].second.values, ElementsAre(0, 1, 2, 3, 4));
}

TEST_F(NpyTest, ReadArraysTakesAFileAnArchiveOrADirectoryInNaturalOrder) {
  absl::StatusOr<std::vector<std::string>> names = ListNpyFiles(Path("layers"));
  ASSERT_TRUE(names.ok()) << names.status();
  ASSERT_EQ(names->size(), 12u);  // README.txt is not listed
  for (int l = 0; l < 12; ++l) EXPECT_EQ((*names)[l], absl::StrCat("layer_", l, ".npy"));

  absl::StatusOr<std::vector<NamedArray>> layers = ReadArrays(Path("layers"));
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), 12u);
  for (int l = 0; l < 12; ++l) {
    EXPECT_EQ((*layers)[l].first, absl::StrCat("layer_", l));  // layer_2 before layer_10
    EXPECT_THAT((*layers)[l].second.shape, ElementsAre(2, 4, 4));
    EXPECT_EQ((*layers)[l].second.values, Filled(32, static_cast<float>(l)));
  }

  absl::StatusOr<std::vector<NamedArray>> one = ReadArrays(Path("f16.npy"));
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].first, "f16");
  EXPECT_THAT((*one)[0].second.shape, ElementsAre(4, 6));

  absl::StatusOr<std::vector<NamedArray>> archive = ReadArrays(Path("positional.npz"));
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_EQ(archive->size(), 12u);
  EXPECT_EQ(archive->back().first, "arr_11");

  absl::StatusOr<std::vector<NamedArray>> none = ReadArrays(Path("no_arrays"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("no_arrays: expected .npy files"));
  absl::StatusOr<std::vector<NamedArray>> text = ReadArrays(Path("text.txt"));
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(text.status().message()),
              HasSubstr("text.txt: expected a .npy file (\\x93NUMPY), a .npz archive"));
}

TEST_F(NpyTest, RefusesFortranOrderOtherDtypesAndTruncatedFilesNamingThem) {
  auto expect_refused = [](const std::string& path, absl::StatusCode code, const std::string& needle) {
    absl::StatusOr<Array> a = ReadNpy(path);
    ASSERT_FALSE(a.ok()) << path;
    EXPECT_EQ(a.status().code(), code) << a.status();
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(path + ": " + needle));
  };
  expect_refused(Path("fortran.npy"), absl::StatusCode::kInvalidArgument,
                 "expected a C-order array (fortran_order False), got fortran_order True");
  expect_refused(Path("int32.npy"), absl::StatusCode::kInvalidArgument,
                 "expected dtype float32, float16 or float64, little-endian ('<f4', '<f2', "
                 "'<f8'), got descr '<i4'");
  expect_refused(Path("big_endian.npy"), absl::StatusCode::kInvalidArgument,
                 "expected dtype float32, float16 or float64, little-endian ('<f4', '<f2', "
                 "'<f8'), got descr '>f4'");
  expect_refused(Path("truncated.npy"), absl::StatusCode::kInvalidArgument,
                 "truncated data (expected 96 bytes for shape (2, 3, 4) of 32-bit floats, got 86)");
  expect_refused(Path("truncated_header.npy"), absl::StatusCode::kInvalidArgument, "truncated header");
  expect_refused(Path("text.txt"), absl::StatusCode::kInvalidArgument, "not a .npy file");
  expect_refused(Path("missing.npy"), absl::StatusCode::kNotFound, "cannot open");
}

TEST_F(NpyTest, RefusesBrokenArchivesNamingThem) {
  absl::StatusOr<std::vector<NamedArray>> truncated = ReadNpz(Path("truncated.npz"));
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument) << truncated.status();
  EXPECT_THAT(std::string(truncated.status().message()),
              HasSubstr(Path("truncated.npz") + ": expected a .npz (zip) archive"));
  absl::StatusOr<std::vector<NamedArray>> bad_crc = ReadNpz(Path("bad_crc.npz"));
  EXPECT_EQ(bad_crc.status().code(), absl::StatusCode::kInvalidArgument) << bad_crc.status();
  EXPECT_THAT(std::string(bad_crc.status().message()),
              HasSubstr(Path("bad_crc.npz") + " (member arr_0.npy): cannot read: CRC error"));
  absl::StatusOr<std::vector<NamedArray>> not_npy = ReadNpz(Path("not_npy.npz"));
  EXPECT_EQ(not_npy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(not_npy.status().message()),
              HasSubstr(Path("not_npy.npz") + " (member notes.txt): expected NAME.npy members"));
  absl::StatusOr<std::vector<NamedArray>> missing = ReadNpz(Path("missing.npz"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  absl::StatusOr<std::vector<NamedArray>> npy = ReadNpz(Path("f32.npy"));
  EXPECT_EQ(npy.status().code(), absl::StatusCode::kInvalidArgument) << npy.status();
}

// Peak resident memory of this process, in bytes.
int64_t PeakRss() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return int64_t{u.ru_maxrss} * 1024;
}

TEST_F(NpyTest, AMemberClaimingMoreThanItsArchiveHoldsIsNotAllocated) {
  // The archive's word was taken for the member's size: 3.75 GiB allocated
  // (and zeroed) before one byte was read. Nothing more than the archive can
  // hold is allocated before the bytes arrive; the claim is refused by name.
  const int64_t before = PeakRss();
  for (const bool in_memory : {false, true}) {
    absl::StatusOr<std::vector<NamedArray>> r;
    if (in_memory) {
      std::ifstream f(Path("huge_claim.npz"), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      ASSERT_GT(bytes.size(), 0u);
      r = ParseNpz(bytes, "huge_claim.npz");
    } else {
      r = ReadNpz(Path("huge_claim.npz"));
    }
    const std::string name = in_memory ? std::string("huge_claim.npz") : Path("huge_claim.npz");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_EQ(r.status().message(), name + " (member arr_0.npy): expected 4026531840 bytes as the "
                                           "archive says, got 176");
  }
  EXPECT_LT(PeakRss() - before, int64_t{64} << 20);
}

TEST_F(NpyTest, ParseNpzReadsAnArchiveInMemoryLikeReadNpz) {
  std::ifstream f(Path("mixed.npz"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  absl::StatusOr<std::vector<NamedArray>> parsed = ParseNpz(bytes, "mixed.npz");
  absl::StatusOr<std::vector<NamedArray>> read = ReadNpz(Path("mixed.npz"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(parsed->size(), 3u);
  for (size_t i = 0; i < parsed->size(); ++i) {
    EXPECT_EQ((*parsed)[i].first, (*read)[i].first);
    EXPECT_EQ((*parsed)[i].second.shape, (*read)[i].second.shape);
    EXPECT_EQ((*parsed)[i].second.values, (*read)[i].second.values);
  }
  EXPECT_EQ((*parsed)[0].first, "arr_0");
  EXPECT_EQ((*parsed)[2].first, "mask");
  EXPECT_THAT((*parsed)[2].second.values, ElementsAre(7.0f, 7.0f, 7.0f));
  absl::StatusOr<std::vector<NamedArray>> garbage = ParseNpz("PK\x03\x04 not a zip", "bytes.npz");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr("bytes.npz: expected a .npz (zip) archive"));
}

TEST_F(NpyTest, WrittenFilesReadBackInNumpy) {
  Array a;
  a.shape = {2, 3};
  a.values = {0.5f, -1.0f, 3.25f, 0.125f, 7.0f, -0.0f};
  ASSERT_TRUE(WriteNpy(Path("written.npy"), a).ok());
  int status = 0;
  const std::string out = testing::RunCommand(
      absl::StrCat("/usr/bin/python3 -c \"import numpy as np; a = np.load('", Path("written.npy"),
                   "'); print(a.dtype, a.shape, a.flags.c_contiguous, a.ravel().tolist())\" 2>&1"),
      &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(out, "float32 (2, 3) True [0.5, -1.0, 3.25, 0.125, 7.0, -0.0]\n");
  absl::StatusOr<Array> back = ReadNpy(Path("written.npy"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, a.shape);
  EXPECT_EQ(back->values, a.values);
}

TEST(NaturalLessTest, OrdersDigitRunsByValue) {
  std::vector<std::string> names = {"layer_10.npy", "layer_2.npy", "layer_1.npy", "b.npy",
                                    "a10b2.npy", "a10b10.npy", "a9.npy", "layer_02.npy"};
  std::sort(names.begin(), names.end(), NaturalLess);
  EXPECT_THAT(names, ElementsAre("a9.npy", "a10b2.npy", "a10b10.npy", "b.npy", "layer_1.npy",
                                 "layer_02.npy", "layer_2.npy", "layer_10.npy"));
  EXPECT_FALSE(NaturalLess("x", "x"));
}

}  // namespace
}  // namespace attnroll::npy
