-- wrk script: every request targets the NEXT id of a pre-created range, so each run report is a
-- real first report (never an idempotent replay).
--
-- Run wrk with -t1: one thread, one Lua state, one counter. Parameters come from the
-- environment (the harness sets them):
--   BENCH_METHOD    PATCH or POST
--   BENCH_PATH      request path; "{ID}" is replaced by the id
--   BENCH_BODY      request body; "{ID}" (if present) is replaced by the id
--   BENCH_TOKEN     bearer token
--   BENCH_FIRST_ID  first id of the range
--   BENCH_ID_COUNT  ids in the range
--   BENCH_CYCLE     "1": go round the range again and again (appends to a set of open runs:
--                   consecutive requests, hence the ones in flight together, target different
--                   runs); otherwise each id is used once
--   BENCH_DELAY_MS  optional pause of each connection before each request (caps the request
--                   rate at connections * 1000 / BENCH_DELAY_MS, for latency scenarios)
-- When the range is exhausted (not in cycle mode) the script sends id 0, which does not exist:
-- the server answers 404, wrk counts a non-2xx response and the harness marks the scenario
-- INVALID rather than measuring replays.

local function split(template)
  local s, e = string.find(template, "{ID}", 1, true)
  if not s then
    return template, nil
  end
  return string.sub(template, 1, s - 1), string.sub(template, e + 1)
end

local method = os.getenv("BENCH_METHOD") or "PATCH"
local path_a, path_b = split(os.getenv("BENCH_PATH") or "/")
local body_a, body_b = split(os.getenv("BENCH_BODY") or "")
local auth = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
local first = tonumber(os.getenv("BENCH_FIRST_ID") or "0")
local count = tonumber(os.getenv("BENCH_ID_COUNT") or "0")
local cycle = os.getenv("BENCH_CYCLE") == "1"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

-- Global, so that done() (which runs in another Lua state) can read it via thread:get.
counter = 0

function request()
  local id = 0
  if cycle and count > 0 then
    id = first + counter % count
  elseif counter < count then
    id = first + counter
  end
  counter = counter + 1
  local path = path_a
  if path_b then
    path = path_a .. string.format("%d", id) .. path_b
  end
  local body = body_a
  if body_b then
    body = body_a .. string.format("%d", id) .. body_b
  end
  -- A fresh header table each time: wrk.format stores Content-Length in it.
  local headers = {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/json",
  }
  return wrk.format(method, path, headers, body)
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    if cycle then
      io.write(string.format("BENCH_IDS_CYCLED %d over %d\n", thread:get("counter"), count))
    else
      io.write(string.format("BENCH_IDS_USED %d of %d\n", thread:get("counter"), count))
    end
  end
end
