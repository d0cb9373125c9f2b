# Thin wrapper over CMake presets. `make check` and `make demo` work on a fresh clone.
PRESET ?= default
BUILD  := build$(if $(filter-out default,$(PRESET)),-$(PRESET))
PREFIX ?= /usr/local
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps configure build check soak demo install bench clean

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

# Crash tests at every request boundary (make check samples every 3rd): the emulator's durability
# specs with CMKFLOW_SOAK=1, run by busted directly (ctest's per-test timeout is 300 s).
soak: build
	CMKFLOW_SOAK=1 LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
	  LUA_CPATH="$(CURDIR)/$(BUILD)/lua/?.so;;" CMKFLOW_BIN="$(CURDIR)/$(BUILD)/cmkflow" \
	  CMKFLOW_SOURCE_DIR="$(CURDIR)" CMKFLOW_BUILD_DIR="$(CURDIR)/$(BUILD)" \
	  lua5.4 "$$(command -v busted)" --output=TAP spec/emulator_durability_spec.lua spec/emulator_durability_embedded_spec.lua

# The main job against the embedded Azure emulator, no configuration (state under $(BUILD)/demo-state).
demo: build
	CMKFLOW_STATE_DIR=$(BUILD)/demo-state $(BUILD)/cmkflow run workflows/onboard.lua --param customer=contoso

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	tools/bootstrap --bench
	tools/bench/run $(BUILD)

clean:
	rm -rf build build-debug build-asan
