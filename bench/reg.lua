-- wrk script for bench/writes.py --client wrk: each request registers a new instance (PUT),
-- 10 instances per service, as the Python client does.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  n = tid * 1000000
end
request = function()
  n = n + 1
  local path = string.format("/v1/services/s%d/instances/i%d", math.floor(n / 10), n % 10)
  local body = string.format('{"address":"10.%d.%d.%d","port":80}', math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("PUT", path, {["Content-Type"] = "application/json"}, body)
end
