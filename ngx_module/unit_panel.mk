# cmocka tests of the panel module's pure files (included by the top Makefile)
UNIT_TESTS    += test_ws test_jwt
test_ws_SRCS   = ngx_module/hamrahi_ws.c
test_ws_LIBS   = -lcrypto
test_jwt_SRCS  = ngx_module/hamrahi_jwt.c
test_jwt_LIBS  = -ljansson -lcrypto
