/*
 * One line per decision on stderr. Phone numbers go through log_phone():
 * only the last 4 digits ever reach a log.
 */

#ifndef HAMRAHI_LOG_H
#define HAMRAHI_LOG_H

#include <stddef.h>

#define LOG_PHONE_BUF 16

void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "***0001"; "-" for an empty or missing number. */
const char *log_phone(const char *phone, char buf[LOG_PHONE_BUF]);

#endif /* HAMRAHI_LOG_H */
