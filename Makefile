# Front door. Everything real happens in CMake; see README.md.
#   make test      install missing Debian packages, build, run every test
#   make demo      install, build, run examples/quickstart.lua
#   make repl      a Lua 5.4 prompt with the module and a simulated VM loaded
#   make sanitize  the same tests built with AddressSanitizer + UBSan
#   make tsan      the C thread and lock tests under ThreadSanitizer
#   make bench     benchmarks (see bench/)
#   make bench-guest  many disks on the booted test guest, serial vs concurrent
#   make guest     build the Linux test guest (kernel + initramfs) into $(BUILD)/guest
#   make fresh-root  make test + make demo in a minimal debootstrapped Debian 12 (root)
#   make dist      release tarball, rockspec and .src.rock of HEAD in $(DIST)
#                  (DIST_URL= the tarball's download address; docs/release.md)
#   make fuzz      libFuzzer on the core's operations and on snapshot import
#                  (clang; FUZZ_SECONDS each, default 600)
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
LUA_ENV = LUA_PATH='$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;' LUA_CPATH='$(abspath $(BUILD))/lua/?.so;;'

.PHONY: all deps build test demo repl sanitize tsan bench bench-guest fuzz clean guest fresh-root dist
DIST ?= $(BUILD)/dist
DIST_URL ?=
FUZZ_SECONDS ?= 600

all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

demo: build
	$(LUA_ENV) lua5.4 examples/quickstart.lua

repl: build
	$(LUA_ENV) lua5.4 examples/repl.lua

sanitize: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSCSICTL_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan --output-on-failure -j $(JOBS) -LE no-sanitize

tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DSCSICTL_TSAN=ON -DSCSICTL_BUILD_LUA=OFF
	cmake --build build-tsan -j $(JOBS)
	ctest --test-dir build-tsan --output-on-failure -R "^c_(threads|lock)$$"

bench: build
	cmake --build $(BUILD) --target bench-run

bench-guest: build
	$(LUA_ENV) lua5.4 bench/bench_guest.lua $(BUILD) $(BENCH_N)

fresh-root:
	@sh scripts/deps.sh ci
	bash scripts/fresh-root.sh $(FRESH_ROOT_FLAGS)

dist:
	sh scripts/dist.sh $(DIST) $(DIST_URL)

guest: deps
	bash scripts/build-guest.sh $(BUILD)/guest

fuzz:
	@sh scripts/deps.sh fuzz
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	  -DSCSICTL_FUZZ=ON -DSCSICTL_BUILD_LUA=OFF -DSCSICTL_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzz_ops fuzz_import
	mkdir -p build-fuzz/work-ops build-fuzz/work-import
	build-fuzz/core/fuzz/fuzz_ops -max_total_time=$(FUZZ_SECONDS) -max_len=512 \
	  -print_final_stats=1 build-fuzz/work-ops core/fuzz/corpus_ops
	build-fuzz/core/fuzz/fuzz_import -max_total_time=$(FUZZ_SECONDS) \
	  -print_final_stats=1 build-fuzz/work-import core/fuzz/corpus_import

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
