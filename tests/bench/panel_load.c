/*
 * panel_load: many WebSocket subscribers in one epoll loop, for
 * tests/bench/bench_panel.py. Opens one connection per line of a plan file
 * ("PATH<TAB>AUTHORIZATION or -"), at most 200 handshakes at a time, then
 * reads text frames and records, for each, now - the "t" field of its JSON
 * (microseconds since the epoch, stamped by the publisher on this host).
 *
 *   panel_load HOST PORT PLAN
 *
 * stdin commands, one per line: "reset" (forget the deliveries so far),
 * "report" (print one line of figures), "quit". stdout: "ready OK FAILED"
 * once every connection answered its handshake, then one line per report.
 * Server pings are answered; a close frame is counted and the socket closed.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOAD_MAX_INFLIGHT  200     /* or $LOAD_INFLIGHT */
#define LOAD_REQ_MAX       8192

enum { CONN_CONNECTING, CONN_HANDSHAKE, CONN_OPEN, CONN_DONE };

typedef struct {
    int       fd;
    int       state;
    char     *path;
    char     *auth;
    char     *pend;         /* bytes not yet parsed */
    size_t    plen;
    size_t    pcap;
} conn_t;

typedef struct {
    int64_t  *lat;          /* microseconds */
    size_t    n;
    size_t    cap;
    int64_t   first_rx;
    int64_t   last_rx;
    size_t    closes;
    size_t    bad;          /* text frames without "t" */
} stats_t;

static conn_t   *conns;
static size_t    nconns, next_conn, inflight, ready_ok, ready_failed;
static size_t    max_inflight = LOAD_MAX_INFLIGHT;
static stats_t   st;
static int       ep;
static struct sockaddr_in  addr;
static char      host_header[128];


static int64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


static void
die(const char *what)
{
    perror(what);
    exit(2);
}


static void
load_plan(const char *file)
{
    FILE    *f;
    char     line[LOAD_REQ_MAX], *tab;
    size_t   cap = 0;

    f = fopen(file, "r");
    if (f == NULL) {
        die(file);
    }
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        tab = strchr(line, '\t');
        if (tab == NULL) {
            continue;
        }
        *tab = '\0';
        if (nconns == cap) {
            cap = cap ? cap * 2 : 1024;
            conns = realloc(conns, cap * sizeof(conn_t));
            if (conns == NULL) {
                die("realloc");
            }
        }
        memset(&conns[nconns], 0, sizeof(conn_t));
        conns[nconns].fd = -1;
        conns[nconns].path = strdup(line);
        conns[nconns].auth = strcmp(tab + 1, "-") ? strdup(tab + 1) : NULL;
        nconns++;
    }
    fclose(f);
}


static void
finish(conn_t *c, int ok)
{
    if (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE) {
        inflight--;
        if (ok) {
            ready_ok++;
        } else {
            ready_failed++;
        }
    }
    if (!ok || c->state == CONN_OPEN) {
        if (c->state == CONN_OPEN) {
            st.closes++;
        }
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->state = CONN_DONE;
        free(c->pend);
        c->pend = NULL;
        c->plen = c->pcap = 0;
        return;
    }
    c->state = CONN_OPEN;
}


static void
start_next(void)
{
    conn_t              *c;
    struct epoll_event   ev;

    while (inflight < max_inflight && next_conn < nconns) {
        c = &conns[next_conn];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            die("socket");
        }
        if (connect(c->fd, (struct sockaddr *) &addr, sizeof(addr)) < 0
            && errno != EINPROGRESS)
        {
            die("connect");
        }
        c->state = CONN_CONNECTING;
        ev.events = EPOLLIN | EPOLLOUT;
        ev.data.ptr = c;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            die("epoll_ctl");
        }
        inflight++;
        next_conn++;
    }
}


static void
send_handshake(conn_t *c)
{
    char                 req[LOAD_REQ_MAX];
    int                  n;
    struct epoll_event   ev;

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                 c->path, host_header, c->auth ? "Authorization: " : "",
                 c->auth ? c->auth : "", c->auth ? "\r\n" : "");
    if (send(c->fd, req, n, MSG_NOSIGNAL) != n) {
        finish(c, 0);
        return;
    }
    c->state = CONN_HANDSHAKE;
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}


static void
append(conn_t *c, const char *data, size_t len)
{
    if (c->plen + len > c->pcap) {
        c->pcap = (c->plen + len) * 2;
        c->pend = realloc(c->pend, c->pcap);
        if (c->pend == NULL) {
            die("realloc");
        }
    }
    memcpy(c->pend + c->plen, data, len);
    c->plen += len;
}


static void
record(const char *payload, size_t len, int64_t rx)
{
    const char  *t;
    char         num[24];
    size_t       k;

    t = memmem(payload, len, "\"t\":", 4);
    if (t == NULL) {
        st.bad++;
        return;
    }
    t += 4;
    for (k = 0; k < sizeof(num) - 1 && t + k < payload + len
                && t[k] >= '0' && t[k] <= '9'; k++)
    {
        num[k] = t[k];
    }
    num[k] = '\0';
    if (st.n == st.cap) {
        st.cap = st.cap ? st.cap * 2 : 65536;
        st.lat = realloc(st.lat, st.cap * sizeof(int64_t));
        if (st.lat == NULL) {
            die("realloc");
        }
    }
    st.lat[st.n++] = rx - strtoll(num, NULL, 10);
    if (st.first_rx == 0) {
        st.first_rx = rx;
    }
    st.last_rx = rx;
}


static void
pong(conn_t *c, const unsigned char *payload, size_t len)
{
    unsigned char  f[2 + 4 + 125];
    size_t         i;

    f[0] = 0x8a;
    f[1] = 0x80 | (unsigned char) len;
    memset(f + 2, 0, 4);                /* a zero mask leaves bytes as is */
    for (i = 0; i < len; i++) {
        f[6 + i] = payload[i];
    }
    (void) send(c->fd, f, 6 + len, MSG_NOSIGNAL);
}


/* Parses every complete frame of c->pend; returns 0 when c was closed. */
static int
parse_frames(conn_t *c, int64_t rx)
{
    unsigned char  *b;
    size_t          off = 0, hl, n;
    int             op;

    for ( ;; ) {
        b = (unsigned char *) c->pend + off;
        if (c->plen - off < 2) {
            break;
        }
        op = b[0] & 0x0f;
        n = b[1] & 0x7f;
        hl = 2;
        if (n == 126) {
            if (c->plen - off < 4) {
                break;
            }
            n = (b[2] << 8) | b[3];
            hl = 4;
        } else if (n == 127) {
            if (c->plen - off < 10) {
                break;
            }
            n = 0;
            for (int i = 2; i < 10; i++) {
                n = (n << 8) | b[i];
            }
            hl = 10;
        }
        if (c->plen - off < hl + n) {
            break;
        }
        if (op == 0x1) {
            record((char *) b + hl, n, rx);
        } else if (op == 0x9) {
            pong(c, b + hl, n);
        } else if (op == 0x8) {
            finish(c, 0);
            return 0;
        }
        off += hl + n;
    }
    memmove(c->pend, c->pend + off, c->plen - off);
    c->plen -= off;
    return 1;
}


static void
on_readable(conn_t *c)
{
    static char   buf[262144];
    ssize_t       n;
    char         *end;
    int64_t       rx;

    for ( ;; ) {
        n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            finish(c, 0);
            return;
        }
        rx = now_us();
        append(c, buf, n);
        if (c->state == CONN_HANDSHAKE) {
            end = memmem(c->pend, c->plen, "\r\n\r\n", 4);
            if (end == NULL) {
                continue;
            }
            if (c->plen < 12 || memcmp(c->pend + 9, "101", 3) != 0) {
                finish(c, 0);
                return;
            }
            end += 4;
            memmove(c->pend, end, c->plen - (end - c->pend));
            c->plen -= end - c->pend;
            finish(c, 1);
        }
        if (!parse_frames(c, rx)) {
            return;
        }
    }
}


static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

    return (x > y) - (x < y);
}


static void
report(void)
{
    struct rusage  ru;
    int64_t        p50 = 0, p99 = 0, max = 0;
    size_t         open = 0, i;

    for (i = 0; i < nconns; i++) {
        open += conns[i].state == CONN_OPEN;
    }
    if (st.n) {
        qsort(st.lat, st.n, sizeof(int64_t), cmp_i64);
        p50 = st.lat[st.n / 2];
        p99 = st.lat[(st.n * 99) / 100 - (st.n >= 100 ? 1 : 0)];
        max = st.lat[st.n - 1];
    }
    getrusage(RUSAGE_SELF, &ru);
    printf("report delivered=%zu p50_us=%lld p99_us=%lld max_us=%lld "
           "first_rx_us=%lld last_rx_us=%lld open=%zu closes=%zu bad=%zu "
           "cpu_us=%lld\n", st.n, (long long) p50, (long long) p99,
           (long long) max, (long long) st.first_rx, (long long) st.last_rx,
           open, st.closes, st.bad,
           (long long) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000
           + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    fflush(stdout);
}


static int
on_command(void)
{
    char  line[64];

    if (fgets(line, sizeof(line), stdin) == NULL
        || strncmp(line, "quit", 4) == 0)
    {
        return 0;
    }
    if (strncmp(line, "reset", 5) == 0) {
        st.n = 0;
        st.first_rx = st.last_rx = 0;
        st.bad = 0;
    } else if (strncmp(line, "report", 6) == 0) {
        report();
    }
    return 1;
}


int
main(int argc, char **argv)
{
    struct epoll_event   evs[512], ev;
    int                  i, n, said_ready = 0;
    conn_t              *c;
    int                  err;
    socklen_t            elen;

    if (argc != 4) {
        fprintf(stderr, "usage: panel_load HOST PORT PLAN\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t) atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address\n");
        return 2;
    }
    snprintf(host_header, sizeof(host_header), "%s:%s", argv[1], argv[2]);
    if (getenv("LOAD_INFLIGHT") != NULL && atoi(getenv("LOAD_INFLIGHT")) > 0) {
        max_inflight = (size_t) atoi(getenv("LOAD_INFLIGHT"));
    }
    load_plan(argv[3]);
    setvbuf(stdin, NULL, _IONBF, 0);

    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    start_next();

    for ( ;; ) {
        n = epoll_wait(ep, evs, 512, 1000);
        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;
            if (c == NULL) {
                if (!on_command()) {
                    return 0;
                }
                continue;
            }
            if (c->state == CONN_DONE) {
                continue;
            }
            if (c->state == CONN_CONNECTING) {
                elen = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
                if (err != 0) {
                    finish(c, 0);
                } else {
                    send_handshake(c);
                }
                continue;
            }
            on_readable(c);
        }
        start_next();
        if (!said_ready && ready_ok + ready_failed == nconns) {
            printf("ready %zu %zu\n", ready_ok, ready_failed);
            fflush(stdout);
            said_ready = 1;
        }
    }
}
