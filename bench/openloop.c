/* openloop: an open-loop (constant arrival rate) HTTP/1.1 load generator, like wrk2 -R.
 *
 *   openloop HOST PORT PATH RATE SECONDS CONNECTIONS [HEADER ...]
 *
 * Request i is due at t0 + i/RATE whatever happened to the requests before it, and its latency
 * counts from that due time, not from when a connection was free to send it. A closed-loop
 * client (wrk) stops sending while the server stalls, so the requests that would have queued
 * behind the stall are never measured (coordinated omission); here they wait in a queue and
 * the wait is part of their latency. Prints one line of JSON on stdout.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS 1000000000ULL
#define DRAIN_NS (5 * NS)
#define MAX_EVENTS 256
/* A timed wakeup comes some 40-100 us late on a VM, and late sends count as latency: sleep until
 * this long before the next due time, then poll (epoll timeout 0) until it comes. */
#define SPIN_NS 100000ULL
#define HEAD_MAX 16384

enum state { DEAD, CONNECTING, IDLE, BUSY };
enum phase { HEAD, BODY, CHUNK_LINE, CHUNK_DATA, TRAILER };

struct conn {
    int fd, status, close_after, want_out;
    enum state state;
    enum phase phase;
    uint64_t due;       /* scheduled time of the request in flight */
    size_t wpos, hlen;  /* request bytes written; bytes gathered in head */
    long long left;     /* body bytes still to skip */
    char head[HEAD_MAX + 1];
};

static struct addrinfo *addr;
static int ep, nidle, nalive, nbusy, *idle;
static struct conn *conns;
static char *req;
static size_t req_len;
static unsigned long long *lat, t_end, ncompleted, nwindow, non2xx, nerrors, nlost;
static char first_error[256];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void watch(struct conn *c, int op, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u),
                             .data.u32 = (uint32_t)(c - conns)};
    c->want_out = want_out;
    epoll_ctl(ep, op, c->fd, &ev);
}

static void unidle(struct conn *c)
{
    for (int i = 0; i < nidle; i++)
        if (idle[i] == c - conns) {
            idle[i] = idle[--nidle];
            return;
        }
}

static void conn_open(struct conn *c);

/* A request in flight on a closed connection is lost (counted as such, not as a timeout).
 * A failed connect is not retried: a server refusing connections would make us spin. */
static void shut(struct conn *c, int reconnect)
{
    if (c->state == BUSY)
        nlost++, nbusy--;
    else if (c->state == IDLE)
        unidle(c);
    if (c->fd >= 0)
        close(c->fd);
    if (c->state == CONNECTING)
        reconnect = 0;
    c->state = DEAD;
    nalive--;
    if (reconnect)
        conn_open(c);
}

static void drop(struct conn *c, const char *why, int err)
{
    nerrors++;
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "%s%s%s", why, err ? ": " : "",
                 err ? strerror(err) : "");
    shut(c, 1);
}

static void conn_open(struct conn *c)
{
    int one = 1;
    nalive++;
    c->state = CONNECTING;
    c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        drop(c, "socket", errno);
        return;
    }
    /* Requests are one small write each: Nagle would hold them back for the last ACK. */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) < 0 && errno != EINPROGRESS)
        drop(c, "connect", errno);
    else
        watch(c, EPOLL_CTL_ADD, 1);  /* writable = connected, or failed (SO_ERROR) */
}

static void flush(struct conn *c)
{
    while (c->wpos < req_len) {
        ssize_t n = send(c->fd, req + c->wpos, req_len - c->wpos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN)
                drop(c, "send", errno);
            else if (!c->want_out)
                watch(c, EPOLL_CTL_MOD, 1);
            return;
        }
        c->wpos += (size_t)n;
    }
    if (c->want_out)  /* level-triggered EPOLLOUT would wake us for nothing from now on */
        watch(c, EPOLL_CTL_MOD, 0);
}

static void issue(struct conn *c, uint64_t due)
{
    c->state = BUSY;
    c->due = due;
    c->wpos = c->hlen = 0;
    c->phase = HEAD;
    nbusy++;
    flush(c);
}

static void finish(struct conn *c)
{
    uint64_t now = now_ns();
    lat[ncompleted++] = now - c->due;
    nwindow += now <= t_end;
    non2xx += c->status < 200 || c->status > 299;
    nbusy--;
    c->state = IDLE;
    idle[nidle++] = (int)(c - conns);
}

/* Appends bytes to c->head until it ends with term; returns the bytes used, or -1 if the
 * head outgrows the buffer. *done tells whether term was reached. */
static long gather(struct conn *c, const char *p, size_t n, const char *term, int *done)
{
    size_t tl = strlen(term), old = c->hlen, take = n < HEAD_MAX - old ? n : HEAD_MAX - old;
    memcpy(c->head + old, p, take);
    c->hlen += take;
    size_t from = old >= tl - 1 ? old - (tl - 1) : 0;
    char *hit = memmem(c->head + from, c->hlen - from, term, tl);
    if (!(*done = hit != NULL))
        return c->hlen == HEAD_MAX ? -1 : (long)take;
    c->hlen = (size_t)(hit - c->head) + tl;
    c->head[c->hlen] = '\0';
    return (long)(c->hlen - old);
}

/* The value of a header, `name` being "\r\nname:" in lower case, or "" if it is absent. */
static const char *header(const char *head, const char *name)
{
    const char *v = strstr(head, name);
    return v ? v + strlen(name) + strspn(v + strlen(name), " \t") : "";
}

static const char *after_head(struct conn *c)
{
    char *h = c->head;
    for (char *q = h; *q; q++)  /* header names are case-insensitive */
        *q = (char)tolower((unsigned char)*q);
    if (c->hlen < 12 || strncmp(h, "http/1.", 7))
        return "not an HTTP/1.x response";
    const char *len = header(h, "\r\ncontent-length:"), *conn = header(h, "\r\nconnection:");
    int chunked = !strncmp(header(h, "\r\ntransfer-encoding:"), "chunked", 7);
    c->status = atoi(h + 9);
    c->close_after = !strncmp(conn, "close", 5) || (h[7] == '0' && strncmp(conn, "keep-alive", 10));
    c->left = *len ? strtoll(len, NULL, 10) : -1;
    c->phase = chunked ? CHUNK_LINE : BODY;
    c->hlen = 0;
    if (!chunked && (c->left == 0 || (c->left < 0 && (c->status == 204 || c->status == 304))))
        finish(c);
    else if (!chunked && c->left < 0)
        return "a response without Content-Length or chunked encoding (unsupported)";
    return NULL;
}

static const char *after_line(struct conn *c)
{
    char *end;
    if (c->phase == HEAD)
        return after_head(c);
    if (c->phase == CHUNK_LINE) {
        long long size = strtoll(c->head, &end, 16);
        if (end == c->head || size < 0)
            return "bad chunk size";
        c->phase = size ? CHUNK_DATA : TRAILER;
        c->left = size + 2;  /* the data's CRLF is skipped, not checked */
    } else if (c->hlen == 2) {  /* TRAILER: the empty line ends the response */
        finish(c);
    }
    c->hlen = 0;
    return NULL;
}

/* Feeds received bytes to the response parser; a response may come in any number of reads. */
static const char *feed(struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        size_t used;
        int done;
        const char *err = NULL;
        if (c->state != BUSY)
            return "bytes received with no request in flight";
        if (c->phase == BODY || c->phase == CHUNK_DATA) {
            used = n < (size_t)c->left ? n : (size_t)c->left;
            if ((c->left -= (long long)used) == 0 && c->phase == BODY)
                finish(c);
            else if (c->left == 0)
                c->phase = CHUNK_LINE;
        } else {
            long k = gather(c, p, n, c->phase == HEAD ? "\r\n\r\n" : "\r\n", &done);
            if (k < 0)
                return "response head too long";
            if (done && (err = after_line(c)))
                return err;
            used = (size_t)k;
        }
        p += used;
        n -= used;
    }
    return NULL;
}

static void on_event(struct conn *c, uint32_t events)
{
    static char buf[65536];
    int err = 0;
    socklen_t len = sizeof err;
    if (c->state == CONNECTING) {
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            drop(c, "connect", err);
        } else {
            c->state = IDLE;
            idle[nidle++] = (int)(c - conns);
            watch(c, EPOLL_CTL_MOD, 0);
        }
        return;
    }
    if ((events & EPOLLOUT) && c->state == BUSY)
        flush(c);
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || c->state < IDLE)  /* dropped by flush */
        return;
    ssize_t n = read(c->fd, buf, sizeof buf);
    const char *why = n > 0 ? feed(c, buf, (size_t)n) : NULL;
    if (n < 0 && errno != EAGAIN)
        drop(c, "read", errno);
    else if (n == 0 && c->state == BUSY)
        drop(c, "connection closed before the response", 0);
    else if (n == 0)  /* an idle keep-alive connection closed by the server: not an error */
        shut(c, 1);
    else if (why)
        drop(c, why, 0);
    else if (c->state == IDLE && c->close_after)
        shut(c, 1);
}

/* epoll_pwait2 takes a nanosecond timeout: epoll_wait's milliseconds are far coarser than the
 * interval between requests at a few thousand per second. Without it (kernel < 5.11), sleep
 * whole milliseconds, so poll (timeout 0) whenever the next request is due within 1 ms. */
static int wait_events(struct epoll_event *evs, uint64_t wait_ns)
{
    static int no_pwait2;
    if (!no_pwait2) {
        struct timespec ts = {.tv_sec = (time_t)(wait_ns / NS), .tv_nsec = (long)(wait_ns % NS)};
        int n = epoll_pwait2(ep, evs, MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = 1;
    }
    return epoll_wait(ep, evs, MAX_EVENTS, (int)(wait_ns / 1000000));
}

static int cmp_u64(const void *a, const void *b)
{
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return (x > y) - (x < y);
}

static double pct_ms(double p)  /* nearest rank, over the sorted latencies */
{
    double rank = p * (double)ncompleted;
    unsigned long long r = (unsigned long long)rank;
    r += (double)r < rank;
    return ncompleted ? (double)lat[r ? r - 1 : 0] / 1e6 : 0;
}

int main(int argc, char **argv)
{
    int ok = argc > 6, nconns = ok ? atoi(argv[6]) : 0, gai;
    double rate = ok ? strtod(argv[4], NULL) : 0, seconds = ok ? strtod(argv[5], NULL) : 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (!(rate > 0 && seconds > 0 && rate * seconds < 1e9) || nconns <= 0) {  /* NaN too */
        fprintf(stderr, "usage: openloop HOST PORT PATH RATE SECONDS CONNECTIONS [HEADER ...]\n"
                        "(RATE, SECONDS and CONNECTIONS positive, RATE * SECONDS < 1e9)\n");
        return 2;
    }
    if ((gai = getaddrinfo(argv[1], argv[2], &hints, &addr))) {
        fprintf(stderr, "openloop: %s: %s\n", argv[1], gai_strerror(gai));
        return 2;
    }
    size_t cap = strlen(argv[3]) + strlen(argv[1]) + strlen(argv[2]) + 64;
    for (int i = 7; i < argc; i++)
        cap += strlen(argv[i]) + 2;
    req = malloc(cap);
    req_len = (size_t)sprintf(req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n", argv[3], argv[1],
                              argv[2]);
    for (int i = 7; i < argc; i++)
        req_len += (size_t)sprintf(req + req_len, "%s\r\n", argv[i]);
    req_len += (size_t)sprintf(req + req_len, "\r\n");

    double ns_per_req = 1e9 / rate;
    uint64_t total = (uint64_t)(rate * seconds);  /* the i with t0 + i/RATE < t0 + SECONDS */
    total += (double)total < rate * seconds;
    lat = malloc(total * sizeof *lat);
    conns = calloc((size_t)nconns, sizeof *conns);
    idle = malloc((size_t)nconns * sizeof *idle);
    if (!lat || !conns || !idle || (ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        perror("openloop");
        return 1;
    }
    /* Touch every page now: first-touch page faults in the loop would show up as latency. */
    memset(lat, 0, total * sizeof *lat);
    /* The default 50 us timer slack would make every timed wakeup late, and late counts. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

    struct epoll_event evs[MAX_EVENTS];
    /* Connect everything before the clock starts, so handshakes are not measured. */
    for (int i = 0; i < nconns; i++)
        conn_open(&conns[i]);
    for (uint64_t limit = now_ns() + DRAIN_NS; nidle < nalive && now_ns() < limit;)
        for (int i = 0, n = wait_events(evs, NS / 10); i < n; i++)
            on_event(&conns[evs[i].data.u32], evs[i].events);
    if (!nalive) {
        fprintf(stderr, "openloop: cannot connect to %s:%s: %s\n", argv[1], argv[2], first_error);
        return 1;
    }

    uint64_t t0 = now_ns(), deadline, due = 0, sent = 0;
    t_end = t0 + (uint64_t)(seconds * 1e9);
    deadline = t_end + DRAIN_NS;
#define DUE_AT(i) (t0 + (uint64_t)((double)(i) * ns_per_req))
    for (;;) {
        uint64_t now = now_ns();
        while (due < total && DUE_AT(due) <= now)
            due++;
        /* Everything due goes out now, in one batch: requests queued for lack of a free
         * connection first (FIFO), each keeping its own due time. */
        while (sent < due && nidle > 0)
            issue(&conns[idle[--nidle]], DUE_AT(sent++));
        if ((sent == total && !nbusy) || now >= deadline || !nalive)
            break;
        /* With requests queued only a response can let one go, so there is no point waking up
         * at the next due time: that request is counted in when a connection frees up. */
        uint64_t wake = due < total && sent == due ? DUE_AT(due) - SPIN_NS : deadline;
        for (int i = 0, n = wait_events(evs, wake > now ? wake - now : 0); i < n; i++)
            on_event(&conns[evs[i].data.u32], evs[i].events);
    }

    qsort(lat, ncompleted, sizeof *lat, cmp_u64);
    printf("{\"scheduled\": %llu, \"completed\": %llu, \"rate\": %.1f, \"p50_ms\": %.3f, "
           "\"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f, "
           "\"non2xx\": %llu, \"errors\": %llu, \"timeouts\": %llu}\n",
           (unsigned long long)total, ncompleted, (double)nwindow / seconds, pct_ms(0.50),
           pct_ms(0.90), pct_ms(0.99), pct_ms(0.999), pct_ms(1.0), non2xx, nerrors,
           (unsigned long long)total - ncompleted - nlost);
    if (first_error[0])
        fprintf(stderr, "openloop: %llu errors, the first: %s\n", nerrors, first_error);
    return 0;
}
