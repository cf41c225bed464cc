-- wrk script for benchmarks/load.py --generator wrk: POST /search with request bodies prepared by load.py.
-- wrk -s wrk_search.lua URL -- MANIFEST : each manifest line is "<content type>\t<body file>"; every connection
-- cycles through the bodies from its own offset. done() prints one JSON line that load.py reads.
local bodies, types, count = {}, {}, 0
local position = 0

function init(args)
  for line in io.lines(args[1]) do
    local content_type, path = line:match("^([^\t]+)\t(.+)$")
    local file = assert(io.open(path, "rb"))
    count = count + 1
    bodies[count] = file:read("*a")
    types[count] = content_type
    file:close()
  end
  position = math.random(count)
end

function request()
  position = position % count + 1
  return wrk.format("POST", "/search", {["Content-Type"] = types[position]}, bodies[position])
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, errors.status, errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
