# Sanitizer and fuzzing builds (deploy/test-sanitizers.sh makes them; README
# "Sanitizers and fuzzing"). Configure a separate tree with clang, e.g.
#
#   CXX=clang++-14 cmake -S . -B build-asan -DATTNROLL_SANITIZE=address,undefined -DATTNROLL_BUILD_FUZZERS=ON
#   CXX=clang++-14 cmake -S . -B build-tsan -DATTNROLL_SANITIZE=thread
#
# ATTNROLL_SANITIZE: "" (none), "address,undefined" or "thread". Every object
# of the tree is instrumented; UBSan aborts on the first report
# (-fno-sanitize-recover=all), so a test that triggers undefined behaviour
# fails. Debian's libraries (gRPC, protobuf, abseil) stay uninstrumented;
# tests/tsan/ makes abseil's locks visible to ThreadSanitizer and leaves
# gRPC's own code unchecked (server/rpc/tsan_handoff.h annotates the
# reactors' hand-offs to gRPC).
#
# ATTNROLL_BUILD_FUZZERS: the libFuzzer targets of tests/fuzz (clang only).
# The tree's objects also get libFuzzer's coverage instrumentation
# (-fsanitize=fuzzer-no-link), so the fuzzers link the same libraries the
# tree's tests run; executables other than the fuzzers do not link libFuzzer.
set(ATTNROLL_SANITIZE "" CACHE STRING "Sanitizers for the whole tree: \"\", address,undefined or thread")
set_property(CACHE ATTNROLL_SANITIZE PROPERTY STRINGS "" "address,undefined" "thread")
option(ATTNROLL_BUILD_FUZZERS "Build the libFuzzer targets of tests/fuzz (clang)" OFF)

if(ATTNROLL_SANITIZE)
  if(NOT ATTNROLL_SANITIZE MATCHES "^(address,undefined|thread)$")
    message(FATAL_ERROR "ATTNROLL_SANITIZE: expected address,undefined or thread, got ${ATTNROLL_SANITIZE}")
  endif()
  add_compile_options(-fsanitize=${ATTNROLL_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${ATTNROLL_SANITIZE})
  # Line tables only: symbolised reports at a fraction of -g's build time.
  # (The instrumentation keeps some `#pragma omp simd` loops scalar; clang
  # says so in a warning that means nothing here.)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    add_compile_options(-gline-tables-only -Wno-pass-failed)
  else()
    add_compile_options(-g1)
  endif()
  # ThreadSanitizer: gRPC's header code stays unchecked like its libraries
  # (tests/tsan/ignorelist.txt says why); inlined frames of a report carry
  # their full names.
  if(ATTNROLL_SANITIZE STREQUAL "thread" AND CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    add_compile_options(-fsanitize-ignorelist=${PROJECT_SOURCE_DIR}/tests/tsan/ignorelist.txt
                        -fdebug-info-for-profiling)
  endif()
endif()

if(ATTNROLL_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "ATTNROLL_BUILD_FUZZERS needs clang (CXX=clang++-14), got ${CMAKE_CXX_COMPILER_ID}")
  endif()
  if(NOT ATTNROLL_SANITIZE STREQUAL "address,undefined")
    message(FATAL_ERROR "ATTNROLL_BUILD_FUZZERS needs -DATTNROLL_SANITIZE=address,undefined")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
