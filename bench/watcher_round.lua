-- wrk script: a Watcher job's round, four requests one after the other on each connection:
--   1. POST /pipeline {"name", "pipeline_type_name", "next_watermark"}   (found: 200)
--   2. POST /start_pipeline_execution {"pipeline_id", "parent_id"}       (201 {"id": N})
--   3. POST /end_pipeline_execution {"id": N, "end_date", "completed_successfully": true,
--      "total_rows", "inserts", "updates", "soft_deletes"}              (204)
--   4. GET /pipeline_execution/N                                          (200)
-- then the next round. `next_watermark` is new every round (a job's next high-water mark), so
-- the found pipeline stores it, and the successful end moves it into `watermark`.
--
-- Run wrk with as many threads as connections (-tN -cN): each thread has its own Lua state and
-- one connection, so its state is the connection's (wrk's request()/response() do not say
-- which connection they are for). Thread n (1-based, in setup() order) is the job of the n-th
-- pipeline. Parameters come from the environment (the harness sets them):
--   BENCH_TOKEN      bearer token (read,report)
--   BENCH_PIPELINES  comma-separated pipeline ids, one per thread
--   BENCH_NAMES      comma-separated pipeline names, in the same order
--   BENCH_PARENTS    comma-separated parent execution ids (each pipeline's running root)
--   BENCH_TYPE       pipeline_type_name
-- When a start's answer holds no id, the round goes on with id 0, which does not exist: the
-- server answers 404 to the end and the GET, wrk counts non-2xx responses and the harness marks
-- the run INVALID. done() prints BENCH_ROUNDS (rounds whose GET answered 200, all threads) and
-- BENCH_ROUND_STARTS_WITHOUT_ID.

local function split_list(text)
  local out = {}
  for item in string.gmatch(text or "", "[^,]+") do
    table.insert(out, item)
  end
  return out
end

local auth = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
local type_name = os.getenv("BENCH_TYPE") or "extraction"
local pipelines = split_list(os.getenv("BENCH_PIPELINES"))
local names = split_list(os.getenv("BENCH_NAMES"))
local parents = split_list(os.getenv("BENCH_PARENTS"))

-- Per thread (set in setup() through thread:set, read back in done() through thread:get).
index = 0
rounds = 0
no_id = 0

local step = 0 -- 0 pipeline, 1 start, 2 end, 3 get
local execution = 0
local counter = 0

local function headers()
  -- A fresh table each time: wrk.format stores Content-Length in it.
  return {["Authorization"] = auth, ["Content-Type"] = "application/json"}
end

function request()
  local n = index
  if step == 0 then
    counter = counter + 1
    local body = string.format(
      '{"name": "%s", "pipeline_type_name": "%s", "next_watermark": "%d"}',
      names[n] or "", type_name, counter)
    return wrk.format("POST", "/pipeline", headers(), body)
  elseif step == 1 then
    local body = string.format('{"pipeline_id": %s, "parent_id": %s}',
                               pipelines[n] or "0", parents[n] or "0")
    return wrk.format("POST", "/start_pipeline_execution", headers(), body)
  elseif step == 2 then
    -- Two whole seconds past now: always after the start. (One was not: os.time() is the C
    -- library's time(), a coarse clock that lags the servers' precise one by up to a few
    -- milliseconds, so a start stamped in the first milliseconds of a second could be later
    -- than os.time() + 1, and the end was refused 400, about once in 5,000 requests.)
    local ended = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 2)
    local body = string.format(
      '{"id": %d, "end_date": "%s", "completed_successfully": true, "total_rows": 1000, '
      .. '"inserts": 600, "updates": 300, "soft_deletes": 100}', execution, ended)
    return wrk.format("POST", "/end_pipeline_execution", headers(), body)
  else
    return wrk.format("GET", string.format("/pipeline_execution/%d", execution), headers())
  end
end

function response(status, response_headers, body)
  if step == 1 then
    local id = status == 201 and body and string.match(body, '"id"%s*:%s*(%d+)')
    if id then
      execution = tonumber(id)
    else
      execution = 0
      no_id = no_id + 1
    end
  elseif step == 3 and status == 200 then
    rounds = rounds + 1
  end
  step = (step + 1) % 4
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

function done(summary, latency, requests)
  local total, missing = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("rounds")
    missing = missing + thread:get("no_id")
  end
  io.write(string.format("BENCH_ROUNDS %d\n", total))
  io.write(string.format("BENCH_ROUND_STARTS_WITHOUT_ID %d\n", missing))
end
