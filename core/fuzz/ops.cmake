# ops.cmake — the operation-sequence fuzz target (fuzz_ops.c) and its replay
# test. Included from core/fuzz/CMakeLists.txt:
#
#   include(${CMAKE_CURRENT_LIST_DIR}/ops.cmake)
#
# Needs the targets/functions of the top-level build (scsictl_static,
# PkgConfig::UUID, Threads::Threads, scsictl_sanitize). Paths are relative to
# this file, so it works from any including directory.
#
# * fuzz_ops (clang only): libFuzzer + ASan + UBSan. The core's sources are
#   compiled into the target with -fsanitize=fuzzer-no-link so libFuzzer sees
#   their coverage (the regular scsictl_static is not instrumented).
#     cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang
#     cmake --build build-fuzz --target fuzz_ops
#     build-fuzz/core/fuzz/fuzz_ops -max_total_time=600 -max_len=512 \
#         <workdir> core/fuzz/corpus_ops
#   or `cmake --build build-fuzz --target fuzz-ops-run` (SCSICTL_FUZZ_SECONDS,
#   default 60), which merges new finds into a work dir under the build tree.
#
# * fuzz_ops_replay (any compiler, gcc included): the same file with a plain
#   main() (-DSCSICTL_FUZZ_REPLAY_MAIN) that runs every input of
#   corpus_ops/ (seeds, saved finds and crash reproducers) through the target;
#   registered with ctest as c_fuzz_ops_replay. Any property violation
#   abort()s, so the test fails.

set(SCSICTL_FUZZ_OPS_DIR ${CMAKE_CURRENT_LIST_DIR})
file(GLOB SCSICTL_FUZZ_OPS_CORE_SOURCES ${SCSICTL_FUZZ_OPS_DIR}/../src/*.c)

if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  set(SCSICTL_FUZZ_SECONDS 60 CACHE STRING "seconds of the fuzz-ops-run target")
  add_executable(fuzz_ops ${SCSICTL_FUZZ_OPS_DIR}/fuzz_ops.c ${SCSICTL_FUZZ_OPS_CORE_SOURCES})
  target_include_directories(fuzz_ops PRIVATE ${SCSICTL_FUZZ_OPS_DIR}/../include
                                              ${SCSICTL_FUZZ_OPS_DIR}/../src)
  target_link_libraries(fuzz_ops PRIVATE PkgConfig::UUID Threads::Threads)
  target_compile_options(fuzz_ops PRIVATE -g -O1 -fno-omit-frame-pointer
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
  target_link_options(fuzz_ops PRIVATE -fsanitize=fuzzer,address,undefined)
  add_custom_target(fuzz-ops-run
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/corpus_ops_work
    COMMAND $<TARGET_FILE:fuzz_ops> -max_total_time=${SCSICTL_FUZZ_SECONDS} -max_len=512
            -print_final_stats=1 -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/
            ${CMAKE_CURRENT_BINARY_DIR}/corpus_ops_work ${SCSICTL_FUZZ_OPS_DIR}/corpus_ops
    DEPENDS fuzz_ops
    USES_TERMINAL)
endif()

add_executable(fuzz_ops_replay ${SCSICTL_FUZZ_OPS_DIR}/fuzz_ops.c)
target_compile_definitions(fuzz_ops_replay PRIVATE SCSICTL_FUZZ_REPLAY_MAIN)
target_link_libraries(fuzz_ops_replay PRIVATE scsictl_static)
if(COMMAND scsictl_sanitize)
  scsictl_sanitize(fuzz_ops_replay)
endif()
if(SCSICTL_BUILD_TESTS)
  add_test(NAME c_fuzz_ops_replay
    COMMAND fuzz_ops_replay ${SCSICTL_FUZZ_OPS_DIR}/corpus_ops)
  set_tests_properties(c_fuzz_ops_replay PROPERTIES TIMEOUT 300)
endif()
