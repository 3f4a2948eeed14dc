# The two commands (README): `make serve` and `make test`.
BUILD_DIR ?= build/release
MODEL ?= models/demo
LISTEN ?= 127.0.0.1:50051
METRICS ?= 127.0.0.1:9464
# The OpenAI-compatible HTTP API (docs/http.md); empty = off.
HTTP ?= 127.0.0.1:8000
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# After the release suite, `make test` runs the sanitizer stages
# (scripts/sanitizer-tests.sh, docs/building.md): `asan` = the clang
# ASan+UBSan build of the unit and integration tests, then its fuzz targets
# (label fuzz); `fuzz` = only the fuzz targets; `tsan` = the TSan build of
# the scheduler, core, sessions and service tests. `make test SANITIZERS=0`
# skips them for a quick local run; `make test SANITIZERS=fuzz` runs only the
# fuzz targets.
SANITIZERS ?= asan tsan

.PHONY: serve test build deps test-venv configure clean container-smoke

deps:
	bash scripts/install-deps.sh

# The tests' virtual environment with the openai SDK (.venv/).
test-venv: deps
	bash scripts/install-test-venv.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

serve: build
	$(BUILD_DIR)/server/tvq-server --model=$(MODEL) --listen=$(LISTEN) --metrics-address=$(METRICS) --http-listen=$(HTTP)

test: build test-venv
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_FLAGS)
ifneq ($(SANITIZERS),0)
	JOBS=$(JOBS) bash scripts/sanitizer-tests.sh $(SANITIZERS)
endif

clean:
	rm -rf $(BUILD_DIR)

# Builds the CPU image with buildah and checks the server running from it
# (docs/deploy.md); `make test` runs it too (ctest label container).
container-smoke:
	nice -n 10 bash deploy/container-smoke.sh
