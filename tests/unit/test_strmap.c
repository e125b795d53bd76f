/* worker/strmap.c: put, replace, delete, growth and sweep. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "strmap.h"


static int
keep_even(void *value, void *arg)
{
    (void) arg;
    return ((intptr_t) value) % 2 == 0;
}


static void
test_map(void **state)
{
    strmap_t *m = strmap_new();
    char      key[32];
    intptr_t  i;

    (void) state;
    for (i = 1; i <= 5000; i++) {
        snprintf(key, sizeof(key), "s-%ld", (long) i);
        assert_int_equal(strmap_put(m, key, (void *) i), 0);
    }
    assert_int_equal(strmap_count(m), 5000);
    assert_ptr_equal(strmap_get(m, "s-4321"), (void *) 4321);
    assert_int_equal(strmap_put(m, "s-1", (void *) 2), 0);
    assert_int_equal(strmap_count(m), 5000);
    assert_ptr_equal(strmap_del(m, "s-3"), (void *) 3);
    assert_null(strmap_del(m, "s-3"));
    assert_null(strmap_get(m, "nope"));
    strmap_sweep(m, keep_even, NULL);
    assert_int_equal(strmap_count(m), 2501); /* evens, and s-1 now 2 */
    assert_ptr_equal(strmap_get(m, "s-1"), (void *) 2);
    assert_null(strmap_get(m, "s-5"));
    strmap_free(m);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
