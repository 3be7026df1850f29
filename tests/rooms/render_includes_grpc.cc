// Must not compile: the rendering library speaks no gRPC.
#include <grpcpp/grpcpp.h>
