/*
 * Deadlines on one uv_timer_t over a binary heap. Entries are owned by the
 * caller (embedded in its own struct); deadlines due in the same millisecond
 * fire in the order they were armed.
 */

#ifndef HAMRAHI_TIMERS_H
#define HAMRAHI_TIMERS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct timer_entry timer_entry_t;

struct timer_entry {
    int64_t   at_ms;
    uint64_t  seq;
    size_t    index;                     /* heap slot + 1; 0: not armed */
    void    (*fire)(timer_entry_t *t);
};

typedef struct {
    timer_entry_t **heap;
    size_t          n;
    size_t          cap;
    uint64_t        next_seq;
    uv_timer_t      uv;
    int64_t       (*now_ms)(void);
} timers_t;

int timers_init(timers_t *t, uv_loop_t *loop, int64_t (*now_ms)(void));
/* Unlinks every entry; cb (may be NULL) runs once the handle closed. */
void timers_close(timers_t *t, uv_close_cb cb);

/* (Re)arm e at at_ms; an armed entry moves. Returns -1 only on ENOMEM. */
int timers_arm(timers_t *t, timer_entry_t *e, int64_t at_ms);
void timers_cancel(timers_t *t, timer_entry_t *e);
size_t timers_count(const timers_t *t);

/* The earliest entry due at now_ms armed before seq_limit, unlinked; NULL
 * when none. The uv callback fires these; exposed for the unit test. */
timer_entry_t *timers_pop_due(timers_t *t, int64_t now_ms,
                              uint64_t seq_limit);

#endif /* HAMRAHI_TIMERS_H */
