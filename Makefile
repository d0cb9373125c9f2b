# Thin wrapper over CMake presets. `make check` and `make demo` work on a fresh clone.
PRESET ?= default
BUILD  := build$(if $(filter-out default,$(PRESET)),-$(PRESET))
PREFIX ?= /usr/local
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps deps-test configure build test-build check check-unit soak demo install package bench fuzz clean

all: build

# What building and running need; the tests' packages come with `make check` (tools/bootstrap).
deps:
	tools/bootstrap

deps-test:
	tools/bootstrap --test

# A first `make` configures without the tests (busted need not be installed); `make check`
# turns them on.
$(BUILD)/CMakeCache.txt:
	cmake --preset $(PRESET) -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DBUILD_TESTING=OFF

configure: $(BUILD)/CMakeCache.txt

build: deps configure
	cmake --build --preset $(PRESET) -j $(JOBS)

test-build: deps-test configure
	cmake --preset $(PRESET) -DBUILD_TESTING=ON >/dev/null
	cmake --build --preset $(PRESET) -j $(JOBS)

check: test-build
	ctest --preset $(PRESET) -j $(JOBS)

# The fast set alone: C tests and specs that start neither the emulator nor the binary.
check-unit: test-build
	ctest --preset $(PRESET) -j $(JOBS) -L unit

# Crash tests at every request boundary (make check samples every 3rd): the emulator's durability
# specs with CMKFLOW_SOAK=1, run by busted directly (ctest's per-test timeout is 300 s).
soak: test-build
	CMKFLOW_SOAK=1 LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
	  LUA_CPATH="$(CURDIR)/$(BUILD)/lua/?.so;;" CMKFLOW_BIN="$(CURDIR)/$(BUILD)/cmkflow" \
	  CMKFLOW_SOURCE_DIR="$(CURDIR)" CMKFLOW_BUILD_DIR="$(CURDIR)/$(BUILD)" \
	  lua5.4 "$$(command -v busted)" --output=TAP spec/emulator_durability_spec.lua spec/emulator_durability_embedded_spec.lua

# The main job against the embedded Azure emulator, no configuration (state under $(BUILD)/demo-state).
demo: build
	CMKFLOW_STATE_DIR=$(BUILD)/demo-state $(BUILD)/cmkflow run workflows/onboard.lua --param customer=contoso

# README.md and docs/ under share/doc/cmkflow, the man page, the bash and zsh completions, the
# program, library, header, cmkflow.pc, Lua modules and stock workflows (PREFIX, default /usr/local).
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# The Debian packages cmkflow and cmkflow-dev (CPack, cmake/Packaging.cmake), built for /usr in
# build-package/; spec/package_spec.lua (make check) installs them into a fresh Debian 12 root.
package: deps
	tools/package/build build-package

bench: build
	tools/bootstrap --test --bench
	tools/bench/run $(BUILD)

# The libFuzzer harnesses (fuzz/), each for FUZZ_SECONDS on its corpus; never part of `check`.
FUZZ_SECONDS ?= 60
FUZZERS ?=
fuzz:
	tools/bootstrap --fuzz
	cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS)
	fuzz/run build-fuzz $(FUZZ_SECONDS) $(FUZZERS)

clean:
	rm -rf build build-debug build-asan build-fuzz build-package
