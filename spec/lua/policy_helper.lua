--- Spec helper for policies: loads a policy set the way the operator does
-- (core/policy.c), so a busted spec tests a custom policy directory as it
-- will run.
--
-- load(dir) runs dir/dittoserver.lua with `require` resolving, in order:
-- dir/<name>.lua (a.b -> a/b.lua), the embedded policies/ (so
-- dittoserver.default and its modules stay reachable behind a custom
-- dittoserver.lua), lua/, then "codec" (the real build/codec.so). Every
-- module runs once per load in a fresh environment holding only the
-- sandbox's allow-list (base without load/loadfile/dofile/collectgarbage/
-- print, string without dump, table, math, utf8); reading an undeclared
-- global or writing any global raises, as in the sandbox. The time and
-- memory budgets are the operator's alone: run --script-test for those.
local codec = require("codec")

local M = {}

local BASE = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
  "rawequal", "rawget", "rawlen", "rawset", "select", "setmetatable",
  "tonumber", "tostring", "type", "xpcall", "_VERSION", "table", "math",
  "utf8",
}

local LIB = {}
for _, k in ipairs(BASE) do
  LIB[k] = _G[k]
end
LIB.string = {}
for k, v in pairs(string) do
  if k ~= "dump" then
    LIB.string[k] = v
  end
end


local function read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read("a")
  f:close()
  return text
end


--- Loads the policy of a directory.
-- @param dir string a policies directory holding dittoserver.lua
-- @param root string|nil the repository (default: the working directory)
-- @return table the policy dittoserver.lua returns
function M.load(dir, root)
  root = root or "."
  local search = { dir .. "/", root .. "/policies/", root .. "/lua/" }
  local loaded = { codec = codec }
  local require_in

  local function new_env()
    local env = {}
    for k, v in pairs(LIB) do
      env[k] = v
    end
    env.require = require_in
    return setmetatable(env, {
      __index = function(_, k)
        error("read of undeclared global '" .. tostring(k) .. "'", 2)
      end,
      __newindex = function(_, k)
        error("write of undeclared global '" .. tostring(k) .. "'", 2)
      end,
    })
  end

  require_in = function(name)
    if loaded[name] ~= nil then
      return loaded[name]
    end
    local rel = name:gsub("%.", "/") .. ".lua"
    for _, d in ipairs(search) do
      local text = read(d .. rel)
      if text then
        local chunk = assert(load(text, "@" .. d .. rel, "t", new_env()))
        loaded[name] = chunk(name)
        return loaded[name]
      end
    end
    error("module '" .. name .. "' not found", 2)
  end

  return require_in("dittoserver")
end


--- The documents of a YAML file.
function M.read_yaml(path)
  local text = assert(read(path), path)
  return assert(codec.yaml_decode_all(text))
end


--- The DittoServer of a YAML file, as the apiserver would store it (CRD
-- defaults applied).
function M.load_ds(path)
  for _, d in ipairs(M.read_yaml(path)) do
    if type(d) == "table" and d.kind == "DittoServer" then
      local schema = M.load_schema()
      d.spec = schema.defaulted_copy(d.spec, schema.SPEC)
      return d
    end
  end
  error("no DittoServer in " .. path)
end


--- dittoserver_schema, loaded once.
local schema_module
function M.load_schema()
  schema_module = schema_module or require("dittoserver_schema")
  return schema_module
end


--- The render ctx of a DittoServer as the core passes it.
function M.ctx_for(ds)
  return {
    name = ds.metadata.name,
    namespace = ds.metadata.namespace or "default",
    cluster_domain = "cluster.local",
    operator_version = "test",
  }
end


--- Runs `dittofs-operator --script-test file --policies dir` ($DITTOFS_OPERATOR,
-- set by ctest, default build/dittofs-operator).
-- @return string stdout, string stderr, number exit code
function M.script_test(file, dir)
  local bin = os.getenv("DITTOFS_OPERATOR") or "build/dittofs-operator"
  local err = os.tmpname()
  local p = assert(io.popen(string.format("%q --script-test %q --policies "
    .. "%q 2>%q", bin, file, dir, err)))
  local out = p:read("a")
  local _, _, code = p:close()
  local stderr = read(err) or ""
  os.remove(err)
  return out, stderr, code
end


M.read = read


return M
