# attnroll_forbid_includes(TARGET ROOM DIR...): the build enforces the rooms.
# For every header under /usr/include/DIR (e.g. grpcpp, google/protobuf), a
# stand-in that stops the compile with an #error is put first on TARGET's
# include path, so `#include <grpcpp/grpcpp.h>` in a room that must not speak
# gRPC is a compile error naming the rule, not a convention.
function(attnroll_forbid_includes target room)
  set(poison ${CMAKE_BINARY_DIR}/forbidden/${target})
  foreach(dir ${ARGN})
    file(GLOB_RECURSE headers RELATIVE /usr/include /usr/include/${dir}/*)
    foreach(h ${headers})
      if(NOT EXISTS ${poison}/${h})
        file(WRITE ${poison}/${h}
             "#error \"${room} must not include <${h}>: see docs/architecture.md (the rooms)\"\n")
      endif()
    endforeach()
  endforeach()
  target_include_directories(${target} BEFORE PRIVATE ${poison})
endfunction()
