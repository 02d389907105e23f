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
#   make install         binary, man page, systemd units under $(DESTDIR)$(PREFIX)
#   make uninstall       removes exactly what install wrote
#   make clean
#
# Sources are picked up by wildcard: a new nbdfs*.c (the program layer at
# the top level), nbdclient/*.c, fuse/*.c, kernelattach/*.c, system/*.c,
# test/unit/test-*.c or test/*.sh needs no Makefile edit.

BUILD    ?= build
CC       ?= gcc
SANITIZE ?=
VERSION  := $(shell cat VERSION)

# Installation (GNU conventions). Nothing is written outside $(DESTDIR).
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
DATADIR  ?= $(PREFIX)/share
MANDIR   ?= $(DATADIR)/man
DOCDIR   ?= $(DATADIR)/doc/nbdfs
# systemd looks for units in /etc and /usr/lib (also /usr/local/lib with
# newer versions); a package sets SYSTEMDUNITDIR=/usr/lib/systemd/system.
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL  ?= install

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
              -DFUSE_USE_VERSION=35 -DNBDFS_VERSION=\"$(VERSION)\" -I. -MMD -MP $(PKG_CFLAGS)
LIBS     := $(PKG_LIBS) -lpthread

PROG_SRC   := $(sort $(wildcard nbdfs*.c))
CLIENT_SRC := $(sort $(wildcard nbdclient/*.c))
FUSE_SRC   := $(sort $(wildcard fuse/*.c))
KERNEL_SRC := $(sort $(wildcard kernelattach/*.c))
SYSTEM_SRC := $(sort $(wildcard system/*.c))
UNIT_SRC   := $(sort $(wildcard test/unit/test-*.c))
TOOL_SRC   := $(sort $(wildcard test/tools/*.c))
FUZZ_SRC   := $(sort $(wildcard test/fuzz/fuzz-*.c))

PROG_OBJ   := $(PROG_SRC:%.c=$(BUILD)/%.o)
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/%.o)
FUSE_OBJ   := $(FUSE_SRC:%.c=$(BUILD)/%.o)
KERNEL_OBJ := $(KERNEL_SRC:%.c=$(BUILD)/%.o)
SYSTEM_OBJ := $(SYSTEM_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN   := $(UNIT_SRC:%.c=$(BUILD)/%)
TOOL_BIN   := $(TOOL_SRC:%.c=$(BUILD)/%)
FUZZ_BIN   := $(FUZZ_SRC:%.c=$(BUILD)/%)

LIBCLIENT  := $(BUILD)/libnbdclient.a
LIBKERNEL  := $(BUILD)/libkernelattach.a
LIBFUSE    := $(BUILD)/libfusemode.a
LIBSYSTEM  := $(BUILD)/libsystem.a

.PHONY: all check check-unit check-asan check-chaos check-valgrind demo bench clean \
        fuzz fuzz-bins fuzz-smoke install uninstall soak
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
$(BUILD)/system/%.o: system/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DG_LOG_DOMAIN=\"nbdfs-system\" -c -o $@ $<
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
$(LIBSYSTEM): $(SYSTEM_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# The program layer (nbdfs*.c) over the two mode libraries over nbdclient.
$(BUILD)/nbdfs: $(PROG_OBJ) $(LIBFUSE) $(LIBSYSTEM) $(LIBKERNEL) $(LIBCLIENT)
	$(CC) $(LDFLAGS) -o $@ $(PROG_OBJ) $(LIBFUSE) $(LIBSYSTEM) $(LIBKERNEL) \
	  $(LIBCLIENT) $(LIBS)

# ./nbdfs is the binary of the default build; other builds keep theirs in
# $(BUILD)/nbdfs (tests take the path from $NBDFS).
ifeq ($(BUILD),build)
nbdfs: $(BUILD)/nbdfs
	cp -f $< $@
else
# An empty recipe: without one make would build "nbdfs" from nbdfs.c by
# its implicit rule (and fail without the pkg-config flags).
nbdfs: $(BUILD)/nbdfs
	@:
endif

$(BUILD)/test/unit/%: $(BUILD)/test/unit/%.o $(LIBFUSE) $(LIBSYSTEM) $(LIBKERNEL) $(LIBCLIENT)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBFUSE) $(LIBSYSTEM) $(LIBKERNEL) $(LIBCLIENT) $(LIBS)
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

# The long soak (minutes): test-fuse-soak with a 3-minute write phase and
# the server killed every 5 s. SOAK_SECS=N to change it.
SOAK_SECS ?= 180
soak: all
	$(TEST_ENV) SOAK_SECS=$(SOAK_SECS) SOAK_KILL_EVERY=5 \
	  timeout -k 15 $$(( $(SOAK_SECS) * 4 + 120 )) setsid \
	  bash test/test-fuse-soak.sh

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

# The files install writes, as DIR/NAME:SOURCE:MODE.
INSTALL_FILES := \
  $(BINDIR)/nbdfs:$(BUILD)/nbdfs:755 \
  $(MANDIR)/man1/nbdfs.1:doc/nbdfs.1:644 \
  $(SYSTEMDUNITDIR)/nbdfs@.service:system/units/nbdfs@.service:644 \
  $(DOCDIR)/README.md:README.md:644 \
  $(DOCDIR)/NEWS:NEWS:644

install: $(BUILD)/nbdfs
	@set -e; for f in $(INSTALL_FILES); do \
	  dst=$${f%%:*}; rest=$${f#*:}; src=$${rest%%:*}; mode=$${rest##*:}; \
	  echo "  INSTALL $(DESTDIR)$$dst"; \
	  $(INSTALL) -D -m $$mode "$$src" "$(DESTDIR)$$dst"; \
	  case $$src in *.service) sed -i 's|@BINDIR@|$(BINDIR)|g' \
	    "$(DESTDIR)$$dst";; esac; \
	done

uninstall:
	@for f in $(INSTALL_FILES); do \
	  dst=$${f%%:*}; echo "  RM $(DESTDIR)$$dst"; rm -f "$(DESTDIR)$$dst"; \
	done
	-@rmdir "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true

clean:
	rm -rf build build-asan build-fuzz nbdfs

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
