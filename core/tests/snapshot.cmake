# test_snapshot: snapshots and the durable state file (spec §8).
# Included from core/tests/CMakeLists.txt.
add_executable(test_snapshot ${CMAKE_CURRENT_LIST_DIR}/test_snapshot.c)
target_link_libraries(test_snapshot PRIVATE scsictl_static Threads::Threads)
target_include_directories(test_snapshot PRIVATE ${CMAKE_CURRENT_LIST_DIR})
scsictl_warnings(test_snapshot)
scsictl_sanitize(test_snapshot)
add_test(NAME c_snapshot COMMAND test_snapshot)
set_tests_properties(c_snapshot PROPERTIES TIMEOUT 300)
