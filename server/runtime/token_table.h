// Bearer tokens and the client identities they stand for, read from a token
// file: one "NAME TOKEN" per line, blank lines and '#' comments allowed.
//
//   # name     token
//   vit-prod   3f9c1d7e0b8a4c2d9e6f1a0b7c3d5e8f
//   vit-prod   6b1e0d9c8f7a6e5d4c3b2a1908f7e6d5   <- a second token of one name (rotation)
//   batch-jobs 0c4e8a2f6b1d5e9a3c7f0b4d8e2a6c1f
//
// A name is 1-64 of [A-Za-z0-9._-] and is what a call is admitted (its
// client share), logged and counted under; "anonymous" and "certificate" are
// reserved (the metrics label of callers without a token). A token is 16-4096
// printable ASCII characters without spaces (what gRPC metadata can carry);
// the same token twice is refused, one name with several tokens is how a
// token is rotated without downtime. Tokens are kept only as SHA-256 digests
// and looked up in constant time: every entry is compared, each with
// CRYPTO_memcmp over the fixed-size digest, so neither the position of a
// match nor the length of a common prefix shows in the time taken. Errors
// name the line and never echo a token.
#ifndef ATTNROLL_SERVER_RUNTIME_TOKEN_TABLE_H_
#define ATTNROLL_SERVER_RUNTIME_TOKEN_TABLE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace attnroll::runtime {

inline constexpr size_t kMinTokenBytes = 16;
inline constexpr size_t kMaxTokenBytes = 4096;
inline constexpr size_t kMaxTokenNameBytes = 64;
inline constexpr size_t kMaxTokenFileBytes = size_t{1} << 20;
inline constexpr size_t kMaxTokens = 10000;
// Metrics labels of callers without a token name (so never a token name).
inline constexpr char kAnonymousLabel[] = "anonymous";
inline constexpr char kCertificateLabel[] = "certificate";

class TokenTable {
 public:
  using Digest = std::array<uint8_t, 32>;

  // Parses the text of a token file. INVALID_ARGUMENT "line 3: ..." naming
  // what is wrong with the line (never its token).
  static absl::StatusOr<TokenTable> Parse(absl::string_view text);

  // The name `token` stands for, or nullptr. Takes the same time whichever
  // entry matches, or none.
  const std::string* Find(absl::string_view token) const;

  size_t size() const { return entries_.size(); }
  // The distinct names, sorted.
  const std::vector<std::string>& names() const { return names_; }

 private:
  struct Entry {
    Digest digest;
    size_t name;  // index into names_
  };
  std::vector<Entry> entries_;
  std::vector<std::string> names_;
};

// Reads and parses a token file; errors start with the path
// ("/etc/attnroll/tokens: line 3: ...", "/etc/attnroll/tokens: cannot read: ...").
absl::StatusOr<TokenTable> ReadTokenFile(const std::string& path);

// The token file the server runs with, re-read when it changes: a malformed
// or unreadable file on reload keeps the tokens in use (and says why).
class TokenStore {
 public:
  // Reads `path` now; its errors (as ReadTokenFile's) stop the start.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Open(const std::string& path);

  // The table in use; safe from any thread, never null.
  std::shared_ptr<const TokenTable> table() const;

  enum class Reload { kUnchanged, kReloaded, kFailed };
  // Re-reads the file: kUnchanged when its bytes are the same, kReloaded
  // when the new table is in use, kFailed (with `*error`) when the file could
  // not be read or parsed and the previous table stays in use.
  Reload ReloadIfChanged(std::string* error);

  const std::string& path() const { return path_; }

 private:
  TokenStore(std::string path, TokenTable table, TokenTable::Digest file_digest);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenTable> table_ ABSL_GUARDED_BY(mu_);
  TokenTable::Digest file_digest_ ABSL_GUARDED_BY(mu_);  // of the bytes last tried
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_TOKEN_TABLE_H_
