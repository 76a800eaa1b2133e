-- wrk script of `benches/run`: a value never used before on every request, either a token read
-- from a file of fixed-width lines, or an organization counted into the path.
--
--   wrk ... -s distinct.lua URL -- tokens PATH FIRST LIMIT FILE WIDTH
--   wrk ... -s distinct.lua URL -- orgs   PATH FIRST LIMIT TOKEN 0
--
-- Values FIRST..LIMIT-1 are used in order, once. PATH is the request path (for `orgs`, a
-- format with one %07d for the organization's number). When they run out, the request goes
-- without a token: a 401, which wrk reports and which makes the run invalid. done() prints how
-- many values were used and whether they ran out.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  mode, path, first, limit = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  next_index = first
  exhausted = 0
  if mode == "tokens" then
    width = tonumber(args[6])
    file = assert(io.open(args[5], "rb"))
    file:seek("set", first * width)
  else
    auth = { Authorization = "Bearer " .. args[5] }
  end
end

function request()
  if next_index >= limit then
    exhausted = 1
    return wrk.format("GET", string.format(path, 0))
  end
  local i = next_index
  next_index = i + 1
  if mode == "tokens" then
    local token = file:read(width - 1)
    file:read(1)
    return wrk.format("GET", path, { Authorization = "Bearer " .. token })
  end
  return wrk.format("GET", string.format(path, i), auth)
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("distinct values used: %d exhausted: %d\n",
      t:get("next_index") - t:get("first"), t:get("exhausted")))
  end
end
