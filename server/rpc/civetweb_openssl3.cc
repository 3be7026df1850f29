// A compatibility library for Debian 12's civetweb (the HTTP server under
// prometheus-cpp's Exposer), built on its own as a shared object whose
// SONAME is "libssl.so".
//
// Debian's libcivetweb1 1.15 is built for the OpenSSL 1.1 API and loads
// OpenSSL at run time: it dlopen()s "libssl.so" and looks up
// SSL_get_peer_certificate, which OpenSSL 3 (Debian 12's libssl3) only has as
// a macro for SSL_get1_peer_certificate. The look-up gives a null pointer,
// and civetweb calls it after every TLS handshake: the process dies on the
// first HTTPS request. The metrics endpoint loads this library (by its path)
// before civetweb starts; the dynamic loader then answers civetweb's
// dlopen("libssl.so") with it (a loaded object matches by SONAME), and
// civetweb's look-ups find the missing function here and every other one in
// libssl.so.3, which this library depends on.
#include <openssl/ssl.h>

#undef SSL_get_peer_certificate

extern "C" X509* SSL_get_peer_certificate(const SSL* ssl) { return SSL_get1_peer_certificate(ssl); }
