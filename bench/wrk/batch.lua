-- Batches: POST /v1/batch with pz_batch Segment track calls per request (unique messageIds), each
-- from a visitor of the pool, as a server-side SDK flushing its queue would send them.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")
dofile(here .. "event.lua")

function pz_init()
  pz_events_per_request = pz_batch
end

function pz_request(seq)
  local now = pz_iso_now()
  local events = {}
  for i = 1, pz_batch do
    events[i] = pz_event(string.format("%s:%d:%d:%d", pz_prefix, pz_tid, seq, i), pz_anonymous_id(), now)
  end
  return wrk.format("POST", "/v1/batch", nil, '{"batch":[' .. table.concat(events, ",") .. '],"sentAt":"' .. now .. '"}')
end
