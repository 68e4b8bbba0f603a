-- dittoserver.common: the constants and small helpers the default policy's
-- modules share (dittoserver.config, .validation, .pod, .services,
-- .status). Read-only for custom policies: to change a path or a port,
-- replace the step that uses it (policies/README.md).
-- Uses: codec (markers, utf8_cut), k8s.quantity.
local codec = require("codec")
local quantity = require("k8s.quantity")

local type = type
local ipairs = ipairs
local tostring = tostring
local math_type = math.type
local format = string.format
local array = codec.array

local M = {}


--- Port of the server's Prometheus endpoint (server.metrics.port).
M.METRICS_PORT = 9090
--- Pod-template annotation carrying the hash of config.yaml.
M.CONFIG_HASH_ANNOTATION = "dittofs.dittofs.com/config-hash"
--- Where the ConfigMap is mounted and the file the server reads.
M.CONFIG_DIR = "/config"
M.CONFIG_FILE = "/config/config.yaml"
--- Mount points of the two persistent volumes.
M.METADATA_DIR = "/data/metadata"
M.CONTENT_DIR = "/data/content"
--- Local content on the metadata volume when there is no content volume.
M.SHARED_CONTENT_DIR = "/data/metadata/content"
--- UID/GID of the server image's non-root user.
M.RUN_AS = 65532
--- Server shutdown budget (server.shutdown_timeout) plus a margin.
M.TERMINATION_GRACE_SECONDS = 40
--- Longest DittoServer name: pods carry "<name>-<revision hash>" (up to
-- 11 more characters) in a label value limited to 63.
M.MAX_NAME = 52
--- app.kubernetes.io/name of every object the default renders.
M.APP = "dittofs-server"
--- Longest condition message, in bytes (metav1.Condition allows 32768).
M.MAX_MESSAGE = 32000
--- Longest report of one pod problem (a termination message can be 4 KiB).
M.MAX_PROBLEM = 4096


function M.is_str(v)
  return type(v) == "string"
end


function M.is_int(v)
  return math_type(v) == "integer"
end


--- v when it is a table, else an empty one.
function M.list(v)
  if type(v) == "table" then
    return v
  end
  return {}
end


--- Copy of a list of strings as a codec array ([] when absent).
function M.str_array(v)
  local out = array({})
  for i, s in ipairs(M.list(v)) do
    out[i] = s
  end
  return out
end


--- "share[i-1] (name)": how messages name a share.
function M.share_label(i, share)
  local name = type(share) == "table" and share.name or nil
  return format("share[%d] (%s)", i - 1, tostring(name or ""))
end


--- Size in bytes of a quantity string: integer | nil, error text.
-- "" and "0" are 0 (upstream: unlimited).
function M.size_bytes(s)
  if s == "" or s == "0" then
    return 0
  end
  local q, err = quantity.parse(s)
  if not q then
    return nil, err
  end
  if q.sign < 0 then
    return nil, format("%q must not be negative", s)
  end
  if q.scale < 0 then
    return nil, format("%q is not a whole number of bytes", s)
  end
  return quantity.to_bytes(q)
end


local DURATION_UNITS = { ns = true, us = true, ms = true, s = true,
  m = true, h = true }

--- A Go duration as the CRD pattern accepts it: 10s, 1m30s, 1.5h.
function M.is_duration(s)
  if not M.is_str(s) or s == "" then
    return false
  end
  local pos = 1
  while pos <= #s do
    local num, unit, nxt = s:match("^(%d+%.?%d*)(%a+)()", pos)
    if not num or num:sub(-1) == "." or not DURATION_UNITS[unit] then
      return false
    end
    pos = nxt
  end
  return true
end


--- Where local content goes by default: the content volume, or the
-- metadata volume when there is none.
function M.local_content_dir(spec)
  local storage = type(spec.storage) == "table" and spec.storage or {}
  return storage.contentSize and M.CONTENT_DIR or M.SHARED_CONTENT_DIR
end


--- True when path is dir or below it.
function M.is_under(path, dir)
  return path == dir or path:sub(1, #dir + 1) == dir .. "/"
end


--- name -> {index=, value=} of the first entry with each name.
function M.index_by_name(entries)
  local by = {}
  for i, e in ipairs(M.list(entries)) do
    if type(e) == "table" and M.is_str(e.name) and by[e.name] == nil then
      by[e.name] = { index = i, value = e }
    end
  end
  return by
end


--- Whether a SecurityContext adds capability `cap` (with or without CAP_).
function M.has_capability(sc, cap)
  local caps = type(sc) == "table" and type(sc.capabilities) == "table"
    and sc.capabilities.add or nil
  for _, c in ipairs(M.list(caps)) do
    if c == cap or c == "CAP_" .. cap then
      return true
    end
  end
  return false
end


--- s cut to at most max bytes plus "...", on a UTF-8 character boundary:
-- half a character would make the status JSON the encoder refuses. The cut
-- itself is the core's (codec.utf8_cut), the one the Reconciled condition
-- and Events get.
function M.cut(s, max)
  if #s <= max then
    return s
  end
  return codec.utf8_cut(s, max) .. "..."
end


return M
