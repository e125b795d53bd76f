/* A string-keyed hash map (chained, FNV-1a); keys are copied. */

#ifndef HAMRAHI_STRMAP_H
#define HAMRAHI_STRMAP_H

#include <stddef.h>

typedef struct strmap strmap_t;

strmap_t *strmap_new(void);
void *strmap_get(const strmap_t *m, const char *key);
/* Insert or replace; -1 on ENOMEM. */
int strmap_put(strmap_t *m, const char *key, void *value);
/* Remove and return the value (NULL if absent). */
void *strmap_del(strmap_t *m, const char *key);
size_t strmap_count(const strmap_t *m);
/* Remove every entry for which keep() returns 0 (after keep() ran). */
void strmap_sweep(strmap_t *m, int (*keep)(void *value, void *arg), void *arg);
void strmap_free(strmap_t *m);

#endif /* HAMRAHI_STRMAP_H */
