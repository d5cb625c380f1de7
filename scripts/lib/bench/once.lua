-- wrk script for scripts/bench: sends each prepared request exactly once,
-- spread over wrk's threads, then stops. wrk itself only knows "run for a
-- duration"; this script gives it a fixed amount of work instead.
--
-- Usage (arguments after wrk's `--`):
--   login    <email_prefix> <count> <result_file>
--     POST /api/auth/login for <email_prefix>-<i>@bench.local, i = 1..count;
--     the tokens are written one per line to <result_file>.tokens.
--   purchase <tokens_file> <sale_id> <run_id> <result_file>
--     one POST /api/purchase/attempt per token (quantity 1, a fresh
--     Idempotency-Key each).
--   pay <deliveries_file>
--     one POST /api/payments/webhook per line of <deliveries_file>, signed
--     beforehand (scripts/lib/bench/sign_payments.py): webhook-id,
--     webhook-timestamp, webhook-signature and the body, tab-separated.
-- Each writes a JSON summary (duration, answers below status 400, the
-- status mix except in purchase mode, latency percentiles, socket errors)
-- to <result_file>.

local thread_count = 0
local threads = {}

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
  table.insert(threads, thread)
end

-- Running phase: each thread's own globals.
local requests = {}
local claimed = 0
local sent = 0
local answered = 0
local parked = 0
local finish_when_parked = false
local connections_per_thread = nil
statuses = {}
tokens = {}
mode = nil

local function json_headers(extra)
  local headers = { ["Content-Type"] = "application/json" }
  for name, value in pairs(extra or {}) do headers[name] = value end
  return headers
end

local function prepare_logins(prefix, count, stride)
  for i = thread_index, count, stride do
    local body = string.format('{"email":"%s-%d@bench.local"}', prefix, i)
    table.insert(requests, wrk.format("POST", "/api/auth/login", json_headers(), body))
  end
end

local function prepare_purchases(tokens_file, sale_id, run_id, stride)
  local body = string.format('{"sale_id":"%s","quantity":1}', sale_id)
  local line_number = 0
  for token in io.lines(tokens_file) do
    line_number = line_number + 1
    if line_number % stride == thread_index % stride then
      local headers = json_headers({
        ["Authorization"] = "Bearer " .. token,
        ["Idempotency-Key"] = string.format("bench-%s-%d", run_id, line_number),
      })
      table.insert(requests, wrk.format("POST", "/api/purchase/attempt", headers, body))
    end
  end
end

local function prepare_payments(deliveries_file, stride)
  local line_number = 0
  for line in io.lines(deliveries_file) do
    line_number = line_number + 1
    if line_number % stride == thread_index % stride then
      local id, timestamp, signature, body = string.match(line, "^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)$")
      local headers = json_headers({
        ["webhook-id"] = id, ["webhook-timestamp"] = timestamp, ["webhook-signature"] = signature,
      })
      table.insert(requests, wrk.format("POST", "/api/payments/webhook", headers, body))
    end
  end
end

function init(args)
  mode = args[1]
  -- wrk calls setup() then init() for one thread at a time, and starts
  -- each thread before the next one's: no init() can count the threads,
  -- so the stride (the number wrk was started with) comes from outside.
  local stride = tonumber(os.getenv("BENCH_WRK_THREADS"))
  if mode == "login" then
    prepare_logins(args[2], tonumber(args[3]), stride)
  elseif mode == "purchase" then
    prepare_purchases(args[2], args[3], args[4], stride)
    -- wrk copies each answer's headers and body and builds a Lua table of
    -- them only for a script with a response() hook (it asks after init()).
    -- The purchases need only their statuses, which wrk counts itself
    -- (below 400 or not) and the API nodes count by code, so this mode
    -- drops the hook and knows it is done by its parked connections.
    response = nil
    finish_when_parked = true
    connections_per_thread = math.floor(tonumber(os.getenv("BENCH_WRK_CONNECTIONS")) / stride)
  elseif mode == "pay" then
    prepare_payments(args[2], stride)
  else
    error("first script argument must be login, purchase or pay, got " .. tostring(mode))
  end
end

-- A connection asks for a delay before each request: claim a request here so
-- that no two connections can both take the last one. Connections with
-- nothing left to send park for an hour; the thread stops long before.
function delay()
  if claimed < #requests then
    claimed = claimed + 1
    return 0
  end
  -- wrk asks before a connection's first request and after each answer,
  -- so a connection parks after its last answer: when all of the thread's
  -- connections have, every request it claimed was answered. One the
  -- server closes while parked (after nginx's 65 s keep-alive) reconnects
  -- and parks again, counted twice, and would stop its thread early;
  -- scripts/bench fails a run whose answers are fewer than its requests.
  parked = parked + 1
  if finish_when_parked and parked == connections_per_thread then
    finish_thread()
  end
  return 3600 * 1000
end

function request()
  if sent >= claimed then
    -- wrk calls request() once on the first thread before the run, to
    -- count the requests in what it returns; that one is never sent.
    return requests[1]
  end
  sent = sent + 1
  return requests[sent]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if mode == "login" and status == 200 then
    table.insert(tokens, string.match(body, '"token":"([^"]+)"'))
  end
  answered = answered + 1
  if answered == #requests then
    finish_thread()
  end
end

-- wrk's main thread sleeps for the whole -d duration whatever its threads
-- do. Each thread that has its answers says so in a file; scripts/bench
-- interrupts wrk (SIGINT) once every thread has, and wrk then reports the
-- real duration.
function finish_thread()
  wrk.thread:stop()
  local out = assert(io.open(os.getenv("BENCH_RESULT_FILE") .. ".finished", "a"))
  out:write(thread_index, "\n")
  out:close()
end

-- Done phase: merge what every thread saw and write the summary.
function done(summary, latency)
  local result_file = os.getenv("BENCH_RESULT_FILE")
  local merged = {}
  local token_out = nil
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
    if thread:get("mode") == "login" then
      token_out = token_out or assert(io.open(result_file .. ".tokens", "w"))
      for _, token in ipairs(thread:get("tokens")) do token_out:write(token, "\n") end
    end
  end
  if token_out then token_out:close() end

  -- Statuses by code where the response() hook counted them; a purchase
  -- run has wrk's own split only (the API nodes count them by code).
  local statuses = "null"
  if threads[1]:get("mode") ~= "purchase" then
    local status_fields = {}
    for status, count in pairs(merged) do
      table.insert(status_fields, string.format('"%d":%d', status, count))
    end
    statuses = "{" .. table.concat(status_fields, ",") .. "}"
  end
  local errors = summary.errors
  local out = assert(io.open(result_file, "w"))
  out:write(string.format(
    '{"duration_us":%d,"responses":%d,"below_400":%d,"statuses":%s,'
      .. '"latency_us":{"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.duration, summary.requests, summary.requests - errors.status, statuses,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    errors.connect, errors.read, errors.write, errors.timeout))
  out:close()
end
