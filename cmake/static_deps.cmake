# gRPC, protobuf and abseil from Debian's static archives (ATTNROLL_STATIC_DEPS,
# default ON in builds without sanitizers). Needs CMake 3.21 (IMPORTED_TARGETS).
#
# Linked as shared libraries they are ~60 shared objects, and a process spends
# its first ~10 ms in the dynamic loader's symbol lookups over them: `attnroll
# --help` took 11-12 ms, a third of a CLI run (README, "Speed"). Linked from the
# archives (libgrpc-dev, libprotobuf-dev and libabsl-dev ship them) the same
# binary starts in ~4 ms. OpenSSL, zlib, libpng, libjpeg, libzip, OpenBLAS and
# prometheus-cpp stay shared.
#
# The sanitizer trees keep the shared libraries: ThreadSanitizer's
# `called_from_lib` suppressions (tests/tsan/suppressions.txt) name them, and
# neither tree is about start-up time.
#
# How: after find_package, every imported library target of the three
# packages (absl::*, gRPC::*, protobuf::*) gets the archive next to its shared
# library as its location. Their link interfaces already list what the
# archives need (gRPC's exported targets carry its private dependencies too),
# so CMake orders the archives on the link line. A target without an archive
# is a configure error, never a silent mix of static and shared copies of one
# library (two copies of protobuf's descriptor pool in one process abort).
if(ATTNROLL_SANITIZE)
  set(_attnroll_static_default OFF)
else()
  set(_attnroll_static_default ON)
endif()
option(ATTNROLL_STATIC_DEPS "Link gRPC, protobuf and abseil from their static archives"
       ${_attnroll_static_default})
if(ATTNROLL_SANITIZE AND ATTNROLL_STATIC_DEPS)
  # Also a tree configured first without sanitizers (the cached ON stays).
  message(FATAL_ERROR "ATTNROLL_STATIC_DEPS=ON with ATTNROLL_SANITIZE=${ATTNROLL_SANITIZE}: the "
                      "sanitizer trees need the shared libraries (tests/tsan overrides abseil's); "
                      "configure with -DATTNROLL_STATIC_DEPS=OFF or use a fresh build directory")
endif()

function(attnroll_use_static_archives)
  get_property(imported DIRECTORY ${PROJECT_SOURCE_DIR} PROPERTY IMPORTED_TARGETS)
  set(swapped 0)
  foreach(target IN LISTS imported)
    if(NOT target MATCHES "^(absl|gRPC|protobuf)::")
      continue()
    endif()
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(SHARED|UNKNOWN)_LIBRARY$")
      continue()  # executables (protoc plugins) and interface targets
    endif()
    get_target_property(configs ${target} IMPORTED_CONFIGURATIONS)
    set(properties IMPORTED_LOCATION)
    if(configs)
      foreach(config IN LISTS configs)
        string(TOUPPER "${config}" config)
        list(APPEND properties IMPORTED_LOCATION_${config})
      endforeach()
    endif()
    foreach(property IN LISTS properties)
      get_target_property(location ${target} ${property})
      if(NOT location OR location MATCHES "\\.a$")
        continue()
      endif()
      string(REGEX REPLACE "\\.so(\\.[0-9]+)*$" ".a" archive "${location}")
      if(NOT EXISTS "${archive}")
        message(FATAL_ERROR "ATTNROLL_STATIC_DEPS: ${target} has no static archive "
                            "(expected ${archive} next to ${location}); "
                            "configure with -DATTNROLL_STATIC_DEPS=OFF")
      endif()
      set_property(TARGET ${target} PROPERTY ${property} "${archive}")
      math(EXPR swapped "${swapped} + 1")
    endforeach()
  endforeach()
  # protobuf's archive needs zlib (the shared library records it itself).
  if(TARGET protobuf::libprotobuf)
    find_package(ZLIB REQUIRED)
    set_property(TARGET protobuf::libprotobuf APPEND PROPERTY INTERFACE_LINK_LIBRARIES ZLIB::ZLIB)
  endif()
  if(swapped EQUAL 0)
    message(FATAL_ERROR "ATTNROLL_STATIC_DEPS: no gRPC, protobuf or abseil library target found to link "
                        "from its archive")
  endif()
  message(STATUS "ATTNROLL_STATIC_DEPS: ${swapped} gRPC, protobuf and abseil libraries linked from archives")
endfunction()

if(ATTNROLL_STATIC_DEPS)
  attnroll_use_static_archives()
endif()
