// OpenSSL's libcrypto, for the SHA-256 of the log's Merkle tree only (libpq links it anyway).
// SHA256_Init/Update/Final take a context on the caller's stack: no allocation per hash, which is what
// a million-record flush needs. OpenSSL 3 marks them deprecated in favour of EVP, whose per-hash set-up
// costs 1.6 times as much here; they stay available throughout 3.x.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
