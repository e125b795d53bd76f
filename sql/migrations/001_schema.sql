-- Ham Rahi SOS phone fallback: base schema (DESIGN.md section 5).
-- Applied by sql/migrate.sh inside one transaction; no BEGIN/COMMIT here.
--
-- Foreign keys: reference data (stations, citizens, staff) is linked strictly
-- among itself. Tables written from events (sos_sessions, call_attempts,
-- escalations) carry no foreign keys on purpose: an event may name a session,
-- citizen, operator or station this database has not seen yet (another service
-- owns those records, the worker replays queued writes after an outage in
-- whatever order they succeed), and a refused INSERT must never block or roll
-- back the record of a fallback call that is already ringing. Orphans are
-- found with a join, not prevented by a constraint. The worker reads the
-- citizen's phone and the duty roster by id and handles "not found" itself.

CREATE TABLE stations (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT ''
);

CREATE TABLE citizens (
    id              text PRIMARY KEY,
    verified_phone  text NOT NULL
                    CHECK (verified_phone ~ '^\+[1-9][0-9]{1,14}$')
);

CREATE TABLE staff (
    id          text PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('operator', 'supervisor')),
    station_id  text NOT NULL REFERENCES stations (id),
    duty_phone  text CHECK (duty_phone ~ '^\+[1-9][0-9]{1,14}$'),
    on_duty     boolean NOT NULL DEFAULT false
);

-- Routing reads "the on-duty staff of station X with role R".
CREATE INDEX staff_duty_idx ON staff (station_id, role) WHERE on_duty;

-- One row per SOS session. state holds the panel's vocabulary (watching,
-- webrtc_active, phone_fallback_active, phone_connected, released, closed)
-- and may hold worker-internal states; it is deliberately not constrained so
-- that a new state never makes a write fail.
CREATE TABLE sos_sessions (
    id                 text PRIMARY KEY,
    citizen_id         text,
    operator_id        text,
    station_id         text,
    state              text NOT NULL DEFAULT 'watching',
    activated_at       timestamptz,
    watchdog_deadline  timestamptz,
    webrtc_active_at   timestamptz,
    -- AC4: written together at the moment the fallback is triggered.
    webrtc_failed_at   timestamptz,
    fallback_reason    text CHECK (fallback_reason IN ('timeout',
                                                       'signalling_error')),
    call_initiated_at  timestamptz,
    provider_call_ref  text,
    call_connected_at  timestamptz,
    released_at        timestamptz,
    closed_at          timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sos_sessions_state_idx ON sos_sessions (state);

-- The worker reloads its timers from here on start: open sessions only.
CREATE INDEX sos_sessions_open_idx ON sos_sessions (watchdog_deadline)
    WHERE closed_at IS NULL AND released_at IS NULL;

CREATE INDEX sos_sessions_call_ref_idx ON sos_sessions (provider_call_ref)
    WHERE provider_call_ref IS NOT NULL;

CREATE FUNCTION hamrahi_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER sos_sessions_touch BEFORE UPDATE ON sos_sessions
    FOR EACH ROW EXECUTE FUNCTION hamrahi_touch_updated_at();

-- One row per call leg. outcome is the provider's final status (completed,
-- busy, no-answer, failed, canceled); NULL while the leg is in progress.
CREATE TABLE call_attempts (
    id                 bigserial PRIMARY KEY,
    session_id         text NOT NULL,
    leg                text NOT NULL CHECK (leg IN ('citizen', 'operator',
                                                    'supervisor')),
    step               integer,
    to_phone           text CHECK (to_phone ~ '^\+[1-9][0-9]{1,14}$'),
    provider_call_ref  text,
    outcome            text CHECK (outcome IN ('completed', 'busy',
                                               'no-answer', 'failed',
                                               'canceled')),
    started_at         timestamptz NOT NULL DEFAULT now(),
    ended_at           timestamptz
);

CREATE INDEX call_attempts_session_idx ON call_attempts (session_id);

-- A provider call reference names one leg: replaying a queued write after a
-- crash or an outage upserts instead of duplicating the row
-- (INSERT ... ON CONFLICT (provider_call_ref)
--  WHERE provider_call_ref IS NOT NULL DO UPDATE ...).
CREATE UNIQUE INDEX call_attempts_call_ref_key ON call_attempts
    (provider_call_ref) WHERE provider_call_ref IS NOT NULL;

-- kind: citizen_unanswered, bridge_failed, provider_rejected, ...
CREATE TABLE escalations (
    id          bigserial PRIMARY KEY,
    session_id  text NOT NULL,
    kind        text NOT NULL,
    raised_at   timestamptz NOT NULL DEFAULT now(),
    detail      jsonb
);

CREATE INDEX escalations_session_idx ON escalations (session_id);
CREATE INDEX escalations_raised_at_idx ON escalations (raised_at);

-- Redis stream ids already applied: redelivered events are skipped. Written
-- in the same transaction as the event's effects.
CREATE TABLE processed_events (
    stream_id     text PRIMARY KEY,
    session_id    text,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
