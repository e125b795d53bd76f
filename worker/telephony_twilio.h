/*
 * provider.h over Twilio's 2010-04-01 REST API (and the sandbox that speaks
 * it): Basic auth with the account SID and the auth token.
 */

#ifndef HAMRAHI_TELEPHONY_TWILIO_H
#define HAMRAHI_TELEPHONY_TWILIO_H

#include "http_uv.h"
#include "provider.h"

provider_t *twilio_new(http_t *http, const char *base_url,
                       const char *account_sid, const char *auth_token,
                       long timeout_ms);

/* Pure helpers, exposed for the unit test. */
hr_failure_t twilio_classify(long http_status, CURLcode result,
                             int error_code);
char *twilio_xml_escape(const char *text);

#endif /* HAMRAHI_TELEPHONY_TWILIO_H */
