-- Single events: POST /v1/track, one Segment track call per request, unique messageId each.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")
dofile(here .. "event.lua")

pz_events_per_request = 1

function pz_request(seq)
  local message_id = string.format("%s:%d:%d", pz_prefix, pz_tid, seq)
  return wrk.format("POST", "/v1/track", nil, pz_event(message_id, pz_anonymous_id(), pz_iso_now()))
end
