# Thin wrapper over CMake presets. `make check` and `make demo` work on a fresh clone.
PRESET ?= default
BUILD  := build$(if $(filter-out default,$(PRESET)),-$(PRESET))
PREFIX ?= /usr/local
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps configure build check demo install bench fuzz clean

all: build

deps:
	tools/bootstrap

$(BUILD)/CMakeCache.txt:
	cmake --preset $(PRESET) -DCMAKE_INSTALL_PREFIX=$(PREFIX)

configure: $(BUILD)/CMakeCache.txt

build: deps configure
	cmake --build --preset $(PRESET) -j $(JOBS)

check: build
	ctest --preset $(PRESET) -j $(JOBS)

# The main job against the embedded Azure emulator, no configuration (state under $(BUILD)/demo-state).
demo: build
	CMKFLOW_STATE_DIR=$(BUILD)/demo-state $(BUILD)/cmkflow run workflows/onboard.lua --param customer=contoso

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	tools/bootstrap --bench
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
	rm -rf build build-debug build-asan build-fuzz
