#include <stdlib.h>

#include "timers.h"


static int
earlier(const timer_entry_t *a, const timer_entry_t *b)
{
    return a->at_ms < b->at_ms || (a->at_ms == b->at_ms && a->seq < b->seq);
}


static void
place(timers_t *t, size_t i, timer_entry_t *e)
{
    t->heap[i] = e;
    e->index = i + 1;
}


static void
sift_up(timers_t *t, size_t i)
{
    timer_entry_t *e = t->heap[i];

    while (i > 0 && earlier(e, t->heap[(i - 1) / 2])) {
        place(t, i, t->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(t, i, e);
}


static void
sift_down(timers_t *t, size_t i)
{
    timer_entry_t *e = t->heap[i];
    size_t         child;

    for (;;) {
        child = 2 * i + 1;
        if (child >= t->n) {
            break;
        }
        if (child + 1 < t->n && earlier(t->heap[child + 1], t->heap[child])) {
            child++;
        }
        if (!earlier(t->heap[child], e)) {
            break;
        }
        place(t, i, t->heap[child]);
        i = child;
    }
    place(t, i, e);
}


static void
unlink_entry(timers_t *t, timer_entry_t *e)
{
    size_t          i = e->index - 1;
    timer_entry_t  *last = t->heap[--t->n];

    e->index = 0;
    if (last == e) {
        return;
    }
    place(t, i, last);
    if (i > 0 && earlier(last, t->heap[(i - 1) / 2])) {
        sift_up(t, i);
    } else {
        sift_down(t, i);
    }
}


static void on_uv_timer(uv_timer_t *handle);


static void
reschedule(timers_t *t)
{
    int64_t delay;

    if (t->n == 0) {
        uv_timer_stop(&t->uv);
        return;
    }
    delay = t->heap[0]->at_ms - t->now_ms();
    if (delay < 0) {
        delay = 0;
    }
    /* The loop's cached time may be stale after a long callback. */
    uv_update_time(t->uv.loop);
    uv_timer_start(&t->uv, on_uv_timer, (uint64_t) delay, 0);
}


timer_entry_t *
timers_pop_due(timers_t *t, int64_t now_ms, uint64_t seq_limit)
{
    timer_entry_t *e;

    if (t->n == 0) {
        return NULL;
    }
    e = t->heap[0];
    if (e->at_ms > now_ms || e->seq >= seq_limit) {
        return NULL;
    }
    unlink_entry(t, e);
    return e;
}


static void
on_uv_timer(uv_timer_t *handle)
{
    timers_t       *t = handle->data;
    uint64_t        limit = t->next_seq;
    int64_t         now = t->now_ms();
    timer_entry_t  *e;

    /* Entries armed by a fire callback wait for the next round, so a
     * callback that re-arms at "now" cannot keep this loop spinning. */
    while ((e = timers_pop_due(t, now, limit)) != NULL) {
        e->fire(e);
    }
    reschedule(t);
}


int
timers_init(timers_t *t, uv_loop_t *loop, int64_t (*now_ms)(void))
{
    t->heap = NULL;
    t->n = 0;
    t->cap = 0;
    t->next_seq = 1;
    t->now_ms = now_ms;
    if (uv_timer_init(loop, &t->uv) != 0) {
        return -1;
    }
    t->uv.data = t;
    return 0;
}


void
timers_close(timers_t *t, uv_close_cb cb)
{
    while (t->n > 0) {
        unlink_entry(t, t->heap[0]);
    }
    uv_timer_stop(&t->uv);
    uv_close((uv_handle_t *) &t->uv, cb);
    free(t->heap);
    t->heap = NULL;
}


int
timers_arm(timers_t *t, timer_entry_t *e, int64_t at_ms)
{
    timer_entry_t **grown;
    int             was_first;

    if (e->index != 0) {
        unlink_entry(t, e);
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;

        grown = realloc(t->heap, cap * sizeof(*grown));
        if (grown == NULL) {
            return -1;
        }
        t->heap = grown;
        t->cap = cap;
    }
    e->at_ms = at_ms;
    e->seq = t->next_seq++;
    t->n++;
    place(t, t->n - 1, e);
    sift_up(t, t->n - 1);

    was_first = t->heap[0] == e;
    if (was_first) {
        reschedule(t);
    }
    return 0;
}


void
timers_cancel(timers_t *t, timer_entry_t *e)
{
    if (e->index == 0) {
        return;
    }
    unlink_entry(t, e);
    reschedule(t);
}


size_t
timers_count(const timers_t *t)
{
    return t->n;
}
