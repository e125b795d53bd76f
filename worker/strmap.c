#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

typedef struct node node_t;

struct node {
    node_t *next;
    void   *value;
    char    key[];
};

struct strmap {
    node_t **buckets;
    size_t   nbuckets;   /* a power of two */
    size_t   count;
};


static size_t
hash(const char *key)
{
    uint64_t h = 14695981039346656037ull;

    while (*key) {
        h = (h ^ (unsigned char) *key++) * 1099511628211ull;
    }
    return (size_t) h;
}


strmap_t *
strmap_new(void)
{
    strmap_t *m = calloc(1, sizeof(*m));

    if (m == NULL) {
        return NULL;
    }
    m->nbuckets = 256;
    m->buckets = calloc(m->nbuckets, sizeof(node_t *));
    if (m->buckets == NULL) {
        free(m);
        return NULL;
    }
    return m;
}


static node_t **
slot(const strmap_t *m, const char *key)
{
    node_t **p = &m->buckets[hash(key) & (m->nbuckets - 1)];

    while (*p != NULL && strcmp((*p)->key, key) != 0) {
        p = &(*p)->next;
    }
    return p;
}


void *
strmap_get(const strmap_t *m, const char *key)
{
    node_t *n = *slot(m, key);

    return n ? n->value : NULL;
}


static void
grow(strmap_t *m)
{
    size_t   nb = m->nbuckets * 2, i;
    node_t **b = calloc(nb, sizeof(node_t *));
    node_t  *n, *next;

    if (b == NULL) {
        return; /* keep the longer chains; still correct */
    }
    for (i = 0; i < m->nbuckets; i++) {
        for (n = m->buckets[i]; n != NULL; n = next) {
            next = n->next;
            n->next = b[hash(n->key) & (nb - 1)];
            b[hash(n->key) & (nb - 1)] = n;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}


int
strmap_put(strmap_t *m, const char *key, void *value)
{
    node_t **p = slot(m, key);
    size_t   len;

    if (*p != NULL) {
        (*p)->value = value;
        return 0;
    }
    len = strlen(key);
    *p = malloc(sizeof(node_t) + len + 1);
    if (*p == NULL) {
        return -1;
    }
    memcpy((*p)->key, key, len + 1);
    (*p)->value = value;
    (*p)->next = NULL;
    if (++m->count > 2 * m->nbuckets) {
        grow(m);
    }
    return 0;
}


void *
strmap_del(strmap_t *m, const char *key)
{
    node_t **p = slot(m, key);
    node_t  *n = *p;
    void    *value;

    if (n == NULL) {
        return NULL;
    }
    *p = n->next;
    value = n->value;
    free(n);
    m->count--;
    return value;
}


size_t
strmap_count(const strmap_t *m)
{
    return m->count;
}


void
strmap_sweep(strmap_t *m, int (*keep)(void *value, void *arg), void *arg)
{
    size_t   i;
    node_t **p, *n;

    for (i = 0; i < m->nbuckets; i++) {
        p = &m->buckets[i];
        while ((n = *p) != NULL) {
            if (keep(n->value, arg)) {
                p = &n->next;
            } else {
                *p = n->next;
                free(n);
                m->count--;
            }
        }
    }
}


void
strmap_free(strmap_t *m)
{
    size_t  i;
    node_t *n, *next;

    for (i = 0; i < m->nbuckets; i++) {
        for (n = m->buckets[i]; n != NULL; n = next) {
            next = n->next;
            free(n);
        }
    }
    free(m->buckets);
    free(m);
}
