// Runs a shell command (the Python references of the tests) and returns its
// standard output; *status is pclose's status (-1 if it could not start).
#ifndef ATTNROLL_TESTS_TESTUTIL_RUN_COMMAND_H_
#define ATTNROLL_TESTS_TESTUTIL_RUN_COMMAND_H_

#include <cstdio>
#include <string>

namespace attnroll::testing {

inline std::string RunCommand(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_RUN_COMMAND_H_
