#include "server/runtime/token_table.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace attnroll::runtime {
namespace {

TokenTable::Digest Sha256(absl::string_view bytes) {
  TokenTable::Digest d;
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), d.data());
  return d;
}

bool NameChar(char ch) {
  return absl::ascii_isalnum(ch) || ch == '.' || ch == '_' || ch == '-';
}

// What is wrong with a name, or "".
std::string CheckName(absl::string_view name) {
  if (name.size() > kMaxTokenNameBytes) {
    return absl::StrCat("the name is ", name.size(), " characters; expected at most ",
                        kMaxTokenNameBytes);
  }
  if (!std::all_of(name.begin(), name.end(), NameChar)) {
    return "the name has a character outside [A-Za-z0-9._-]";
  }
  if (name == kAnonymousLabel || name == kCertificateLabel) {
    return absl::StrCat("the name \"", name, "\" is reserved (the label of callers without a token)");
  }
  return "";
}

// What is wrong with a token, or "" (never the token itself).
std::string CheckToken(absl::string_view token) {
  if (token.size() < kMinTokenBytes || token.size() > kMaxTokenBytes) {
    return absl::StrCat("the token is ", token.size(), " characters; expected ", kMinTokenBytes,
                        " to ", kMaxTokenBytes);
  }
  for (char ch : token) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x21 || u > 0x7e) return "the token has a character outside printable ASCII";
  }
  return "";
}

absl::StatusOr<std::string> ReadWhole(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read: ", std::strerror(errno)));
  }
  std::string out;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    out.append(buffer, n);
    if (out.size() > kMaxTokenFileBytes) {
      std::fclose(f);
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": larger than ", kMaxTokenFileBytes, " bytes"));
    }
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read"));
  return out;
}

}  // namespace

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text) {
  TokenTable table;
  std::map<std::string, size_t> name_index;
  std::map<Digest, int> seen;  // token digest -> line
  int line_number = 0;
  std::vector<std::pair<Digest, std::string>> entries;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const absl::string_view content = absl::StripAsciiWhitespace(line);
    if (content.empty() || content.front() == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(content, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto bad = [line_number](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": ", what));
    };
    if (fields.size() != 2) {
      return bad(absl::StrCat("expected \"NAME TOKEN\", got ", fields.size(),
                              fields.size() == 1 ? " field" : " fields"));
    }
    if (std::string wrong = CheckName(fields[0]); !wrong.empty()) return bad(wrong);
    if (std::string wrong = CheckToken(fields[1]); !wrong.empty()) return bad(wrong);
    const Digest digest = Sha256(fields[1]);
    if (auto [it, fresh] = seen.emplace(digest, line_number); !fresh) {
      return bad(absl::StrCat("the same token as line ", it->second));
    }
    if (seen.size() > kMaxTokens) return bad(absl::StrCat("more than ", kMaxTokens, " tokens"));
    entries.emplace_back(digest, std::string(fields[0]));
    name_index.emplace(std::string(fields[0]), 0);
  }
  for (auto& [name, index] : name_index) {
    index = table.names_.size();
    table.names_.push_back(name);
  }
  for (const auto& [digest, name] : entries) table.entries_.push_back({digest, name_index[name]});
  return table;
}

const std::string* TokenTable::Find(absl::string_view token) const {
  const Digest d = Sha256(token);
  // Every entry is compared, whatever matched before; the match is selected
  // with a mask, not a branch.
  size_t found = 0;
  size_t any = 0;
  for (const Entry& e : entries_) {
    const size_t equal = static_cast<size_t>(CRYPTO_memcmp(e.digest.data(), d.data(), d.size()) == 0);
    const size_t mask = size_t{0} - equal;  // all ones on a match
    found = (found & ~mask) | (e.name & mask);
    any |= equal;
  }
  return any != 0 ? &names_[found] : nullptr;
}

absl::StatusOr<TokenTable> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWhole(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<TokenTable> table = TokenTable::Parse(*text);
  if (!table.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", table.status().message()));
  }
  return table;
}

TokenStore::TokenStore(std::string path, TokenTable table, TokenTable::Digest file_digest)
    : path_(std::move(path)),
      table_(std::make_shared<const TokenTable>(std::move(table))),
      file_digest_(file_digest) {}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Open(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWhole(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<TokenTable> table = TokenTable::Parse(*text);
  if (!table.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", table.status().message()));
  }
  return std::unique_ptr<TokenStore>(new TokenStore(path, *std::move(table), Sha256(*text)));
}

std::shared_ptr<const TokenTable> TokenStore::table() const {
  absl::MutexLock lock(&mu_);
  return table_;
}

TokenStore::Reload TokenStore::ReloadIfChanged(std::string* error) {
  absl::StatusOr<std::string> text = ReadWhole(path_);
  if (!text.ok()) {
    // Unreadable (moved away mid-rotation, permissions): said every time,
    // since nothing else tells the operator the file is gone.
    *error = std::string(text.status().message());
    return Reload::kFailed;
  }
  const TokenTable::Digest digest = Sha256(*text);
  {
    absl::MutexLock lock(&mu_);
    if (digest == file_digest_) return Reload::kUnchanged;
    file_digest_ = digest;  // a bad version is reported once, not at every check
  }
  absl::StatusOr<TokenTable> table = TokenTable::Parse(*text);
  if (!table.ok()) {
    *error = absl::StrCat(path_, ": ", table.status().message());
    return Reload::kFailed;
  }
  auto next = std::make_shared<const TokenTable>(*std::move(table));
  absl::MutexLock lock(&mu_);
  table_ = std::move(next);
  return Reload::kReloaded;
}

}  // namespace attnroll::runtime
