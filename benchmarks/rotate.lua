-- wrk script for bench_survey.py: rotate over request paths, count statuses,
-- and report what wrk's own summary lacks (the 95th percentile latency; the
-- --latency table stops at 50/75/90/99) on one machine-readable line:
--
--   BENCH requests=... duration_us=... p50_us=... p95_us=... p99_us=...
--         connect=... read=... write=... timeout=... statuses=200:123,303:4
--
-- Arguments, after `--` on wrk's command line:
--   paths_file  one request per line, rotated over: a path (e.g. /s/<token>),
--               optionally followed by a tab and the request's body, sent as
--               application/x-www-form-urlencoded
--   method      GET or POST
--
-- Every scenario (the bare baseline too) runs this same script, so the cost of
-- the Lua hooks is the same on every side of a ratio.

local threads = {}

function setup(thread)
   thread:set("thread_number", #threads)
   table.insert(threads, thread)
end

local prepared = {}
local position = 0

-- Global, so that done() can read each thread's copy with thread:get().
statuses = {}

function init(args)
   local paths_file, method = args[1], args[2]
   local form = {["Content-Type"] = "application/x-www-form-urlencoded"}
   local file = assert(io.open(paths_file, "r"))
   for line in file:lines() do
      local path, body = line:match("^([^\t]+)\t(.*)$")
      if path then
         table.insert(prepared, wrk.format(method, path, form, body))
      elseif line ~= "" then
         table.insert(prepared, wrk.format(method, line, {}, nil))
      end
   end
   file:close()
   assert(#prepared > 0, "no paths in " .. paths_file)
   -- Threads start at different places, so they do not hit the same rows.
   position = (thread_number * 7919) % #prepared
end

function request()
   position = position % #prepared + 1
   return prepared[position]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + count
      end
   end
   local codes = {}
   for status in pairs(counts) do
      table.insert(codes, status)
   end
   table.sort(codes)
   local parts = {}
   for _, status in ipairs(codes) do
      table.insert(parts, string.format("%d:%d", status, counts[status]))
   end
   local errors = summary.errors
   io.write(string.format(
      "BENCH requests=%.0f duration_us=%.0f p50_us=%.0f p95_us=%.0f p99_us=%.0f"
         .. " connect=%.0f read=%.0f write=%.0f timeout=%.0f statuses=%s\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(95), latency:percentile(99),
      errors.connect, errors.read, errors.write, errors.timeout,
      table.concat(parts, ",")
   ))
end
