-- dittoserver.status: the default policy's status from the observed
-- children and pods: phase, availableReplicas, nfsEndpoint and the Ready
-- and Reconciled conditions. The functions take the policy `p`: they read
-- p.POD_WAITING_REASONS and p.UNSCHEDULABLE_PHASE, and ask p.validate,
-- p.prepare, p.children and p.config_file what the spec wants.
--   POD_WAITING_REASONS, UNSCHEDULABLE_PHASE  (defaults, copied by new())
--   children(p, r)                -> the {kind, name} Reconciled waits for
--   pod_problems(p, observed, ds) -> list of {reason=, phase=, message=}
--   status(p, ds, observed, ctx)  -> the status
-- Uses: codec, dittoserver.common, k8s.conditions, k8s.quantity,
-- k8s.tablex.
local codec = require("codec")
local common = require("dittoserver.common")
local conditions = require("k8s.conditions")
local quantity = require("k8s.quantity")
local tablex = require("k8s.tablex")

local type = type
local ipairs = ipairs
local tostring = tostring
local format = string.format
local concat = table.concat
local array = codec.array
local obj = codec.object
local is_str = common.is_str
local is_int = common.is_int
local list = common.list
local cut = common.cut
local sorted_keys = tablex.sorted_keys

local MAX_MESSAGE = common.MAX_MESSAGE
local MAX_PROBLEM = common.MAX_PROBLEM

local M = {}


--- What a container waiting for one of these reasons means for the phase:
-- "Failed" when the server cannot come up until someone changes something
-- (the image reference, a missing Secret or key, the configuration it
-- crashes on), "Pending" when it may still come up by itself. A reason not
-- listed here (ContainerCreating, PodInitializing, ...) is ordinary
-- startup and not reported. Each policy (dittoserver.default.new()) gets
-- its own copy, which a custom policy may change.
M.POD_WAITING_REASONS = {
  InvalidImageName = "Failed",
  ErrImagePull = "Failed",
  ImagePullBackOff = "Failed",
  ErrImageNeverPull = "Failed",
  CreateContainerConfigError = "Failed",
  CrashLoopBackOff = "Failed",
  CreateContainerError = "Pending",
  RunContainerError = "Pending",
}
--- The phase of an unschedulable pod (PodScheduled=False/Unschedulable,
-- e.g. an unbound PersistentVolumeClaim): a provisioner or a node may
-- still appear.
M.UNSCHEDULABLE_PHASE = "Pending"

local CRASH_LOOP = "CrashLoopBackOff"
-- The kubelet's CrashLoopBackOff message carries the current back-off
-- delay ("back-off 40s restarting failed container=..."), which grows on
-- every restart; this stable text stands for it.
local CRASH_LOOP_TEXT = "back-off restarting failed container"


local function observed_of(observed, kind, name)
  local by_kind = type(observed) == "table" and observed[kind] or nil
  if type(by_kind) ~= "table" or name == nil then
    return nil
  end
  local o = by_kind[name]
  if type(o) ~= "table" then
    return nil
  end
  return o
end

local function int_or(v, default)
  if is_int(v) then
    return v
  end
  return default
end

local function trim(s)
  return (s:match("^%s*(.-)%s*$"))
end

-- "reason, exit code N: message" of a terminated state, "" for none.
local function termination(t)
  if type(t) ~= "table" then
    return ""
  end
  local text = is_str(t.reason) and t.reason ~= "" and t.reason
    or "Terminated"
  if is_int(t.exitCode) then
    text = format("%s, exit code %d", text, t.exitCode)
  end
  local msg = is_str(t.message) and trim(cut(t.message, MAX_PROBLEM)) or ""
  if msg ~= "" then
    text = text .. ": " .. msg
  end
  return text
end

-- How the newest finished run of a container ended: the one that just
-- ended, else the one before the current run (kubelet's lastState); ""
-- when none has ended. A server ending with exit code 0 crash-loops too.
local function last_run(cs)
  local now = termination(tablex.get(cs, "state", "terminated"))
  if now ~= "" then
    return now
  end
  return termination(tablex.get(cs, "lastState", "terminated"))
end

local function crash_loop_message(prefix, cs)
  local last = last_run(cs)
  if last == "" then
    return prefix .. CRASH_LOOP_TEXT
  end
  return prefix .. CRASH_LOOP_TEXT .. "; last termination: " .. last
end

-- The problem of one container status, or nil. `prev` is the previous
-- Ready condition's message when its reason was CrashLoopBackOff.
local function container_problem(reasons, pod_name, cs, prev)
  if type(cs) ~= "table" then
    return nil
  end
  local cname = is_str(cs.name) and cs.name or "?"
  local prefix = format("pod %s, container %s: ", pod_name, cname)
  local waiting = tablex.get(cs, "state", "waiting")
  local reason = type(waiting) == "table" and waiting.reason or nil
  local phase = is_str(reason) and reasons[reason] or nil
  if phase ~= nil and reason == CRASH_LOOP then
    return { reason = reason, phase = phase,
      message = crash_loop_message(prefix, cs) }
  end
  if phase ~= nil then
    local msg = is_str(waiting.message)
      and trim(cut(waiting.message, MAX_PROBLEM)) or ""
    return { reason = reason, phase = phase,
      message = prefix .. (msg ~= "" and msg or reason) }
  end
  -- Between two back-offs a crash-looping container runs (or has just
  -- ended) for a moment. When the status already reports its crash loop
  -- and it is not ready, the loop goes on: reporting "not ready" for that
  -- moment would flip the phase (and write the status, and send Events)
  -- on every restart.
  phase = reasons[CRASH_LOOP]
  if prev ~= nil and phase ~= nil and waiting == nil and cs.ready ~= true
      and last_run(cs) ~= ""
      and prev:find(prefix .. CRASH_LOOP_TEXT, 1, true) then
    return { reason = CRASH_LOOP, phase = phase,
      message = crash_loop_message(prefix, cs) }
  end
  return nil
end

-- The message of the Ready condition the status carries now when it says
-- CrashLoopBackOff, else nil.
local function previous_crash_loop(ds)
  local conds = tablex.get(ds, "status", "conditions")
  for _, c in ipairs(type(conds) == "table" and conds or {}) do
    if type(c) == "table" and c.type == "Ready" then
      if c.reason == CRASH_LOOP and is_str(c.message) then
        return c.message
      end
      return nil
    end
  end
  return nil
end


--- What keeps the server's pods from becoming ready, in a fixed order:
-- pods by name; in each, an Unschedulable PodScheduled condition, then
-- the init containers and the containers in the pod's order. Pods being
-- deleted are left out (they are going away). Only reasons of
-- p.POD_WAITING_REASONS and CrashLoopBackOff count; nothing with a
-- timestamp is read, so the same pods give the same text.
-- @param p table the policy
-- @param observed table observed.Pod[name] -> pod
-- @param ds table|nil the DittoServer; its status tells a crash loop
-- between two restarts (see container_problem)
-- @return table list of {reason=, phase="Failed"|"Pending", message=}
function M.pod_problems(p, observed, ds)
  local pods = type(observed) == "table" and observed.Pod or nil
  local out = {}
  if type(pods) ~= "table" then
    return out
  end
  local reasons = p.POD_WAITING_REASONS
  local prev = previous_crash_loop(ds)
  for _, pod_name in ipairs(sorted_keys(pods)) do
    local pod = pods[pod_name]
    if type(pod) == "table" and is_str(pod_name)
        and not is_str(tablex.get(pod, "metadata", "deletionTimestamp")) then
      for _, c in ipairs(list(tablex.get(pod, "status", "conditions"))) do
        if type(c) == "table" and c.type == "PodScheduled"
            and c.status == "False" and c.reason == "Unschedulable" then
          local msg = is_str(c.message)
            and trim(cut(c.message, MAX_PROBLEM)) or ""
          out[#out + 1] = { reason = "Unschedulable",
            phase = p.UNSCHEDULABLE_PHASE,
            message = format("pod %s: %s", pod_name,
              msg ~= "" and msg or "Unschedulable") }
        end
      end
      for _, field in ipairs({ "initContainerStatuses",
                               "containerStatuses" }) do
        for _, cs in ipairs(list(tablex.get(pod, "status", field))) do
          local problem = container_problem(reasons, pod_name, cs, prev)
          if problem ~= nil then
            out[#out + 1] = problem
          end
        end
      end
    end
  end
  for _, problem in ipairs(out) do
    problem.message = cut(problem.message, MAX_PROBLEM)
  end
  return out
end


-- Ready=False from the pods' problems: the first one that fails the
-- server (else the first one) gives the reason and leads the message;
-- the others follow in order. Returns the condition and that problem's
-- phase, or nil when there is no problem.
local function pods_condition(problems)
  if #problems == 0 then
    return nil
  end
  local lead = 1
  for i, problem in ipairs(problems) do
    if problem.phase == "Failed" then
      lead = i
      break
    end
  end
  local msgs = { problems[lead].message }
  for i, problem in ipairs(problems) do
    if i ~= lead then
      msgs[#msgs + 1] = problem.message
    end
  end
  return conditions.new("Ready", "False", problems[lead].reason,
    cut(concat(msgs, "; "), MAX_MESSAGE)), problems[lead].phase
end

--- The children whose absence keeps Reconciled False (ChildrenMissing), in
-- the order of p.objects: the ConfigMap, both Services, the StatefulSet. A
-- custom policy that renders more objects adds them here too (status()
-- does not render: it runs after every write of the operator, and a
-- render would double its cost).
-- @param p table the policy
-- @param r table the render input
-- @return table list of {kind, name}
function M.children(_, r)
  local name = r.name
  return {
    { "ConfigMap", name .. "-config" }, { "Service", name },
    { "Service", name .. "-headless" }, { "StatefulSet", name },
  }
end


-- Upstream's Ready condition (reference §1.10), texts kept.
local function ready_condition(desired, ready)
  if desired == 0 then
    return conditions.new("Ready", "True", "Stopped",
      "DittoServer is stopped (replicas=0)")
  end
  local msg = format("StatefulSet has %d/%d ready replicas", ready, desired)
  if ready >= desired then
    return conditions.new("Ready", "True", "StatefulSetReady", msg)
  end
  return conditions.new("Ready", "False", "StatefulSetNotReady", msg)
end

-- What spec.storage changed against the live StatefulSet's volume claim
-- templates, which Kubernetes never lets anyone change: a list of
-- human-readable differences (empty when none).
local function storage_changes(spec, sts)
  local live = {}
  local vcts = tablex.get(sts, "spec", "volumeClaimTemplates")
  for _, c in ipairs(type(vcts) == "table" and vcts or {}) do
    local claim = tablex.get(c, "metadata", "name")
    if claim ~= nil then
      live[claim] = c
    end
  end
  local storage = type(spec.storage) == "table" and spec.storage or {}
  local changes = {}
  for _, v in ipairs({ { "metadata", storage.metadataSize },
                       { "content", storage.contentSize } }) do
    local claim, want = v[1], v[2]
    local c = live[claim]
    local have = tablex.get(c, "spec", "resources", "requests", "storage")
    if want ~= nil and c == nil then
      changes[#changes + 1] = format("a %s volume (%s) was added", claim,
        tostring(want))
    elseif want == nil and c ~= nil then
      changes[#changes + 1] = format("the %s volume was removed", claim)
    elseif c ~= nil then
      if type(have) ~= "string" or type(want) ~= "string"
        or not quantity.equal(have, want) then
        changes[#changes + 1] = format("%s volume %s -> %s", claim,
          tostring(have), tostring(want))
      end
      local sc = tablex.get(c, "spec", "storageClassName")
      if sc ~= storage.storageClassName then
        changes[#changes + 1] = format("%s storage class %s -> %s", claim,
          tostring(sc or "(default)"),
          tostring(storage.storageClassName or "(default)"))
      end
    end
  end
  return changes
end

-- Reconciled: are the children there (p.children: a custom policy that
-- renders more objects lists them there too), and do they carry the
-- current spec?
local function reconciled_condition(p, r, errs, observed)
  local name, spec = r.name, r.spec
  if #errs > 0 then
    local msg = cut(concat(errs, "; "), MAX_MESSAGE)
    return conditions.new("Reconciled", "False", "InvalidSpec", msg)
  end
  local missing = {}
  for _, c in ipairs(p.children(r)) do
    if observed_of(observed, c[1], c[2]) == nil then
      missing[#missing + 1] = format("%s %q", tostring(c[1]),
        tostring(c[2]))
    end
  end
  if #missing > 0 then
    return conditions.new("Reconciled", "False", "ChildrenMissing",
      "Waiting for " .. concat(missing, ", ") .. " to be created")
  end
  local changes = storage_changes(spec,
    observed_of(observed, "StatefulSet", name))
  if #changes > 0 then
    return conditions.new("Reconciled", "False", "StorageImmutable",
      format("StatefulSet %q keeps the volumes it was created with (%s): "
        .. "Kubernetes cannot change a StatefulSet's volume claim "
        .. "templates. Restore spec.storage, or expand the PVCs yourself "
        .. "and recreate the StatefulSet (kubectl delete statefulset %s "
        .. "--cascade=orphan; the PVCs and the data are kept)", name,
        concat(changes, "; "), name))
  end
  local text, hash = p.config_file(r)
  local stale = {}
  local cm = observed_of(observed, "ConfigMap", name .. "-config")
  if cm ~= nil and (type(cm.data) ~= "table"
      or cm.data["config.yaml"] ~= text) then
    stale[#stale + 1] = format("ConfigMap %q does not hold the current "
      .. "configuration", name .. "-config")
  end
  local sts = observed_of(observed, "StatefulSet", name)
  local got = tablex.get(sts, "spec", "template", "metadata", "annotations",
    common.CONFIG_HASH_ANNOTATION)
  if sts ~= nil and got ~= hash then
    stale[#stale + 1] = format("StatefulSet %q does not carry the current "
      .. "configuration hash", name)
  end
  local replicas = tablex.get(sts, "spec", "replicas")
  if replicas ~= nil and replicas ~= spec.replicas then
    stale[#stale + 1] = format("StatefulSet %q has %s replicas, want %d",
      name, tostring(replicas), spec.replicas)
  end
  if #stale > 0 then
    return conditions.new("Reconciled", "False", "ChildrenOutOfDate",
      concat(stale, "; "))
  end
  return conditions.new("Reconciled", "True", "ChildrenUpToDate",
    "ConfigMap, Services and StatefulSet match the spec")
end


--- Status of a DittoServer from its observed children and pods.
-- phase: Failed when the spec is invalid (p.validate() errors: the
-- operator cannot apply it; the running pods, if any, keep the previous
-- spec), else Stopped when replicas is 0, Running when the StatefulSet
-- reports every desired replica ready; otherwise Failed when a pod cannot
-- come up until the user changes something, Pending when it may still
-- come up (p.POD_WAITING_REASONS, p.UNSCHEDULABLE_PHASE). Failed is
-- derived anew each time, never sticky.
-- Ready: as upstream (StatefulSetReady, StatefulSetNotReady, Stopped),
-- except that while not every replica is ready a pod problem replaces
-- StatefulSetNotReady: Ready=False with the kubelet's reason and message,
-- prefixed "pod P, container C: " (p.pod_problems).
-- Reconciled: InvalidSpec, ChildrenMissing (a child p.children lists is
-- not observed), StorageImmutable, ChildrenOutOfDate, ChildrenUpToDate.
-- @param p table the policy
-- @param ds table the DittoServer
-- @param observed table observed[kind][name] -> live child, and
-- observed.Pod[name] -> the server's pods
-- @param ctx table {name=, namespace=, cluster_domain=}
-- @return table {phase=, availableReplicas=, nfsEndpoint=, conditions=}
function M.status(p, ds, observed, ctx)
  ctx = ctx or {}
  local r = p.prepare(ds, ctx)
  local errs = p.validate(ds)
  local spec = type(r.spec) == "table" and r.spec or {}
  local desired = int_or(spec.replicas, 1)
  local port = int_or(spec.nfsPort, 2049)
  local sts = observed_of(observed, "StatefulSet", r.name)
  local ready = int_or(tablex.get(sts, "status", "readyReplicas"), 0)

  local running = sts ~= nil and ready >= desired
  local ready_cond, pods_phase
  if desired > 0 and not running then
    ready_cond, pods_phase = pods_condition(p.pod_problems(observed, ds))
  end
  local phase
  if #errs > 0 then
    phase = "Failed"
  elseif desired == 0 then
    phase = "Stopped"
  elseif running then
    phase = "Running"
  else
    phase = pods_phase or "Pending"
  end
  ready_cond = ready_cond or ready_condition(desired, ready)
  return obj({
    phase = phase,
    availableReplicas = ready,
    nfsEndpoint = format("%s.%s.svc.%s:%d", tostring(r.name),
      tostring(r.namespace), ctx.cluster_domain or "cluster.local", port),
    conditions = array({
      ready_cond,
      reconciled_condition(p, r, errs, observed),
    }),
  })
end


return M
