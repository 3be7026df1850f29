// PNG and JPEG files: written here and read by Pillow, written by Pillow and
// read here (Debian's /usr/bin/python3 with python3-pil), and the refusals.
#include "client/render/image.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace attnroll::render {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/attnroll_image_test_" + std::to_string(::getpid()) + "_" + name;
}

int RunPython(const std::string& script) {
  return std::system(("/usr/bin/python3 -c '" + script + "'").c_str());
}

Image Pattern(int w, int h) {
  Image image(w, h);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = image.At(x, y);
      p[0] = uint8_t(x * 7 + y);
      p[1] = uint8_t(y * 13);
      p[2] = uint8_t((x ^ y) * 3);
    }
  }
  return image;
}

TEST(ImageTest, PngWrittenHereIsReadByPillowWithItsText) {
  const std::string path = TempPath("out.png");
  const Image image = Pattern(37, 23);
  ASSERT_TRUE(WritePng(path, image, {{"attnroll.min", "0.25"}, {"attnroll.colormap", "magma"}}).ok());
  // Pillow's pixels and text chunks, compared in Python with the same pattern.
  EXPECT_EQ(RunPython("from PIL import Image\nimport numpy as np\nim = Image.open(\"" + path +
                      "\")\nassert im.mode == \"RGB\" and im.size == (37, 23), (im.mode, im.size)\n"
                      "a = np.asarray(im).astype(int)\ny, x = np.mgrid[0:23, 0:37]\n"
                      "assert (a[..., 0] == (x * 7 + y) % 256).all()\nassert (a[..., 1] == (y * 13) % 256).all()\n"
                      "assert (a[..., 2] == ((x ^ y) * 3) % 256).all()\n"
                      "assert im.text == {\"attnroll.min\": \"0.25\", \"attnroll.colormap\": \"magma\"}, im.text\n"),
            0);
  absl::StatusOr<Image> back = ReadImage(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->width, 37);
  EXPECT_EQ(back->height, 23);
  EXPECT_EQ(back->rgb, image.rgb);
  std::remove(path.c_str());
}

TEST(ImageTest, PillowsPngAndJpegAreReadHere) {
  const std::string png = TempPath("grey_alpha.png"), jpg = TempPath("in.jpg"), npy = TempPath("jpg.raw");
  // A grey + alpha PNG (expanded to RGB, composited over black) and a JPEG
  // whose decoded pixels Pillow dumps raw (both decode with libjpeg-turbo).
  ASSERT_EQ(RunPython("from PIL import Image\nimport numpy as np\n"
                      "g = np.arange(20 * 10, dtype=np.uint8).reshape(10, 20)\n"
                      "a = np.full((10, 20), 255, np.uint8); a[:, 10:] = 0\n"
                      "Image.fromarray(np.dstack([g, a]), \"LA\").save(\"" + png + "\")\n"
                      "y, x = np.mgrid[0:16, 0:24]\n"
                      "rgb = np.dstack([x * 10, y * 15, (x + y) * 5]).astype(np.uint8)\n"
                      "Image.fromarray(rgb).save(\"" + jpg + "\", quality=90)\n"
                      "open(\"" + npy + "\", \"wb\").write(np.asarray(Image.open(\"" + jpg + "\").convert(\"RGB\")).tobytes())\n"),
            0);
  absl::StatusOr<Image> grey = ReadImage(png);
  ASSERT_TRUE(grey.ok()) << grey.status();
  ASSERT_EQ(grey->width, 20);
  ASSERT_EQ(grey->height, 10);
  EXPECT_EQ(grey->At(3, 2)[0], 43);
  EXPECT_EQ(grey->At(3, 2)[1], 43);
  EXPECT_EQ(grey->At(3, 2)[2], 43);
  EXPECT_EQ(grey->At(15, 2)[0], 0);  // transparent: black

  absl::StatusOr<Image> jpeg = ReadImage(jpg);
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  ASSERT_EQ(jpeg->width, 24);
  ASSERT_EQ(jpeg->height, 16);
  std::ifstream raw(npy, std::ios::binary);
  std::string expected((std::istreambuf_iterator<char>(raw)), std::istreambuf_iterator<char>());
  ASSERT_EQ(expected.size(), jpeg->rgb.size());
  int max_diff = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(int(uint8_t(expected[i])) - int(jpeg->rgb[i])));
  }
  EXPECT_LE(max_diff, 1);  // the same decoder; at most a rounding step apart
  for (const std::string& p : {png, jpg, npy}) std::remove(p.c_str());
}

TEST(ImageTest, Refusals) {
  absl::StatusOr<Image> missing = ReadImage("/nonexistent/in.png");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "/nonexistent/in.png: cannot open");

  const std::string text = TempPath("not_an_image.png");
  std::ofstream(text) << "hello, world";
  absl::StatusOr<Image> not_image = ReadImage(text);
  EXPECT_EQ(not_image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(not_image.status().message(), text + ": expected a PNG or JPEG image, got 8 bytes of neither");

  // A PNG signature with nothing after it, and a cut JPEG.
  const std::string cut_png = TempPath("cut.png"), cut_jpg = TempPath("cut.jpg");
  std::ofstream(cut_png, std::ios::binary) << std::string("\x89PNG\r\n\x1a\n", 8);
  absl::StatusOr<Image> bad_png = ReadImage(cut_png);
  EXPECT_EQ(bad_png.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(bad_png.status().message()).rfind(cut_png + ": not a readable PNG: ", 0), 0u)
      << bad_png.status();
  std::ofstream(cut_jpg, std::ios::binary) << std::string("\xff\xd8\xff\xe0\x00\x10JFIF", 10);
  absl::StatusOr<Image> bad_jpg = ReadImage(cut_jpg);
  EXPECT_EQ(bad_jpg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(bad_jpg.status().message()).rfind(cut_jpg + ": JPEG does not decode: ", 0), 0u)
      << bad_jpg.status();

  absl::Status unwritable = WritePng("/nonexistent/out.png", Pattern(2, 2));
  EXPECT_EQ(unwritable.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(unwritable.message(), "/nonexistent/out.png: cannot write (No such file or directory)");
  absl::Status too_wide = WritePng(TempPath("wide.png"), Image(kMaxImageSide + 1, 1));
  EXPECT_EQ(too_wide.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_wide.message(), TempPath("wide.png") + ": expected an image of 1 to 8192 pixels a side, got 8193 x 1");
  for (const std::string& p : {text, cut_png, cut_jpg}) std::remove(p.c_str());
}

}  // namespace
}  // namespace attnroll::render
