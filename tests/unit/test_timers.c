/* The deadline heap of worker/timers.c: order, ties in arming order,
 * re-arming, cancelling from the middle, and firing through libuv. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "timers.h"

static int64_t fake_now;

static int64_t
clock_fake(void)
{
    return fake_now;
}


static void
no_fire(timer_entry_t *t)
{
    (void) t;
}


static void
test_order_and_ties(void **state)
{
    static const int64_t at[] = { 50, 10, 30, 10, 20, 10 };
    static const int     expect[] = { 1, 3, 5, 4, 2, 0 };
    timer_entry_t        e[6] = { { 0 } };
    timers_t             t;
    size_t               i;

    (void) state;
    assert_int_equal(timers_init(&t, uv_default_loop(), clock_fake), 0);
    for (i = 0; i < 6; i++) {
        e[i].fire = no_fire;
        assert_int_equal(timers_arm(&t, &e[i], at[i]), 0);
    }
    assert_int_equal(timers_count(&t), 6);
    for (i = 0; i < 6; i++) {
        timer_entry_t *got = timers_pop_due(&t, 1000, UINT64_MAX);

        assert_ptr_equal(got, &e[expect[i]]);
        assert_int_equal(got->index, 0);
    }
    assert_null(timers_pop_due(&t, 1000, UINT64_MAX));
    timers_close(&t, NULL);
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
}


static void
test_cancel_and_rearm(void **state)
{
    timer_entry_t e[100];
    timers_t      t;
    int64_t       last = -1;
    int           i;

    (void) state;
    timers_init(&t, uv_default_loop(), clock_fake);
    srand(7);
    for (i = 0; i < 100; i++) {
        e[i].index = 0;
        e[i].fire = no_fire;
        timers_arm(&t, &e[i], rand() % 1000);
    }
    for (i = 0; i < 100; i += 3) {
        timers_cancel(&t, &e[i]);
    }
    timers_cancel(&t, &e[0]); /* twice: harmless */
    for (i = 1; i < 100; i += 3) {
        timers_arm(&t, &e[i], 5000 + i); /* moves */
    }
    assert_int_equal(timers_count(&t), 66);
    assert_null(timers_pop_due(&t, -1, UINT64_MAX));
    for (i = 0; i < 66; i++) {
        timer_entry_t *got = timers_pop_due(&t, 10000, UINT64_MAX);

        assert_non_null(got);
        assert_true(got->at_ms >= last);
        last = got->at_ms;
    }
    timers_close(&t, NULL);
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
}


static int fired;
static timers_t *loop_timers;

static int64_t
clock_real(void)
{
    return (int64_t) uv_now(uv_default_loop());
}


static void
count_fire(timer_entry_t *e)
{
    fired++;
    if (fired == 1) {
        /* re-armed at "now" from its own callback: fires next round */
        timers_arm(loop_timers, e, clock_real());
    }
}


static void
test_fires_through_loop(void **state)
{
    timer_entry_t a = { 0 }, b = { 0 };
    timers_t      t;

    (void) state;
    fired = 0;
    loop_timers = &t;
    timers_init(&t, uv_default_loop(), clock_real);
    a.fire = count_fire;
    b.fire = no_fire;
    timers_arm(&t, &a, clock_real() + 5);
    timers_arm(&t, &b, clock_real() + 60000);
    timers_cancel(&t, &b);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    assert_int_equal(fired, 2);
    assert_int_equal(timers_count(&t), 0);
    timers_close(&t, NULL);
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_ties),
        cmocka_unit_test(test_cancel_and_rearm),
        cmocka_unit_test(test_fires_through_loop),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
