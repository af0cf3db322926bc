# run.cmake — runs the C then the Lua benchmark and checks their output.
#   cmake -DBENCH_CORE=<exe> -DLUA=<lua5.4 or empty> -DSRC=<source dir>
#         -DBIN=<build dir> -DOUT=<results.jsonl> -DSMOKE=0|1 [-DPRELOAD=<lib>]
#         -P bench/run.cmake
# With -DCHECK_ONLY=1 it only checks an existing OUT.
# Every line of OUT must be a JSON object with name, params, ns_per_op
# (median/min/max), allocs_per_op and bytes_per_op; nothing about timing is
# asserted.
cmake_minimum_required(VERSION 3.16)

set(flags --out ${OUT})
if(SMOKE)
  list(APPEND flags --smoke)
endif()

# Which tree the numbers are from (read-only git queries).
if(NOT CHECK_ONLY)
  find_program(GIT git)
  if(GIT AND EXISTS ${SRC}/.git)
    execute_process(COMMAND ${GIT} -C ${SRC} rev-parse --short HEAD
      OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    execute_process(COMMAND ${GIT} -C ${SRC} status --porcelain --untracked-files=no
      OUTPUT_VARIABLE dirty ERROR_QUIET)
    string(REGEX MATCHALL "\n" dirty_lines "${dirty}")
    list(LENGTH dirty_lines ndirty)
    message("bench: tree ${head}, ${ndirty} tracked file(s) modified")
  endif()
endif()

if(CHECK_ONLY)
  set(BENCH_CORE "")
  set(LUA "")
else()
  file(REMOVE ${OUT})
endif()
if(BENCH_CORE)
execute_process(COMMAND ${BENCH_CORE} ${flags} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "bench: bench_core failed (${rc})")
endif()
endif()

if(LUA)
  message("")
  set(ENV{LUA_PATH} "${SRC}/lua/?.lua;${SRC}/lua/?/init.lua;;")
  set(ENV{LUA_CPATH} "${BIN}/lua/?.so;;")
  if(PRELOAD)
    set(ENV{LD_PRELOAD} "${PRELOAD}")
    set(ENV{ASAN_OPTIONS} "detect_leaks=0")
  endif()
  execute_process(COMMAND ${LUA} ${SRC}/bench/bench.lua ${flags} RESULT_VARIABLE rc)
  unset(ENV{LD_PRELOAD})
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "bench: bench.lua failed (${rc})")
  endif()
elseif(NOT CHECK_ONLY)
  message("bench: the Lua module is not built; Lua benchmark skipped")
endif()

# Check the JSON lines (string(JSON) needs CMake 3.19).
file(READ ${OUT} text)
if(CMAKE_VERSION VERSION_LESS 3.19)
  message("bench: CMake < 3.19, JSON lines not checked")
  message("bench: results in ${OUT}")
  return()
endif()
set(count 0)
while(NOT text STREQUAL "")
  string(FIND "${text}" "\n" nl)
  if(nl EQUAL -1)
    message(FATAL_ERROR "bench: ${OUT}: last line has no newline")
  endif()
  string(SUBSTRING "${text}" 0 ${nl} line)
  math(EXPR next "${nl} + 1")
  string(SUBSTRING "${text}" ${next} -1 text)
  math(EXPR count "${count} + 1")
  string(JSON type ERROR_VARIABLE jerr TYPE "${line}")
  if(jerr OR NOT type STREQUAL "OBJECT")
    message(FATAL_ERROR "bench: ${OUT} line ${count} is not a JSON object: ${jerr}\n${line}")
  endif()
  foreach(path "name" "params" "ns_per_op;median" "ns_per_op;min" "ns_per_op;max"
          "allocs_per_op" "bytes_per_op")
    string(JSON value ERROR_VARIABLE jerr GET "${line}" ${path})
    if(jerr)
      message(FATAL_ERROR "bench: ${OUT} line ${count} lacks ${path}: ${jerr}\n${line}")
    endif()
  endforeach()
endwhile()
if(count EQUAL 0)
  message(FATAL_ERROR "bench: ${OUT} is empty")
endif()
message("")
message("bench: ${count} JSON lines ok")
message("bench: results (one JSON object per case per line): ${OUT}")
