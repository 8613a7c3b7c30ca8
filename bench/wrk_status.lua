-- POST the body in WRK_BODY_FILE; count answers by status; at the end print one JSON line with
-- the counts and latency percentiles (of every answer, whatever its status).
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  ok, unavailable, other = 0, 0, 0
end

response = function(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 503 then
    unavailable = unavailable + 1
  else
    other = other + 1
  end
end

done = function(summary, latency, requests)
  local counted = {ok = 0, unavailable = 0, other = 0}
  for _, thread in ipairs(threads) do
    counted.ok = counted.ok + thread:get("ok")
    counted.unavailable = counted.unavailable + thread:get("unavailable")
    counted.other = counted.other + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "ok": %d, "unavailable": %d, "other": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, counted.ok, counted.unavailable, counted.other,
    latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.timeout))
end
