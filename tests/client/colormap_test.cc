// The colour tables against matplotlib itself (Debian's /usr/bin/python3 with
// python3-matplotlib, run at test time): every entry of every map, the bytes
// of bytes=True, and the value -> entry rule on edge values.
#include "client/render/colormap.h"

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnroll::render {
namespace {

// Runs /usr/bin/python3 -c `script` and returns its stdout.
std::string RunPython(const std::string& script) {
  const std::string command = "/usr/bin/python3 -c '" + script + "'";
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << command;
  return out;
}

TEST(ColormapTest, NamesAndRefusal) {
  EXPECT_EQ(ColormapNames(), "viridis, magma, inferno, plasma, gray or coolwarm");
  absl::StatusOr<Colormap> bad = FindColormap("jet", "--colormap");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "--colormap: expected viridis, magma, inferno, plasma, gray or coolwarm, got 'jet'");
  ASSERT_TRUE(FindColormap("magma", "x").ok());
  EXPECT_STREQ(FindColormap("magma", "x")->name, "magma");
  EXPECT_TRUE(FindColormap("coolwarm", "x")->diverging);
  EXPECT_FALSE(FindColormap("gray", "x")->diverging);
}

TEST(ColormapTest, TablesEqualMatplotlibs) {
  for (const Colormap& map : Colormaps()) {
    SCOPED_TRACE(map.name);
    // Floats as repr (shortest round-trip), then the bytes of bytes=True.
    const std::string out = RunPython(
        "import numpy as np\nfrom matplotlib import colormaps\nc = colormaps[\"" + std::string(map.name) +
        "\"]\nassert c.N == 256\nfor row in c(np.arange(256))[:, :3]: print(*[repr(float(v)) for v in row])\n"
        "for row in c(np.arange(256), bytes=True)[:, :3]: print(*[int(v) for v in row])\n");
    std::istringstream in(out);
    for (int i = 0; i < 256; ++i) {
      double r, g, b;
      ASSERT_TRUE(in >> r >> g >> b) << "entry " << i;
      EXPECT_EQ(map.table[i][0], r) << "entry " << i;
      EXPECT_EQ(map.table[i][1], g) << "entry " << i;
      EXPECT_EQ(map.table[i][2], b) << "entry " << i;
    }
    for (int i = 0; i < 256; ++i) {
      int r, g, b;
      ASSERT_TRUE(in >> r >> g >> b) << "byte entry " << i;
      EXPECT_EQ(ColormapBytes(map, i), (Rgb{uint8_t(r), uint8_t(g), uint8_t(b)})) << "entry " << i;
    }
  }
}

TEST(ColormapTest, ValueToEntryIsMatplotlibs) {
  const std::vector<double> values = {0.0,        1e-12,     1.0 / 256, 1.0 / 256 - 1e-12, 0.25, 0.5,
                                      0.5 - 1e-9, 0.75,      0.999,     255.0 / 256,       1.0 - 1e-15,
                                      1.0,        0.3333333, 0.1,       0.9};
  std::string list;
  for (double v : values) {
    char b[64];
    std::snprintf(b, sizeof(b), "%s%.17g", list.empty() ? "" : ", ", v);
    list += b;
  }
  const std::string out = RunPython(
      "import numpy as np\nfrom matplotlib import colormaps\nc = colormaps[\"viridis\"]\n"
      "x = np.array([" + list + "])\nfor row in c(x, bytes=True)[:, :3]: print(*[int(v) for v in row])\n");
  std::istringstream in(out);
  const Colormap viridis = Colormaps()[0];
  for (double v : values) {
    int r, g, b;
    ASSERT_TRUE(in >> r >> g >> b);
    EXPECT_EQ(ColormapColor(viridis, v), (Rgb{uint8_t(r), uint8_t(g), uint8_t(b)})) << v;
  }
  EXPECT_EQ(ColormapIndex(0.0), 0);
  EXPECT_EQ(ColormapIndex(1.0), 255);
  EXPECT_EQ(ColormapIndex(0.5), 128);
  EXPECT_EQ(ColormapIndex(-0.1), 0);
  EXPECT_EQ(ColormapIndex(2.0), 255);
}

}  // namespace
}  // namespace attnroll::render
