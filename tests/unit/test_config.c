/* worker/config.c: file, environment overrides, and errors that name the
 * key and the value. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"

static char dir[] = "/tmp/test_config.XXXXXX";
static char conf_path[128], token_path[128];


static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}


static int
setup(void **state)
{
    char text[512];

    (void) state;
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(conf_path, sizeof(conf_path), "%s/worker.conf", dir);
    snprintf(token_path, sizeof(token_path), "%s/token", dir);
    write_file(token_path, "  s3cret\n");
    snprintf(text, sizeof(text),
             "# comment\n"
             "redis_port = 18500   # trailing comment\n"
             "provider_account_sid = ACx\n"
             "provider_auth_token_file = %s\n"
             "watchdog_ms=4000\n"
             "\n",
             token_path);
    write_file(conf_path, text);
    return 0;
}


static int
teardown(void **state)
{
    (void) state;
    unlink(conf_path);
    unlink(token_path);
    rmdir(dir);
    return 0;
}


static void
test_file_and_env(void **state)
{
    config_t cf;
    char     err[256];

    (void) state;
    setenv("HAMRAHI_WATCHDOG_MS", "5000", 1);
    setenv("HAMRAHI_CONSUMER_NAME", "worker-2", 1);
    assert_int_equal(config_load(&cf, conf_path, err, sizeof(err)), 0);
    unsetenv("HAMRAHI_WATCHDOG_MS");
    unsetenv("HAMRAHI_CONSUMER_NAME");
    assert_int_equal(cf.redis_port, 18500);
    assert_int_equal(cf.watchdog_ms, 5000);
    assert_string_equal(cf.consumer_name, "worker-2");
    assert_string_equal(cf.provider_account_sid, "ACx");
    assert_string_equal(cf.provider_auth_token, "s3cret");
    assert_int_equal(cf.ring_timeout_s, 30);
}


static void
test_errors_name_the_key(void **state)
{
    config_t cf;
    char     err[256];

    (void) state;
    setenv("HAMRAHI_REDIS_PORT", "70000", 1);
    assert_int_equal(config_load(&cf, conf_path, err, sizeof(err)), -1);
    unsetenv("HAMRAHI_REDIS_PORT");
    assert_non_null(strstr(err, "redis_port"));
    assert_non_null(strstr(err, "70000"));

    setenv("HAMRAHI_PROVIDER_AUTH_TOKEN_FILE", "/nonexistent/token", 1);
    assert_int_equal(config_load(&cf, conf_path, err, sizeof(err)), -1);
    unsetenv("HAMRAHI_PROVIDER_AUTH_TOKEN_FILE");
    assert_non_null(strstr(err, "provider_auth_token_file"));

    write_file(token_path, "x");
    {
        char path[160];

        snprintf(path, sizeof(path), "%s/bad.conf", dir);
        write_file(path, "no_such_key = 1\n");
        assert_int_equal(config_load(&cf, path, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "no_such_key"));
        assert_non_null(strstr(err, ":1"));
        unlink(path);
    }
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_and_env),
        cmocka_unit_test(test_errors_name_the_key),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
