-- wrk script for bench/bench_http.py: POST one fixed body, print the result as JSON.
--
--   wrk -t1 -c32 -d5s --latency -s bench/post.lua http://127.0.0.1:PORT/predict -- BODY_FILE
--   wrk ... -s bench/post.lua URL -- BODY_FILE 'Content-Type: application/octet-stream' \
--       'Inference-Header-Content-Length: 123'
--
-- The body is read from BODY_FILE once per thread (init runs in every thread) and sent with
-- Content-Type: application/json; each argument after it is a header "Name: value" sent
-- too (the same name replaces: a Content-Type given there is the one sent). done()
-- prints one line, prefixed "WRK_JSON " so the driver finds it among wrk's own output:
-- requests, seconds, req/s, latency p50/p90/p99/max in microseconds, and the error counts
-- (status counts answers that were not 2xx or 3xx).

local function read_all(path)
   local file = assert(io.open(path, "rb"), "cannot open body file " .. tostring(path))
   local data = file:read("*a")
   file:close()
   return data
end

function init(args)
   local path = args[1]
   if path == nil then
      error("post.lua needs the body file after --")
   end
   wrk.method = "POST"
   wrk.body = read_all(path)
   wrk.headers["Content-Type"] = "application/json"
   for i = 2, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      if name == nil then
         error("post.lua: the argument " .. args[i] .. " is not a header 'Name: value'")
      end
      wrk.headers[name] = value
   end
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "seconds": %.6f, "rps": %.3f, "bytes": %d, '
         .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, seconds, summary.requests / seconds, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout))
end
