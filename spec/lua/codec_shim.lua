--- Spec-only stand-in for the C module "codec".
--
-- Loaded by the lua/k8s specs ONLY when `require("codec")` fails (the real
-- build/codec.so is not built yet). It provides just the value markers the
-- support library relies on: `null`, `array`, `object`, `is_array`,
-- `is_object`, `array_mt`, `object_mt`. No encoders.

local M = {}


M.null = setmetatable({}, {
  __name = "codec.null",
  __tostring = function() return "null" end,
})
M.array_mt = { __name = "codec.array" }
M.object_mt = { __name = "codec.object" }


function M.array(t)
  return setmetatable(t or {}, M.array_mt)
end


function M.object(t)
  return setmetatable(t or {}, M.object_mt)
end


function M.is_array(v)
  return type(v) == "table" and getmetatable(v) == M.array_mt
end


function M.is_object(v)
  return type(v) == "table" and getmetatable(v) == M.object_mt
end


--- Installs the real codec when it loads, else this shim, as "codec".
-- @return table the codec module in use
function M.install()
  local ok, real = pcall(require, "codec")
  if ok then
    return real
  end
  package.loaded["codec"] = M
  return M
end


return M
