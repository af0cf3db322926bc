# lua_alloc.cmake — allocation-failure test of the Lua binding (lua_alloc.c).
# Include from lua/CMakeLists.txt (or the top level) after the module:
#
#   include(${PROJECT_SOURCE_DIR}/lua/tests/lua_alloc.cmake)
#
# Builds a C program embedding Lua 5.4 (pkg-config lua5.4) with the module's
# sources and the core linked statically, and registers it with ctest as
# c_lua_alloc. Core allocations are failed through the linker
# (--wrap=malloc/realloc/free): the binding passes no allocator to the core.
# Under SCSICTL_SANITIZE it runs with ASan+UBSan (leaks checked by LSan);
# the plain build also registers a valgrind run when valgrind is present.
find_package(PkgConfig REQUIRED)
pkg_check_modules(LUA54 IMPORTED_TARGET lua5.4)
if(LUA54_FOUND AND SCSICTL_BUILD_TESTS)
  set(SCSICTL_LUA_ALLOC_DIR ${CMAKE_CURRENT_LIST_DIR})
  file(GLOB SCSICTL_LUA_BINDING CONFIGURE_DEPENDS ${SCSICTL_LUA_ALLOC_DIR}/../scsictl/*.c)
  add_executable(lua_alloc ${SCSICTL_LUA_ALLOC_DIR}/lua_alloc.c ${SCSICTL_LUA_BINDING})
  target_include_directories(lua_alloc PRIVATE ${SCSICTL_LUA_ALLOC_DIR}/../scsictl)
  target_link_libraries(lua_alloc PRIVATE scsictl_static PkgConfig::LUA54)
  target_link_options(lua_alloc PRIVATE
    -Wl,--wrap=malloc -Wl,--wrap=realloc -Wl,--wrap=free)
  if(COMMAND scsictl_sanitize)
    scsictl_sanitize(lua_alloc)
  endif()
  add_test(NAME c_lua_alloc COMMAND lua_alloc both)
  set_tests_properties(c_lua_alloc PROPERTIES TIMEOUT 600)
  find_program(VALGRIND valgrind)
  if(VALGRIND AND NOT SCSICTL_SANITIZE AND NOT SCSICTL_TSAN)
    add_test(NAME c_lua_alloc_valgrind
      COMMAND ${VALGRIND} --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite -q
              $<TARGET_FILE:lua_alloc> both)
    set_tests_properties(c_lua_alloc_valgrind PROPERTIES TIMEOUT 1800 LABELS "valgrind;no-sanitize")
  endif()
else()
  message(STATUS "lua5.4 (pkg-config) not found: c_lua_alloc is not built")
endif()
