--- k8s.conditions: status conditions (metav1.Condition shaped).
--
-- A condition is a table {type=, status=, reason=, message=} plus, once the
-- core has stamped it, lastTransitionTime (and optionally observedGeneration).
-- Lists are codec arrays; functions that change a list do it in place and
-- return it. Policies never pass a clock: `now` comes from the core.
--
-- API:
--   new(type, status, reason, message) -> condition | nil, err
--       status "True"/"False"/"Unknown" (or a boolean); reason CamelCase
--       (^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$, <= 1024); message a string
--       (nil -> "", <= 32768 bytes); type as metav1.Condition (<= 316)
--   validate(cond)            -> true | nil, err
--   set(list, cond)           -> list; replaces the condition of the same type
--                                in place (order kept) or appends it; when the
--                                status is unchanged and cond has no
--                                lastTransitionTime, the old one is kept
--                                (like meta.SetStatusCondition)
--   get(list, type)           -> condition | nil
--   remove(list, type)        -> list (without that type)
--   status_of(list, type)     -> "True" | "False" | "Unknown" | nil
--   is_true / is_false / is_unknown(list, type) -> boolean
--   merge_transition(old_list, new_list, now) -> new list (copies of
--       new_list's conditions, same order) where lastTransitionTime is old's
--       when the same type had the same status, `now` otherwise

local codec = require("codec")

local M = {}

local type = type
local ipairs = ipairs
local pairs = pairs
local find = string.find
local format = string.format

--- Allowed statuses.
M.TRUE = "True"
M.FALSE = "False"
M.UNKNOWN = "Unknown"

local STATUSES = { True = true, False = true, Unknown = true }
local MAX_TYPE = 316
local MAX_REASON = 1024
local MAX_MESSAGE = 32768


-- metav1.Condition type: an optional DNS-subdomain prefix and "/", then a
-- qualified name part ([A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9], <= 63 chars).
local function is_valid_type(t)
  if type(t) ~= "string" or t == "" or #t > MAX_TYPE then
    return false
  end
  local prefix, name = t:match("^(.*)/([^/]*)$")
  if prefix == nil then
    name = t
  else
    if prefix == "" or #prefix > 253 then
      return false
    end
    for label in (prefix .. "."):gmatch("([^.]*)%.") do
      if not find(label, "^[a-z0-9]$")
        and not find(label, "^[a-z0-9][-a-z0-9]*[a-z0-9]$") then
        return false
      end
    end
  end
  if #name > 63 then
    return false
  end
  return find(name, "^[A-Za-z0-9]$") ~= nil
    or find(name, "^[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]$") ~= nil
end


local function is_valid_reason(r)
  if type(r) ~= "string" or #r > MAX_REASON then
    return false
  end
  return find(r, "^[A-Za-z]$") ~= nil
    or find(r, "^[A-Za-z][A-Za-z0-9_,:]*[A-Za-z0-9_]$") ~= nil
end


--- Checks a condition table.
-- @param cond table
-- @return true|nil
-- @return string|nil the first problem found
function M.validate(cond)
  if type(cond) ~= "table" then
    return nil, "condition must be a table"
  end
  if not is_valid_type(cond.type) then
    return nil, format("invalid condition type %q: must be a qualified "
      .. "name (CamelCase, optionally prefixed with a DNS subdomain and '/')",
      tostring(cond.type))
  end
  if not STATUSES[cond.status] then
    return nil, format("condition %s: status must be one of True, False, "
      .. "Unknown (got %q)", cond.type, tostring(cond.status))
  end
  if not is_valid_reason(cond.reason) then
    return nil, format("condition %s: reason %q must be CamelCase: a letter "
      .. "followed by letters, digits, '_', ',' or ':' (not ending in ',' or "
      .. "':'), at most %d characters", cond.type, tostring(cond.reason),
      MAX_REASON)
  end
  if type(cond.message) ~= "string" then
    return nil, format("condition %s: message must be a string", cond.type)
  end
  if #cond.message > MAX_MESSAGE then
    return nil, format("condition %s: message longer than %d bytes",
      cond.type, MAX_MESSAGE)
  end
  return true
end


--- Builds a condition.
-- @param ctype string the condition type, e.g. "Ready"
-- @param status string|boolean "True", "False", "Unknown", true or false
-- @param reason string CamelCase reason, e.g. "StatefulSetReady"
-- @param message string|nil human readable message (nil -> "")
-- @return table|nil the condition {type=, status=, reason=, message=}
-- @return string|nil error when an argument is invalid
function M.new(ctype, status, reason, message)
  if status == true then
    status = M.TRUE
  elseif status == false then
    status = M.FALSE
  end
  if message == nil then
    message = ""
  end
  local cond = codec.object({
    type = ctype,
    status = status,
    reason = reason,
    message = message,
  })
  local ok, err = M.validate(cond)
  if not ok then
    return nil, err
  end
  return cond
end


local function index_of(list, ctype)
  if list == nil then
    return nil
  end
  for i, c in ipairs(list) do
    if type(c) == "table" and c.type == ctype then
      return i
    end
  end
  return nil
end


--- Finds a condition by type.
-- @param list table|nil list of conditions
-- @param ctype string
-- @return table|nil the condition (not a copy)
function M.get(list, ctype)
  local i = index_of(list, ctype)
  if i == nil then
    return nil
  end
  return list[i]
end


--- Sets a condition in a list, in place.
-- A condition of the same type is replaced where it stands; otherwise `cond`
-- is appended. When the status did not change and `cond` carries no
-- lastTransitionTime, the previous lastTransitionTime is kept.
-- @param list table|nil list of conditions (nil starts a new codec array)
-- @param cond table the condition
-- @return table the list
function M.set(list, cond)
  if list == nil then
    list = codec.array({})
  end
  local i = index_of(list, cond.type)
  if i == nil then
    list[#list + 1] = cond
    return list
  end
  local old = list[i]
  if cond.lastTransitionTime == nil and old.status == cond.status
    and old.lastTransitionTime ~= nil then
    cond.lastTransitionTime = old.lastTransitionTime
  end
  list[i] = cond
  return list
end


--- Removes the condition of a type, in place.
-- @param list table|nil
-- @param ctype string
-- @return table|nil the list
function M.remove(list, ctype)
  local i = index_of(list, ctype)
  if i ~= nil then
    table.remove(list, i)
  end
  return list
end


--- The status of a condition type.
-- @param list table|nil
-- @param ctype string
-- @return string|nil "True", "False", "Unknown", or nil when absent
function M.status_of(list, ctype)
  local c = M.get(list, ctype)
  if c == nil then
    return nil
  end
  return c.status
end


--- Whether the condition is present with status True.
-- @param list table|nil
-- @param ctype string
-- @return boolean
function M.is_true(list, ctype)
  return M.status_of(list, ctype) == M.TRUE
end


--- Whether the condition is present with status False.
-- @param list table|nil
-- @param ctype string
-- @return boolean
function M.is_false(list, ctype)
  return M.status_of(list, ctype) == M.FALSE
end


--- Whether the condition is absent or has status Unknown.
-- @param list table|nil
-- @param ctype string
-- @return boolean
function M.is_unknown(list, ctype)
  local s = M.status_of(list, ctype)
  return s == nil or s == M.UNKNOWN
end


--- Carries lastTransitionTime over from the previous conditions.
-- Returns new copies of `new_list`'s conditions in the same order. Each gets
-- the lastTransitionTime of the old condition of the same type when the
-- status is unchanged and the old one had a time; otherwise `now`. Used by
-- the core, which owns the clock.
-- @param old_list table|nil the conditions currently in the status
-- @param new_list table|nil the conditions the policy derived
-- @param now string RFC 3339 timestamp, e.g. "2024-01-02T03:04:05Z"
-- @return table|nil codec array of conditions
-- @return string|nil error when `now` is not a string
function M.merge_transition(old_list, new_list, now)
  if type(now) ~= "string" or now == "" then
    return nil, "now must be a non-empty RFC 3339 timestamp string"
  end
  local out = codec.array({})
  if new_list == nil then
    return out
  end
  for _, c in ipairs(new_list) do
    local copy = codec.object({})
    for k, v in pairs(c) do
      copy[k] = v
    end
    local old = M.get(old_list, c.type)
    if old ~= nil and old.status == c.status
      and type(old.lastTransitionTime) == "string" then
      copy.lastTransitionTime = old.lastTransitionTime
    else
      copy.lastTransitionTime = now
    end
    out[#out + 1] = copy
  end
  return out
end


return M
