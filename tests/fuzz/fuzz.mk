# libFuzzer targets (included at the end of the top Makefile).
#
#   make fuzz                          build every target into build-fuzz/
#   make fuzz-run FUZZ_SECONDS=60      and run each for that long on its seeds
#
# Seeds live in tests/fuzz/corpus/<target>/ and are only read: what a run
# finds goes to build-fuzz/corpus/<target>/ (tests/run_tests.py does the
# same with a temporary directory).

FUZZ_BUILD    ?= build-fuzz
FUZZ_SECONDS  ?= 10
FUZZ_CC       ?= clang
FUZZ_CFLAGS    = -g -O1 -fsanitize=fuzzer,address,undefined \
                 -fno-sanitize-recover=all -fno-omit-frame-pointer \
                 $(WARN) -D_GNU_SOURCE -Ingx_module

FUZZ_TARGETS   = fuzz_event fuzz_sig fuzz_ws
FUZZ_BINS      = $(addprefix $(FUZZ_BUILD)/,$(FUZZ_TARGETS))

fuzz_event_SRCS = ngx_module/hamrahi_event.c
fuzz_event_LIBS = -ljansson
fuzz_sig_SRCS   = ngx_module/hamrahi_auth.c ngx_module/hamrahi_event.c
fuzz_sig_LIBS   = -lcrypto -ljansson
fuzz_ws_SRCS    = ngx_module/hamrahi_ws.c
fuzz_ws_LIBS    = -lcrypto

fuzz: $(FUZZ_BINS)

$(FUZZ_BUILD)/fuzz_event: tests/fuzz/fuzz_event.c $(fuzz_event_SRCS) \
                          ngx_module/hamrahi_event.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(fuzz_event_SRCS) $(fuzz_event_LIBS) -o $@

$(FUZZ_BUILD)/fuzz_sig: tests/fuzz/fuzz_sig.c $(fuzz_sig_SRCS) \
                        ngx_module/hamrahi_auth.h ngx_module/hamrahi_event.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(fuzz_sig_SRCS) $(fuzz_sig_LIBS) -o $@

$(FUZZ_BUILD)/fuzz_ws: tests/fuzz/fuzz_ws.c $(fuzz_ws_SRCS) \
                       ngx_module/hamrahi_ws.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(fuzz_ws_SRCS) $(fuzz_ws_LIBS) -o $@

fuzz-run: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	    echo "== $$t ($(FUZZ_SECONDS) s)"; \
	    $(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	        -rss_limit_mb=2048 -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_BUILD)/$$t- \
	        $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t; \
	done

.PHONY: fuzz fuzz-run
