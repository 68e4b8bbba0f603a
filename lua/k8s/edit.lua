--- k8s.edit: small in-place edits of rendered objects, for custom policies
-- that change what the default policy renders (policies/README.md).
--
-- Every function takes objects in Kubernetes JSON shape (plain tables, as
-- render() returns them), changes them in place and returns what it
-- changed, so calls chain. Lists are created as codec arrays, so an empty
-- one still encodes as []. Entries with a name (containers, volumes, env
-- vars, volume mounts) are replaced when one of that name exists, so the
-- same edit applied twice gives the same object. A wrong argument (not a
-- table, an object without a pod template) raises with the reason.
--
-- API:
--   find(objects, kind, name)          -> object, index | nil
--   find_all(objects, kind)            -> list of the objects of that kind
--   pod_spec(obj)                      -> the PodSpec of a StatefulSet,
--                                         Deployment, DaemonSet, Job or
--                                         ReplicaSet template, or of a Pod
--   container(obj, name)               -> the container (or init container)
--                                         named name, or nil
--   add_container(obj, c, opts)        -> c; opts.init: an init container
--   add_volume(obj, volume)            -> volume
--   add_toleration(obj, toleration)    -> toleration (an equal one is not
--                                         added twice)
--   set_node_selector(obj, labels)     -> nodeSelector (merged; given win)
--   add_env(container, env)            -> env; env is {name=, value=} or
--                                         object.env*() (replaces by name)
--   add_volume_mount(container, mount) -> mount
--   label_all(objects, labels)         -> objects: metadata.labels of each,
--                                         and of StatefulSet pod templates
--   annotate_all(objects, annotations) -> objects: metadata.annotations of
--                                         each (pod templates untouched)
local codec = require("codec")
local tablex = require("k8s.tablex")

local type = type
local ipairs = ipairs
local pairs = pairs
local error = error
local format = string.format
local tostring = tostring

local M = {}

-- Kinds whose pods come from spec.template.
local TEMPLATED = {
  StatefulSet = true, Deployment = true, DaemonSet = true, Job = true,
  ReplicaSet = true,
}


local function check_table(v, what, level)
  if type(v) ~= "table" then
    error(format("k8s.edit: %s must be a table, got %s", what, type(v)),
      level + 1)
  end
end

-- t[field] as a codec object, created when absent.
local function object_field(t, field)
  local v = t[field]
  if type(v) ~= "table" then
    v = codec.object({})
    t[field] = v
  end
  return v
end

-- t[field] as a codec array, created when absent.
local function array_field(t, field)
  local v = t[field]
  if type(v) ~= "table" then
    v = codec.array({})
    t[field] = v
  end
  return v
end

-- Puts `entry` in list: in place of the entry with the same name, else at
-- the end.
local function put_named(list, entry)
  for i, e in ipairs(list) do
    if type(e) == "table" and e.name == entry.name then
      list[i] = entry
      return entry
    end
  end
  list[#list + 1] = entry
  return entry
end


--- The first object of a kind and name in a list.
-- @param objects table list of objects
-- @param kind string e.g. "StatefulSet"
-- @param name string metadata.name
-- @return table|nil the object, number its index
function M.find(objects, kind, name)
  check_table(objects, "objects", 2)
  for i, o in ipairs(objects) do
    if type(o) == "table" and o.kind == kind
        and type(o.metadata) == "table" and o.metadata.name == name then
      return o, i
    end
  end
  return nil
end


--- Every object of a kind, in list order.
-- @param objects table list of objects
-- @param kind string
-- @return table list (possibly empty)
function M.find_all(objects, kind)
  check_table(objects, "objects", 2)
  local out = {}
  for _, o in ipairs(objects) do
    if type(o) == "table" and o.kind == kind then
      out[#out + 1] = o
    end
  end
  return out
end


--- The PodSpec of an object: spec.template.spec of a workload (created
-- below an existing spec.template when missing), spec of a Pod. Raises for
-- any other object.
-- @param obj table a StatefulSet, Deployment, DaemonSet, Job, ReplicaSet
-- or Pod
-- @return table the PodSpec
function M.pod_spec(obj)
  check_table(obj, "obj", 2)
  if obj.kind == "Pod" then
    return object_field(obj, "spec")
  end
  local tpl = TEMPLATED[obj.kind] and type(obj.spec) == "table"
    and obj.spec.template or nil
  if type(tpl) ~= "table" then
    error(format("k8s.edit: %s %q has no pod template (spec.template)",
      tostring(obj.kind), tostring(type(obj.metadata) == "table"
        and obj.metadata.name)), 2)
  end
  return object_field(tpl, "spec")
end


--- A container of an object's pods by name (containers first, then init
-- containers).
-- @param obj table see pod_spec
-- @param name string
-- @return table|nil the container
function M.container(obj, name)
  local ps = M.pod_spec(obj)
  for _, field in ipairs({ "containers", "initContainers" }) do
    for _, c in ipairs(type(ps[field]) == "table" and ps[field] or {}) do
      if type(c) == "table" and c.name == name then
        return c
      end
    end
  end
  return nil
end


--- Adds a container (a sidecar) to an object's pods, or replaces the one
-- with its name.
-- @param obj table see pod_spec
-- @param c table a core/v1 Container with a name
-- @param opts table|nil {init = true}: an init container (with
-- restartPolicy = "Always" it is a native sidecar, Kubernetes >= 1.29)
-- @return table c
function M.add_container(obj, c, opts)
  check_table(c, "container", 2)
  local field = type(opts) == "table" and opts.init and "initContainers"
    or "containers"
  return put_named(array_field(M.pod_spec(obj), field), c)
end


--- Adds a volume to an object's pods, or replaces the one with its name.
-- @param obj table see pod_spec
-- @param volume table a core/v1 Volume (k8s.object.volume_*)
-- @return table volume
function M.add_volume(obj, volume)
  check_table(volume, "volume", 2)
  return put_named(array_field(M.pod_spec(obj), "volumes"), volume)
end


--- Adds a toleration to an object's pods, unless an equal one is there.
-- @param obj table see pod_spec
-- @param toleration table {key=, operator=, value=, effect=, ...}
-- @return table toleration
function M.add_toleration(obj, toleration)
  check_table(toleration, "toleration", 2)
  local list = array_field(M.pod_spec(obj), "tolerations")
  for _, t in ipairs(list) do
    if tablex.equal(t, toleration) then
      return toleration
    end
  end
  list[#list + 1] = toleration
  return toleration
end


--- Merges labels into the nodeSelector of an object's pods (the given
-- values win).
-- @param obj table see pod_spec
-- @param labels table string -> string
-- @return table the nodeSelector
function M.set_node_selector(obj, labels)
  check_table(labels, "labels", 2)
  local sel = object_field(M.pod_spec(obj), "nodeSelector")
  for k, v in pairs(labels) do
    sel[k] = v
  end
  return sel
end


--- Adds an env var to a container, or replaces the one with its name.
-- @param container table a core/v1 Container
-- @param env table {name=, value=} or {name=, valueFrom=}
-- (k8s.object.env, env_from_secret, ...)
-- @return table env
function M.add_env(container, env)
  check_table(container, "container", 2)
  check_table(env, "env", 2)
  return put_named(array_field(container, "env"), env)
end


--- Adds a volume mount to a container, or replaces the one with its name.
-- @param container table a core/v1 Container
-- @param mount table k8s.object.volume_mount(...)
-- @return table mount
function M.add_volume_mount(container, mount)
  check_table(container, "container", 2)
  check_table(mount, "mount", 2)
  return put_named(array_field(container, "volumeMounts"), mount)
end


--- Adds labels to every object's metadata.labels and to the pod template
-- of every StatefulSet (so the pods carry them too). Selectors and volume
-- claim templates are left alone: Kubernetes never lets either change.
-- The given values win over existing ones.
-- @param objects table list of objects
-- @param labels table string -> string
-- @return table objects
function M.label_all(objects, labels)
  check_table(objects, "objects", 2)
  check_table(labels, "labels", 2)
  for _, o in ipairs(objects) do
    local targets = { object_field(o, "metadata") }
    local tpl = o.kind == "StatefulSet" and type(o.spec) == "table"
      and o.spec.template or nil
    if type(tpl) == "table" then
      targets[2] = object_field(tpl, "metadata")
    end
    for _, md in ipairs(targets) do
      local l = object_field(md, "labels")
      for k, v in pairs(labels) do
        l[k] = v
      end
    end
  end
  return objects
end


--- Adds annotations to every object's metadata.annotations (the given
-- values win). Pod templates are left alone: a changed template rolls the
-- pods.
-- @param objects table list of objects
-- @param annotations table string -> string
-- @return table objects
function M.annotate_all(objects, annotations)
  check_table(objects, "objects", 2)
  check_table(annotations, "annotations", 2)
  for _, o in ipairs(objects) do
    local a = object_field(object_field(o, "metadata"), "annotations")
    for k, v in pairs(annotations) do
      a[k] = v
    end
  end
  return objects
end


return M
