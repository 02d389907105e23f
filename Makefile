# nbdfs — one flat Makefile.
#
#   make                 build ./nbdfs (objects under $(BUILD)/)
#   make check           build, then run every test (unit + integration + VM);
#                        ends with "N passed, N failed[, N skipped]"
#   make check-asan      the same suite on an AddressSanitizer/UBSan build
#   make check-unit      unit tests only (fast)
#   make fuzz            libFuzzer targets (clang, ASan+UBSan) in build-fuzz/
#   make fuzz-smoke      each fuzz target ~20 s plus the committed corpus
#   make demo            the README's first command: a local nbdkit, mounted
#   make clean
#
# Sources are picked up by wildcard: a new nbdfs*.c (the program layer at
# the top level), nbdclient/*.c, fuse/*.c, kernelattach/*.c,
# test/unit/test-*.c or test/*.sh needs no Makefile edit.

BUILD    ?= build
CC       ?= gcc
SANITIZE ?=

PKGS     := fuse3 gnutls glib-2.0 gio-2.0 libnl-genl-3.0
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

WARN     := -Wall -Wextra -Wshadow -Wformat=2 -Wno-unused-parameter \
            -Wno-missing-field-initializers
CFLAGS   ?= -O2 -g
ifeq ($(WERROR),1)
WARN     += -Werror
endif
ifeq ($(SANITIZE),fuzz)
CFLAGS   := -O1 -g -fno-omit-frame-pointer \
            -fsanitize=fuzzer-no-link,address,undefined \
            -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=fuzzer,address,undefined
else ifneq ($(SANITIZE),)
CFLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
            -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif
ALL_CFLAGS := -std=gnu11 $(CFLAGS) $(WARN) -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
              -DFUSE_USE_VERSION=35 -DNBDFS_VERSION=\"0.1\" -I. -MMD -MP $(PKG_CFLAGS)
LIBS     := $(PKG_LIBS) -lpthread

PROG_SRC   := $(sort $(wildcard nbdfs*.c))
CLIENT_SRC := $(sort $(wildcard nbdclient/*.c))
FUSE_SRC   := $(sort $(wildcard fuse/*.c))
KERNEL_SRC := $(sort $(wildcard kernelattach/*.c))
UNIT_SRC   := $(sort $(wildcard test/unit/test-*.c))
TOOL_SRC   := $(sort $(wildcard test/tools/*.c))
FUZZ_SRC   := $(sort $(wildcard test/fuzz/fuzz-*.c))

PROG_OBJ   := $(PROG_SRC:%.c=$(BUILD)/%.o)
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/%.o)
FUSE_OBJ   := $(FUSE_SRC:%.c=$(BUILD)/%.o)
KERNEL_OBJ := $(KERNEL_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN   := $(UNIT_SRC:%.c=$(BUILD)/%)
TOOL_BIN   := $(TOOL_SRC:%.c=$(BUILD)/%)
FUZZ_BIN   := $(FUZZ_SRC:%.c=$(BUILD)/%)

LIBCLIENT  := $(BUILD)/libnbdclient.a
LIBKERNEL  := $(BUILD)/libkernelattach.a
LIBFUSE    := $(BUILD)/libfusemode.a

.PHONY: all check check-unit check-asan check-chaos check-valgrind demo bench clean \
        fuzz fuzz-bins fuzz-smoke
all: nbdfs $(UNIT_BIN) $(TOOL_BIN)

# Per-directory log domains (style.md: G_LOG_DOMAIN per directory).
$(PROG_OBJ): $(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DG_LOG_DOMAIN=\"nbdfs\" -c -o $@ $<
$(BUILD)/nbdclient/%.o: nbdclient/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DG_LOG_DOMAIN=\"nbdfs-client\" -c -o $@ $<
$(BUILD)/fuse/%.o: fuse/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DG_LOG_DOMAIN=\"nbdfs-fuse\" -c -o $@ $<
$(BUILD)/kernelattach/%.o: kernelattach/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DG_LOG_DOMAIN=\"nbdfs-kernel\" -c -o $@ $<
$(BUILD)/test/%.o: test/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DG_LOG_DOMAIN=\"nbdfs-test\" -c -o $@ $<

$(LIBCLIENT): $(CLIENT_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^
$(LIBKERNEL): $(KERNEL_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^
$(LIBFUSE): $(FUSE_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# The program layer (nbdfs*.c) over the two mode libraries over nbdclient.
$(BUILD)/nbdfs: $(PROG_OBJ) $(LIBFUSE) $(LIBKERNEL) $(LIBCLIENT)
	$(CC) $(LDFLAGS) -o $@ $(PROG_OBJ) $(LIBFUSE) $(LIBKERNEL) $(LIBCLIENT) \
	  $(LIBS)

# ./nbdfs is the binary of the default build; other builds keep theirs in
# $(BUILD)/nbdfs (tests take the path from $NBDFS).
ifeq ($(BUILD),build)
nbdfs: $(BUILD)/nbdfs
	cp -f $< $@
else
nbdfs: $(BUILD)/nbdfs
endif

$(BUILD)/test/unit/%: $(BUILD)/test/unit/%.o $(LIBFUSE) $(LIBKERNEL) $(LIBCLIENT)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBFUSE) $(LIBKERNEL) $(LIBCLIENT) $(LIBS)
$(BUILD)/test/tools/%: $(BUILD)/test/tools/%.o $(LIBCLIENT)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBCLIENT) $(LIBS)
$(BUILD)/test/fuzz/%: $(BUILD)/test/fuzz/%.o $(LIBCLIENT)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBCLIENT) $(LIBS)

TEST_ENV = NBDFS=$(abspath $(BUILD)/nbdfs) BUILD=$(abspath $(BUILD)) \
           TOOLS=$(abspath $(BUILD)/test/tools) SRCDIR=$(abspath .)

check: all
	$(TEST_ENV) bash test/run-tests.sh $(TESTS)

check-unit: all
	$(TEST_ENV) bash test/run-tests.sh --unit-only

# The VM tests boot a whole kernel; under ASan they would only re-test the
# same userspace code at many times the cost, so check-asan leaves them out.
check-asan:
	$(MAKE) BUILD=build-asan SANITIZE=1 all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	NBDFS_ASAN=1 $(MAKE) BUILD=build-asan SANITIZE=1 check

# Tests ended at random points (timeout, SIGTERM, SIGKILL to the runner)
# must leave no process, mount, loop device or directory behind.
check-chaos: all
	$(TEST_ENV) bash test/chaos-cleanup.sh $(ROUNDS)

check-valgrind: all
	$(TEST_ENV) NBDFS_VALGRIND=1 bash test/run-tests.sh --unit-only

# libFuzzer targets (test/fuzz/README): clang only, own build directory.
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang SANITIZE=fuzz fuzz-bins
fuzz-bins: $(FUZZ_BIN)

fuzz-smoke: fuzz
	bash test/fuzz/run.sh 20

demo: all
	bash scripts/demo.sh

bench: all
	bash scripts/bench.sh

clean:
	rm -rf build build-asan build-fuzz nbdfs

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
