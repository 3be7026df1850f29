// Must not compile: the runtime room knows neither gRPC nor the protos.
#include "attnroll/v1/pass.pb.h"
