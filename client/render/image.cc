#include "client/render/image.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <png.h>

#include "absl/strings/str_cat.h"

namespace attnroll::render {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

absl::Status CheckSize(const std::string& path, long width, long height) {
  if (width < 1 || height < 1 || width > kMaxImageSide || height > kMaxImageSide) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected an image of 1 to ", kMaxImageSide,
                                                   " pixels a side, got ", width, " x ", height));
  }
  return absl::OkStatus();
}

absl::StatusOr<Image> ReadPng(const std::string& path) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&png, path.c_str())) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a readable PNG: ", png.message));
  }
  if (absl::Status st = CheckSize(path, png.width, png.height); !st.ok()) {
    png_image_free(&png);
    return st;
  }
  png.format = PNG_FORMAT_RGB;
  Image image(static_cast<int>(png.width), static_cast<int>(png.height));
  const png_color black = {0, 0, 0};
  if (!png_image_finish_read(&png, &black, image.rgb.data(), 0, nullptr)) {
    const std::string message = png.message;
    png_image_free(&png);
    return absl::InvalidArgumentError(absl::StrCat(path, ": PNG does not decode: ", message));
  }
  return image;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void JpegErrorExit(j_common_ptr cinfo) {
  JpegError* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// libjpeg's warnings (a truncated file, ...) are not printed on stderr.
void JpegQuiet(j_common_ptr) {}

// No C++ object with a destructor lives across the setjmp: the pixels go to
// a buffer owned by the caller.
bool DecodeJpeg(FILE* f, JpegError* err, jpeg_decompress_struct* cinfo, Image* image,
                const std::string& path, absl::Status* size_status) {
  cinfo->err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = JpegErrorExit;
  err->mgr.output_message = JpegQuiet;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  jpeg_create_decompress(cinfo);
  jpeg_stdio_src(cinfo, f);
  jpeg_read_header(cinfo, TRUE);
  *size_status = CheckSize(path, cinfo->image_width, cinfo->image_height);
  if (!size_status->ok()) {
    jpeg_destroy_decompress(cinfo);
    return true;
  }
  cinfo->out_color_space = JCS_RGB;
  jpeg_start_decompress(cinfo);
  image->width = static_cast<int>(cinfo->output_width);
  image->height = static_cast<int>(cinfo->output_height);
  image->rgb.assign(size_t(image->width) * image->height * 3, 0);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = image->At(0, static_cast<int>(cinfo->output_scanline));
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  jpeg_destroy_decompress(cinfo);
  return true;
}

absl::StatusOr<Image> ReadJpeg(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  JpegError err;
  jpeg_decompress_struct cinfo;
  Image image;
  absl::Status size_status;
  if (!DecodeJpeg(f.get(), &err, &cinfo, &image, path, &size_status)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": JPEG does not decode: ", err.message));
  }
  if (!size_status.ok()) return size_status;
  return image;
}

// As DecodeJpeg: nothing with a destructor lives across the setjmp.
bool EncodePng(FILE* f, png_structp png, png_infop info, png_text* text, int num_text, png_bytep* rows,
               int width, int height) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_init_io(png, f);
  png_set_compression_level(png, 9);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (num_text > 0) png_set_text(png, info, text, num_text);
  png_set_rows(png, info, rows);
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  return true;
}

}  // namespace

absl::StatusOr<Image> ReadImage(const std::string& path) {
  unsigned char magic[8] = {0};
  size_t got = 0;
  {
    File f(std::fopen(path.c_str(), "rb"));
    if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    got = std::fread(magic, 1, sizeof(magic), f.get());
  }
  if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) return ReadPng(path);
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return ReadJpeg(path);
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": expected a PNG or JPEG image, got ", got, " bytes of neither"));
}

absl::Status WritePng(const std::string& path, const Image& image,
                      const std::vector<std::pair<std::string, std::string>>& text) {
  if (absl::Status st = CheckSize(path, image.width, image.height); !st.ok()) return st;
  File f(std::fopen(path.c_str(), "wb"));
  if (!f) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write (", std::strerror(errno), ")"));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    return absl::ResourceExhaustedError(absl::StrCat(path, ": libpng could not start"));
  }
  std::vector<png_text> chunks(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;
    chunks[i].key = const_cast<char*>(text[i].first.c_str());
    chunks[i].text = const_cast<char*>(text[i].second.c_str());
    chunks[i].text_length = text[i].second.size();
  }
  std::vector<png_bytep> rows(image.height);
  for (int y = 0; y < image.height; ++y) rows[y] = const_cast<png_bytep>(image.At(0, y));
  if (!EncodePng(f.get(), png, info, chunks.data(), static_cast<int>(chunks.size()), rows.data(),
                 image.width, image.height)) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError(absl::StrCat(path, ": libpng failed to write"));
  }
  png_destroy_write_struct(&png, &info);
  if (std::fflush(f.get()) != 0 || std::ferror(f.get())) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write (", std::strerror(errno), ")"));
  }
  return absl::OkStatus();
}

}  // namespace attnroll::render
