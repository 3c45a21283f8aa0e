-- Shared by floor.lua, track.lua and batch.lua (loaded with dofile): request budget and soft
-- deadline per thread, counting of answers, latency of real requests, and one summary line
-- ("PZBENCH {json}") for bench/ingest.py.
--
-- Run with one connection per thread (-t N -c N): each thread then has at most one request in
-- flight, so it knows exactly which answer belongs to which request, and times them itself.
--
-- Arguments after `--`, as key=value: budget (requests per thread), soft (seconds), prefix
-- (message-id prefix), marker (path prefix: "<marker><thread id>" is written once the thread is
-- done), pool (anonymous ids), batch (events per request), rate (requests per second per thread:
-- a paced load; 0, the default, sends the next request as soon as the answer is in).
--
-- Paced (rate > 0), each thread sends on a fixed schedule (its first send at a random point of
-- its first interval, so threads do not send in step), and a request's latency is counted from
-- when the schedule said to send it: an answer late enough to delay the next send makes that
-- next one late too (no coordinated omission).
--
-- A thread sends real requests until it has sent its budget or passed the soft deadline. Its last
-- real request is then answered (one in flight at most), so it writes its marker and switches to
-- cheap `GET /healthz` fillers, which keep its connection busy: a gunicorn sync worker would
-- otherwise sit on the idle connection that wrk reopens, starving the threads still working.
-- wrk only ends at -d (the hard cap), so the driver sends SIGINT once every marker exists.
-- Rates are measured here, from each thread's first send to its last real answer; fillers are
-- counted apart and are in neither the rates nor the latencies.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } pz_timespec;
int clock_gettime(int clk_id, pz_timespec *tp);
]])
local ts = ffi.new("pz_timespec")

function pz_monotonic()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

function pz_iso_now()
  ffi.C.clock_gettime(0, ts)
  local sec = tonumber(ts.tv_sec)
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. string.format(".%03dZ", math.floor(tonumber(ts.tv_nsec) / 1e6))
end

-- ---- thread state (globals, read by done() through thread:get) ---------------------------------
pz_tid = 0
pz_sent = 0       -- real requests sent
pz_answered = 0   -- real requests answered
pz_ok = 0         -- ... with 2xx
pz_bad = 0        -- ... with anything else
pz_lost = 0       -- real requests whose connection failed before an answer (outcome unknown)
pz_ok_events = 0  -- events in requests answered 2xx
pz_accepted = 0   -- sum of "accepted" in 2xx answers
pz_duplicates = 0 -- sum of "duplicates" in 2xx answers
pz_rejected = 0   -- 2xx answers listing rejected events
pz_fillers = 0
pz_t0 = 0
pz_t1 = 0
pz_done = 0
pz_bad_sample = ""
pz_latency = {}   -- ms, real requests only

local budget, soft, marker = 1e12, 1e9, ""
local draining = false
local armed = false -- set by delay(), which wrk calls before each request of a running thread
local outstanding = nil -- "real", "filler" or nil
local sent_at = 0
local rate = 0       -- requests per second of this thread; 0: closed loop
local next_at = 0    -- when the schedule says to send the next real request
pz_prefix, pz_pool, pz_batch, pz_events_per_request = "x", 5000, 100, 1
pz_fresh = false  -- fresh=1: every event from a visitor never seen before

function init(args)
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key == "budget" then budget = tonumber(value)
    elseif key == "soft" then soft = tonumber(value)
    elseif key == "prefix" then pz_prefix = value
    elseif key == "marker" then marker = value
    elseif key == "pool" then pz_pool = tonumber(value)
    elseif key == "batch" then pz_batch = tonumber(value)
    elseif key == "fresh" then pz_fresh = (value == "1")
    elseif key == "rate" then rate = tonumber(value)
    end
  end
  math.randomseed(pz_tid * 7919 + os.time())
  if pz_init then pz_init() end
end

local filler = nil

local function filler_request()
  filler = filler or wrk.format("GET", "/healthz", {}, nil)
  return filler
end

local function drain()
  draining = true
  pz_done = 1
  if marker ~= "" then
    local f = io.open(marker .. pz_tid, "w")
    if f then f:write(string.format("%d %d\n", pz_sent, pz_answered)); f:close() end
  end
end

function delay()
  armed = true
  if draining then return 5 end
  if rate > 0 then
    local now = pz_monotonic()
    if next_at == 0 then next_at = now + math.random() / rate end
    local wait = (next_at - now) * 1000
    if wait > 0 then return wait end
  end
  return 0
end

function request()
  if outstanding == "real" then
    pz_lost = pz_lost + 1 -- the connection broke before its answer: wrk moved on
  end
  local was_armed = armed
  armed = false
  if draining or not was_armed then
    -- Not armed: wrk checking the script before the run, or resending after a broken connection.
    outstanding = "filler"
    if was_armed then pz_fillers = pz_fillers + 1 end
    return filler_request()
  end
  pz_sent = pz_sent + 1
  local req = pz_request(pz_sent)
  outstanding = "real"
  sent_at = pz_monotonic()
  if rate > 0 and next_at > 0 then
    sent_at = math.min(sent_at, next_at) -- late by the schedule: the wait counts as latency
    next_at = next_at + 1 / rate
  end
  if pz_t0 == 0 then pz_t0 = sent_at end
  return req
end

function response(status, headers, body)
  local now = pz_monotonic()
  if outstanding ~= "real" then
    outstanding = nil
    return
  end
  outstanding = nil
  pz_answered = pz_answered + 1
  pz_t1 = now
  pz_latency[#pz_latency + 1] = (now - sent_at) * 1000
  if status >= 200 and status < 300 then
    pz_ok = pz_ok + 1
    pz_ok_events = pz_ok_events + pz_events_per_request
    if body and #body > 0 then
      local accepted = body:match('"accepted":%s*(%d+)')
      local duplicates = body:match('"duplicates":%s*(%d+)')
      if accepted then pz_accepted = pz_accepted + tonumber(accepted) end
      if duplicates then pz_duplicates = pz_duplicates + tonumber(duplicates) end
      if body:find('"rejected"') and not body:find('"rejected":%s*%[%]') then pz_rejected = pz_rejected + 1 end
    end
  else
    pz_bad = pz_bad + 1
    if pz_bad_sample == "" then
      pz_bad_sample = tostring(status) .. " " .. string.sub(body or "", 1, 300)
    end
  end
  if pz_sent >= budget or now - pz_t0 >= soft then
    drain()
  end
end

-- ---- setup and summary (a separate Lua state) ---------------------------------------------------
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("pz_tid", #threads)
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 end
  local rank = math.max(1, math.ceil(p / 100 * #sorted))
  return sorted[rank]
end

function done(summary, latency, requests)
  local keys = {
    "pz_sent", "pz_answered", "pz_ok", "pz_bad", "pz_lost", "pz_ok_events", "pz_accepted",
    "pz_duplicates", "pz_rejected", "pz_fillers", "pz_done",
  }
  local total = {}
  for _, key in ipairs(keys) do total[key] = 0 end
  local t0, t1, bad_sample, lat, in_flight = nil, nil, "", {}, 0
  for _, thread in ipairs(threads) do
    for _, key in ipairs(keys) do total[key] = total[key] + (thread:get(key) or 0) end
    local a, b = thread:get("pz_t0"), thread:get("pz_t1")
    if a and a > 0 and (t0 == nil or a < t0) then t0 = a end
    if b and b > 0 and (t1 == nil or b > t1) then t1 = b end
    if bad_sample == "" then bad_sample = thread:get("pz_bad_sample") or "" end
    for _, ms in ipairs(thread:get("pz_latency") or {}) do lat[#lat + 1] = ms end
  end
  table.sort(lat)
  local sum = 0
  for _, ms in ipairs(lat) do sum = sum + ms end
  local parts = {}
  for _, key in ipairs(keys) do
    table.insert(parts, string.format('"%s": %d', key:sub(4), total[key]))
  end
  local e = summary.errors
  table.insert(parts, string.format('"threads": %d', #threads))
  table.insert(parts, string.format('"elapsed_s": %.6f', (t0 and t1) and (t1 - t0) or 0))
  table.insert(parts, string.format('"wrk_duration_s": %.6f', summary.duration / 1e6))
  table.insert(parts, string.format('"wrk_requests": %d', summary.requests))
  table.insert(parts, string.format(
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}',
    e.connect, e.read, e.write, e.status, e.timeout))
  table.insert(parts, string.format(
    '"latency_ms": {"mean": %.3f, "p50": %.3f, "p90": %.3f, "p99": %.3f, "p999": %.3f, "max": %.3f}',
    #lat > 0 and sum / #lat or 0, percentile(lat, 50), percentile(lat, 90), percentile(lat, 99),
    percentile(lat, 99.9), lat[#lat] or 0))
  table.insert(parts, '"bad_sample": ' .. json_string(bad_sample))
  io.write("PZBENCH {" .. table.concat(parts, ", ") .. "}\n")
end
