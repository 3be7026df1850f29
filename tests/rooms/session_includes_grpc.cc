// Must not compile: the session room may not speak gRPC.
#include <grpcpp/grpcpp.h>
