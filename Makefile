# Worker binary and cmocka unit tests. build.sh calls this; the nginx module is
# built by build.sh through nginx's own configure (see ../shared/ENVIRONMENT.md).
#
#   make            build/hamrahi-worker and every unit test binary
#   make check      build and run the unit tests, stop at the first failure
#   make asan       the same with clang, AddressSanitizer and UBSan (build-asan/)

BUILD   ?= build
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
ALL_CFLAGS = $(CFLAGS) $(WARN) -D_GNU_SOURCE -Iworker -Ingx_module

# Fragments list their sources and unit tests:
#   worker/worker.mk      WORKER_SRCS, WORKER_LIBS, UNIT_TESTS += ..., test_X_SRCS, test_X_LIBS
#   ngx_module/unit.mk    UNIT_TESTS += ..., test_X_SRCS, test_X_LIBS (pure files only)
UNIT_TESTS :=
-include worker/worker.mk
-include ngx_module/unit.mk
-include ngx_module/unit_panel.mk

WORKER_BIN = $(BUILD)/hamrahi-worker
TEST_BINS  = $(addprefix $(BUILD)/tests/,$(UNIT_TESTS))

all: $(WORKER_BIN) $(TEST_BINS)

$(WORKER_BIN): $(WORKER_SRCS) $(wildcard worker/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(WORKER_SRCS) $(WORKER_LIBS) -o $@

# One rule per test binary: sources come from test_<name>_SRCS.
.SECONDEXPANSION:
$(BUILD)/tests/%: tests/unit/%.c $$(%_SRCS) $(wildcard worker/*.h ngx_module/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $($*_SRCS) $($*_LIBS) -lcmocka -o $@

check: $(TEST_BINS)
	@set -e; for t in $(TEST_BINS); do echo "== $$t"; $$t; done

asan:
	$(MAKE) BUILD=build-asan CC=clang \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all

clean:
	rm -rf build build-asan

.PHONY: all check asan clean
-include tests/fuzz/fuzz.mk
