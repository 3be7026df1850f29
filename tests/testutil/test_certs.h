// Certificates made at test time by tests/testutil/make_test_certs.sh (the
// openssl command) in a fresh temporary directory: two unrelated CAs, server
// certificates for localhost / 127.0.0.1 / ::1 from each, client certificates
// alice and bob from the first CA and mallory from the other. Files stay
// until the object goes.
#ifndef ATTNROLL_TESTS_TESTUTIL_TEST_CERTS_H_
#define ATTNROLL_TESTS_TESTUTIL_TEST_CERTS_H_

#include <stdlib.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/testutil/run_command.h"

namespace attnroll::testing {

class TestCerts {
 public:
  // Check ok() (and error()) before use.
  TestCerts() {
    char dir[] = "/tmp/attnroll_certs_XXXXXX";
    if (mkdtemp(dir) == nullptr) {
      error_ = "mkdtemp failed";
      return;
    }
    dir_ = dir;
    int status = 0;
    error_ = RunCommand(std::string(ATTNROLL_SOURCE_DIR "/tests/testutil/make_test_certs.sh ") + dir_ +
                            " 2>&1",
                        &status);
    if (status == 0) error_.clear();
    if (status != 0 && error_.empty()) error_ = "make_test_certs.sh failed";
  }
  ~TestCerts() {
    if (!dir_.empty()) {
      int status = 0;
      RunCommand("rm -rf " + dir_, &status);
    }
  }
  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }
  // DIR/NAME: "ca.pem", "server.key", "alice.pem", ...
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }
  // Writes `contents` to `path` through a rename, as a rotation should.
  static void Replace(const std::string& path, const std::string& contents) {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << contents;
    }
    std::rename(tmp.c_str(), path.c_str());
  }

 private:
  std::string dir_;
  std::string error_;
};

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_TEST_CERTS_H_
