--- Spec helper for the lua/k8s specs: loads a support module the way the
-- policy sandbox does, so every spec exercises it under the same rules.
--
-- The module runs in a fresh environment holding only the allow-listed base
-- functions, string (without dump), table, math and utf8. Reading an
-- undeclared global or writing any global raises. `require` resolves "codec"
-- (the real build/codec.so when it loads, else spec/lua/codec_shim.lua) and
-- other k8s.* modules, loaded the same way; anything else raises.

local M = {}

local BASE = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
  "rawequal", "rawget", "rawlen", "rawset", "select", "setmetatable",
  "tonumber", "tostring", "type", "xpcall", "_VERSION",
}


local function strict(env, what)
  return setmetatable(env, {
    __index = function(_, k)
      error(what .. ": read of undeclared global '" .. tostring(k) .. "'", 2)
    end,
    __newindex = function(_, k)
      error(what .. ": write to global '" .. tostring(k) .. "'", 2)
    end,
  })
end


local function new_env(sandbox_require, what)
  local env = {}
  for _, k in ipairs(BASE) do
    env[k] = _G[k]
  end
  local str = {}
  for k, v in pairs(string) do
    if k ~= "dump" then
      str[k] = v
    end
  end
  env.string = str
  env.table = table
  env.math = math
  env.utf8 = utf8
  env.require = sandbox_require
  return strict(env, what)
end


--- Loads a k8s.* module (and what it requires) in sandbox-like environments.
-- @param name string e.g. "k8s.quantity"
-- @return table the module
function M.require(name)
  local codec = require("codec_shim").install()
  local loaded = {}
  local function sandbox_require(mod)
    if mod == "codec" then
      return codec
    end
    if loaded[mod] ~= nil then
      return loaded[mod]
    end
    if type(mod) ~= "string" or not mod:match("^k8s%.[%w_]+$") then
      error("sandbox: require of '" .. tostring(mod) .. "' is not allowed", 2)
    end
    local path = assert(package.searchpath(mod, package.path))
    local chunk = assert(loadfile(path, "t", new_env(sandbox_require, mod)))
    local m = chunk()
    loaded[mod] = m
    return m
  end
  return sandbox_require(name)
end


return M
