// Must not compile: the math knows no protobuf.
#include <google/protobuf/message.h>
