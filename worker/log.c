#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"


void
log_line(const char *fmt, ...)
{
    struct timespec ts;
    struct tm       tm;
    char            stamp[32];
    va_list         ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    /* One fprintf per line so that lines from a restart never interleave. */
    va_start(ap, fmt);
    {
        char msg[1024];

        vsnprintf(msg, sizeof(msg), fmt, ap);
        fprintf(stderr, "%s.%03ldZ hamrahi-worker: %s\n", stamp,
                ts.tv_nsec / 1000000, msg);
    }
    va_end(ap);
}


const char *
log_phone(const char *phone, char buf[LOG_PHONE_BUF])
{
    size_t len;

    if (phone == NULL || phone[0] == '\0') {
        return "-";
    }
    len = strlen(phone);
    snprintf(buf, LOG_PHONE_BUF, "***%s", len > 4 ? phone + len - 4 : "");
    return buf;
}
