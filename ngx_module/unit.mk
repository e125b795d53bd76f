# Unit tests of the module's pure files (included by the top Makefile).

UNIT_TESTS += test_auth test_event

test_auth_SRCS = ngx_module/hamrahi_auth.c ngx_module/hamrahi_event.c
test_auth_LIBS = -lcrypto -ljansson

test_event_SRCS = ngx_module/hamrahi_event.c
test_event_LIBS = -ljansson
