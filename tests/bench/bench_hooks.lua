-- wrk script for tests/bench/bench_hooks.sh.
-- BENCH_SIGNED_FILE set: POST pre-signed activations ("signature<TAB>body"
-- lines). The replay key of a hook is (session, route, signature), so thread
-- t sends body k to sessions bench-RUN-t-0 .. bench-RUN-t-999 before moving to
-- body k + 1: every request is a new event, and few signatures are needed
-- (RUN: BENCH_RUN_TAG, distinct per run).
-- Otherwise: plain GETs of the URL. done() prints one line:
-- RESULT key=value ...

local threads = {}
local counter = 0

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
    table.insert(threads, thread)
end

local signed, sent = nil, 0
other = 0       -- globals: done() reads them from each thread
exhausted = 0

function init(args)
    local file = os.getenv("BENCH_SIGNED_FILE")
    if file == nil or file == "" then
        return
    end
    signed = {}
    for line in io.lines(file) do
        local sig, body = line:match("^([^\t]+)\t(.*)$")
        signed[#signed + 1] = { sig = sig, body = body }
    end
end

function request()
    if signed == nil then
        return wrk.request()
    end
    local entry = signed[math.floor(sent / 1000) + 1]
    if entry == nil then
        -- out of fresh requests: a replay (409) would measure another path
        exhausted = exhausted + 1
        entry = signed[#signed]
    end
    local path = string.format("/v1/sos/sessions/bench-%s-%d-%d/activated",
                               os.getenv("BENCH_RUN_TAG") or "", id, sent % 1000)
    sent = sent + 1
    return wrk.format("POST", path, {
        ["Content-Type"] = "application/json",
        ["X-Hamrahi-Signature"] = entry.sig }, entry.body)
end

function response(status, headers, body)
    if status ~= (signed == nil and 204 or 202) then
        other = other + 1
    end
end

function done(summary, latency, requests)
    local unexpected, short = 0, 0
    for _, t in ipairs(threads) do
        unexpected = unexpected + (t:get("other") or 0)
        short = short + (t:get("exhausted") or 0)
    end
    io.write(string.format(
        "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d " ..
        "unexpected_status=%d socket_errors=%d replays_sent=%d\n",
        summary.requests, summary.duration,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), latency.max, unexpected,
        summary.errors.connect + summary.errors.read + summary.errors.write +
        summary.errors.timeout, short))
end
