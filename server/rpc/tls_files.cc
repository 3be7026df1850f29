#include "server/rpc/tls_files.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace attnroll::rpc {
namespace {

constexpr size_t kMaxPemBytes = size_t{1} << 20;

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& flag) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::string out;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    out.append(buffer, n);
    if (out.size() > kMaxPemBytes) {
      std::fclose(f);
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path, ": larger than ", kMaxPemBytes, " bytes"));
    }
  }
  std::fclose(f);
  return out;
}

// Every certificate of a PEM text, in order.
std::vector<X509*> Certificates(const std::string& pem) {
  std::vector<X509*> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.push_back(x);
  BIO_free(bio);
  ERR_clear_error();  // the read that ended the loop
  return out;
}

// No passphrase prompt on a terminal: an encrypted key simply does not load.
int NoPassphrase(char*, int, int, void*) { return 0; }

std::string Utc(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  return absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}


// The three files' bytes (the CA's empty when there is none).
struct PemTexts {
  std::string cert, key, ca;
};

absl::StatusOr<PemTexts> ReadAll(const TlsFiles& files) {
  PemTexts t;
  for (const auto& [path, flag, text] : {std::tuple{&files.cert, &files.cert_flag, &t.cert},
                                         std::tuple{&files.key, &files.key_flag, &t.key},
                                         std::tuple{&files.client_ca, &files.ca_flag, &t.ca}}) {
    if (path->empty()) continue;
    absl::StatusOr<std::string> read = ReadFile(*path, *flag);
    if (!read.ok()) return read.status();
    *text = *std::move(read);
  }
  return t;
}

TlsMaterial::Digest DigestOf(const PemTexts& t) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  for (const std::string* bytes : {&t.cert, &t.key, &t.ca}) {
    const uint64_t size = bytes->size();  // lengths too: no two splits give one digest
    EVP_DigestUpdate(md, &size, sizeof(size));
    EVP_DigestUpdate(md, bytes->data(), bytes->size());
  }
  TlsMaterial::Digest d;
  EVP_DigestFinal_ex(md, d.data(), nullptr);
  EVP_MD_CTX_free(md);
  return d;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TlsMaterial>> TlsMaterial::Load(const TlsFiles& files) {
  absl::StatusOr<PemTexts> texts = ReadAll(files);
  if (!texts.ok()) return texts.status();
  std::shared_ptr<TlsMaterial> m(new TlsMaterial());
  m->digest_ = DigestOf(*texts);
  m->cert_pem_ = std::move(texts->cert);
  m->key_pem_ = std::move(texts->key);
  m->ca_pem_ = std::move(texts->ca);
  const std::string* cert_pem = &m->cert_pem_;
  const std::string* key_pem = &m->key_pem_;
  std::vector<X509*> certs = Certificates(*cert_pem);
  if (certs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        files.cert_flag, " ", files.cert, ": no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\")"));
  }
  m->leaf_ = certs[0];
  m->chain_ = sk_X509_new_null();
  for (size_t i = 1; i < certs.size(); ++i) sk_X509_push(m->chain_, certs[i]);

  BIO* bio = BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size()));
  m->key_ = PEM_read_bio_PrivateKey(bio, nullptr, NoPassphrase, nullptr);
  BIO_free(bio);
  ERR_clear_error();
  if (m->key_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        files.key_flag, " ", files.key,
        ": no PEM private key in it (expected \"-----BEGIN PRIVATE KEY-----\"; encrypted keys are "
        "not supported)"));
  }
  if (X509_check_private_key(m->leaf_, m->key_) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(files.key_flag, " ", files.key,
                                                   ": not the private key of the certificate in ",
                                                   files.cert_flag, " ", files.cert));
  }
  if (!files.client_ca.empty()) {
    std::vector<X509*> cas = Certificates(m->ca_pem_);
    if (cas.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          files.ca_flag, " ", files.client_ca,
          ": no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\")"));
    }
    m->cas_ = X509_STORE_new();
    for (X509* ca : cas) {
      X509_STORE_add_cert(m->cas_, ca);  // takes its own reference
      X509_free(ca);
    }
    ERR_clear_error();  // a duplicate certificate in the bundle is not an error
  }
  return std::shared_ptr<const TlsMaterial>(std::move(m));
}

TlsMaterial::~TlsMaterial() {
  if (leaf_ != nullptr) X509_free(leaf_);
  if (chain_ != nullptr) sk_X509_pop_free(chain_, X509_free);
  if (key_ != nullptr) EVP_PKEY_free(key_);
  if (cas_ != nullptr) X509_STORE_free(cas_);
}

std::string TlsMaterial::Describe() const {
  char cn[256] = "", issuer[256] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(leaf_), NID_commonName, cn, sizeof(cn));
  X509_NAME_get_text_by_NID(X509_get_issuer_name(leaf_), NID_commonName, issuer, sizeof(issuer));
  return absl::StrCat("CN=", cn, ", issuer CN=", issuer, ", not after ", Utc(X509_get0_notAfter(leaf_)));
}

bool TlsMaterial::ExpiredOrNotYetValid() const {
  return X509_cmp_current_time(X509_get0_notAfter(leaf_)) < 0 ||
         X509_cmp_current_time(X509_get0_notBefore(leaf_)) > 0;
}

absl::StatusOr<std::unique_ptr<WatchedTlsFiles>> WatchedTlsFiles::Open(TlsFiles files) {
  absl::StatusOr<std::shared_ptr<const TlsMaterial>> m = TlsMaterial::Load(files);
  if (!m.ok()) return m.status();
  std::unique_ptr<WatchedTlsFiles> w(new WatchedTlsFiles(std::move(files)));
  w->tried_ = (*m)->digest();
  w->current_ = *std::move(m);
  return w;
}

std::shared_ptr<const TlsMaterial> WatchedTlsFiles::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

WatchedTlsFiles::Reload WatchedTlsFiles::ReloadIfChanged(std::string* error) {
  absl::StatusOr<std::shared_ptr<const TlsMaterial>> m = TlsMaterial::Load(files_);
  if (m.ok()) {
    absl::MutexLock lock(&mu_);
    if ((*m)->digest() == tried_) return Reload::kUnchanged;
    tried_ = (*m)->digest();
  } else {
    // Which bytes failed: a version is reported once.
    absl::StatusOr<PemTexts> texts = ReadAll(files_);
    absl::MutexLock lock(&mu_);
    if (texts.ok()) {
      const TlsMaterial::Digest d = DigestOf(*texts);
      if (d == tried_) return Reload::kUnchanged;
      tried_ = d;
    }
  }
  if (!m.ok()) {
    // Mid-rotation (a key written before its certificate) the files change
    // again, and the next check loads them.
    *error = std::string(m.status().message());
    return Reload::kFailed;
  }
  absl::MutexLock lock(&mu_);
  current_ = *std::move(m);
  return Reload::kReloaded;
}

}  // namespace attnroll::rpc
