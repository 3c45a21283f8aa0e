-- The floor: POST /bench/floor with the same body as track.lua. Same DRF stack, body parsing and
-- key check, but nothing is validated further or stored.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")
dofile(here .. "event.lua")

pz_events_per_request = 1

function pz_request(seq)
  local message_id = string.format("%s:%d:%d", pz_prefix, pz_tid, seq)
  return wrk.format("POST", "/bench/floor", nil, pz_event(message_id, pz_anonymous_id(), pz_iso_now()))
end
