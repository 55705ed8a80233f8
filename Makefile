# loramux build. `make` builds build/loramux; `make test` installs what is missing, builds and
# runs every test (C unit tests normally and under ASan+UBSan, then the end-to-end suite).

CC       ?= cc
FIXTURES ?= $(abspath ../shared/fixtures)
PYTHON   ?= /usr/bin/python3

PKGS     := libopenblas-dev libpcre2-dev libcjson-dev libmicrohttpd-dev libuv1-dev nettle-dev \
            libcmocka-dev python3-pytest pkg-config gcc make
PCLIBS   := openblas libpcre2-8 libcjson libmicrohttpd libuv nettle

WARN     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter
INC      := -Icore -Icore/kernels -Iadapters -Iserver -Itools
PCCFLAGS  = $(shell pkg-config --cflags $(PCLIBS) 2>/dev/null)
PCLDLIBS  = $(shell pkg-config --libs $(PCLIBS) 2>/dev/null) -lm -lpthread
OPT      ?= -O2 -g -march=native -fopenmp-simd
SANFLAGS := -O1 -g -fopenmp-simd -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

LIB_SRC  := $(wildcard core/*.c core/kernels/*.c adapters/*.c tools/*.c) $(filter-out server/main.c,$(wildcard server/*.c))
APP_SRC  := server/main.c
SUP_SRC  := $(wildcard tests/support/*.c)
TEST_SRC := $(wildcard tests/unit/test_*.c)

LIB_OBJ  := $(LIB_SRC:%.c=build/obj/%.o)
SUP_OBJ  := $(SUP_SRC:%.c=build/obj/%.o)
TESTS    := $(TEST_SRC:tests/unit/%.c=build/tests/%)
ASAN_LIB := $(LIB_SRC:%.c=build/asan/obj/%.o)
ASAN_SUP := $(SUP_SRC:%.c=build/asan/obj/%.o)
ASAN_TESTS := $(TEST_SRC:tests/unit/%.c=build/asan/tests/%)

.PHONY: all deps test unit-test asan-test e2e-test clean bench format
all: deps
	@$(MAKE) --no-print-directory build/loramux

# apt_install(PACKAGES): installs those not yet installed; does nothing when all are there.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

# Installs the Debian packages the build and the tests need (apt-get; idempotent).
deps:
	$(call apt_install,$(PKGS))

build/obj/%.o: %.c $(wildcard core/*.h core/kernels/*.h adapters/*.h server/*.h tools/*.h tests/support/*.h bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(OPT) $(INC) -Itests/support $(PCCFLAGS) -c $< -o $@

build/asan/obj/%.o: %.c $(wildcard core/*.h core/kernels/*.h adapters/*.h server/*.h tools/*.h tests/support/*.h bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(SANFLAGS) $(INC) -Itests/support $(PCCFLAGS) -c $< -o $@

build/loramux: $(LIB_OBJ) build/obj/server/main.o
	$(CC) $(OPT) $^ -o $@ $(PCLDLIBS)

build/tests/%: build/obj/tests/unit/%.o $(LIB_OBJ) $(SUP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $^ -o $@ $(PCLDLIBS) -lcmocka

build/asan/tests/%: build/asan/obj/tests/unit/%.o $(ASAN_LIB) $(ASAN_SUP)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $^ -o $@ $(PCLDLIBS) -lcmocka

# Each unit-test binary is its own process, so a crash fails one module, not the run.
unit-test: build/loramux $(TESTS)
	@fail=0; for t in $(TESTS); do \
	  echo "== $$t"; LORAMUX_FIXTURES=$(FIXTURES) LORAMUX_BIN=$(abspath build/loramux) $$t || fail=1; \
	done; exit $$fail

asan-test: $(ASAN_TESTS)
	@fail=0; for t in $(ASAN_TESTS); do \
	  echo "== $$t (asan+ubsan)"; \
	  ASAN_OPTIONS=detect_leaks=1 OPENBLAS_NUM_THREADS=1 LORAMUX_FIXTURES=$(FIXTURES) $$t || fail=1; \
	done; exit $$fail

# Benchmarks: not part of `make test`; numbers vary ±40 % between runs on these machines.
# See bench/README.md. Every bench/bench_*.c is a kernel bench run in turn, except
# bench_membw.c, a tool of the serving bench (as is bench/loadgen.c).
BENCH_SRC := $(filter-out bench/bench_membw.c,$(wildcard bench/bench_*.c))
BENCHES   := $(BENCH_SRC:bench/%.c=build/bench/%)
build/bench/%: build/obj/bench/%.o $(LIB_OBJ) $(SUP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $^ -o $@ $(PCLDLIBS)

# The serving bench's own programs (libuv, cJSON, pthreads; not the library).
SERVE_TOOLS := build/bench/loadgen build/bench/bench_membw
build/bench/loadgen build/bench/bench_membw: build/bench/%: build/obj/bench/%.o
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $^ -o $@ $(PCLDLIBS)

# gnuplot draws the serving bench's plot; installed like `make deps` (idempotent). Without it
# the bench skips the plot and says so.
BENCH_PKGS := gnuplot-nox
bench-deps:
	$(call apt_install,$(BENCH_PKGS))

# Then the Python benches of the server (tests/e2e helpers; a few minutes each at most),
# last the serving bench (bench/bench_serve.py, ~15 minutes with --quick: every SmolLM
# scenario and TinyLlama's base ones; `make bench-full` or BENCH_FULL=1 runs them all).
PY_BENCHES := bench/bench_upload.py bench/bench_registry.py
SERVE_BENCH_ARGS ?= $(if $(BENCH_FULL),,--quick)
# Synthetic models and adapters come from `build/loramux synth-model` / `synth-adapter`.
bench: $(BENCHES) $(SERVE_TOOLS) build/loramux
	@$(MAKE) --no-print-directory bench-deps || echo "bench-deps failed: the serving bench will skip its plot"
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done
	@for b in $(PY_BENCHES); do echo "== $$b"; \
	  LORAMUX_FIXTURES=$(FIXTURES) LORAMUX_BIN=$(abspath build/loramux) $(PYTHON) $$b || exit 1; done
	@echo "== bench/bench_serve.py $(SERVE_BENCH_ARGS)"; \
	  LORAMUX_FIXTURES=$(FIXTURES) LORAMUX_BIN=$(abspath build/loramux) \
	  $(PYTHON) bench/bench_serve.py $(SERVE_BENCH_ARGS)

bench-full:
	@$(MAKE) --no-print-directory bench BENCH_FULL=1

.PHONY: bench-deps bench-full

e2e-test: build/loramux
	LORAMUX_FIXTURES=$(FIXTURES) LORAMUX_BIN=$(abspath build/loramux) \
	  $(PYTHON) -m pytest -q tests/e2e

# The docker test (tests/docker/run.sh, run by tests/e2e/test_docker.py) needs a Docker engine,
# or podman with debootstrap to make its base image; where they cannot be installed or cannot
# run containers, that test skips and says why.
test: deps
	@$(MAKE) --no-print-directory docker-deps || echo "docker-deps failed: the docker test will skip"
	$(MAKE) unit-test
	$(MAKE) asan-test
	$(MAKE) e2e-test

# `make run`: builds, makes sure $(RUN_MODEL) holds a model (SmolLM2-135M-Instruct downloaded
# and checked against pinned sha256 sums, or offline a synthetic stand-in whose output is
# meaningless; see tools/default-model.sh), then serves it on port 8080. Other settings come
# from LORAMUX_* variables (README, "Configuration"), e.g. LORAMUX_PORT=9000 make run.
RUN_MODEL ?= models/default
RUN_PKGS  := curl
run: all
	$(call apt_install,$(RUN_PKGS))
	@LORAMUX_BIN=$(abspath build/loramux) LORAMUX_FIXTURES=$(FIXTURES) \
	  tools/default-model.sh $(RUN_MODEL)
	exec build/loramux serve --model $(RUN_MODEL)

# What the docker test needs on a machine without a Docker engine (apt-get; idempotent).
DOCKER_PKGS := podman runc debootstrap curl
docker-deps:
	$(call apt_install,$(DOCKER_PKGS))

# Builds docker/Dockerfile and checks the image end to end (docker, else podman).
docker-test: build/loramux
	LORAMUX_FIXTURES=$(FIXTURES) LORAMUX_BIN=$(abspath build/loramux) tests/docker/run.sh

.PHONY: run docker-deps docker-test

clean:
	rm -rf build
