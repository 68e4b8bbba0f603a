--- dittoserver_pods_spec: the default policy's status rules from the
-- server's pods (policies/dittoserver.lua: status, pod_problems).
--
-- The pods are JSON in the shapes the kubelet and the scheduler write
-- (status.containerStatuses[].state.waiting, lastState.terminated,
-- status.conditions[] PodScheduled), decoded by the real codec as the core
-- does. Each rule: the phase, the Ready condition (reason, message) and,
-- when all is well, exactly the conditions without pods.
local codec = require("codec")
local policy = require("dittoserver")

local NAME = "dittofs-sample"
local POD = NAME .. "-0"
local IMAGE = "ghcr.io/marmos91/dittofs:nope"


local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function readme_ds()
  local docs = assert(codec.yaml_decode_all(
    read_file("deploy/samples/dittoserver.yaml")))
  for _, d in ipairs(docs) do
    if type(d) == "table" and d.kind == "DittoServer" then
      return d
    end
  end
  error("no DittoServer in the sample")
end

-- A JSON string literal.
local function js(s)
  return codec.json_encode(s)
end

local function norm(v)
  return assert(codec.json_decode(codec.json_encode(v)))
end

local function ctx_for(ds)
  return {
    name = ds.metadata.name,
    namespace = ds.metadata.namespace or "default",
    cluster_domain = "cluster.local",
    operator_version = "0.1.0",
  }
end

-- The rendered children as live ones, the StatefulSet with `ready` of its
-- replicas ready, and the pods.
local function observe(ds, ready, pods)
  local observed = { ConfigMap = {}, Service = {}, StatefulSet = {},
    Pod = {} }
  for _, o in ipairs(policy.render(ds, ctx_for(ds))) do
    local copy = norm(o)
    if o.kind == "StatefulSet" then
      copy.status = { replicas = o.spec.replicas, readyReplicas = ready }
    end
    observed[o.kind][o.metadata.name] = copy
  end
  for _, p in ipairs(pods or {}) do
    observed.Pod[p.metadata.name] = p
  end
  return observed
end

-- A pod as the API returns it: `cstatus` is the JSON of one container
-- status (nil: none yet), `conditions` of status.conditions.
local function pod(name, cstatus, conditions, extra)
  local text = string.format([[{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": %s, "namespace": "default", "uid": "9b2e1c4d-uid",
    "labels": {"app.kubernetes.io/managed-by": "dittofs-operator",
      "dittofs.dittofs.com/server": %s,
      "controller-revision-hash": "dittofs-sample-5d9f7c8b6"}%s},
  "spec": {"containers": [{"name": "dittofs", "image": %s}],
    "nodeName": "node-1"},
  "status": {"phase": "Pending", "qosClass": "Burstable",
    "startTime": "2024-05-01T10:00:00Z",
    "conditions": %s%s}
}]], js(name), js(NAME), extra or "", js(IMAGE), conditions or [=[[
    {"type": "PodScheduled", "status": "True", "lastProbeTime": null,
     "lastTransitionTime": "2024-05-01T10:00:00Z"},
    {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
     "message": "containers with unready status: [dittofs]",
     "lastProbeTime": null, "lastTransitionTime": "2024-05-01T10:00:00Z"}]]=],
    cstatus and (', "containerStatuses": [' .. cstatus .. "]") or "")
  return assert(codec.json_decode(text))
end

-- A container status of container `dittofs`.
local function cs(state, last, ready, restarts)
  return string.format([[{"name": "dittofs", "image": %s, "imageID": "",
    "ready": %s, "started": false, "restartCount": %d,
    "state": %s, "lastState": %s}]], js(IMAGE), ready and "true" or "false",
    restarts or 0, state, last or "{}")
end

local function waiting(reason, message)
  return string.format('{"waiting": {"reason": %s%s}}', js(reason),
    message and ', "message": ' .. js(message) or "")
end

local function terminated(code, reason, message, at)
  at = at or "2024-05-01T10:05:00Z"
  return string.format([[{"terminated": {"exitCode": %d, "reason": %s%s,
    "startedAt": "2024-05-01T10:04:59Z", "finishedAt": %s,
    "containerID": "containerd://0123abcd"}}]], code, js(reason),
    message and ', "message": ' .. js(message) or "", js(at))
end

local RUNNING = [[{"running": {"startedAt": "2024-05-01T10:06:00Z"}}]]

local function cond(st, ctype)
  for _, c in ipairs(st.conditions) do
    if c.type == ctype then
      return { c.status, c.reason, c.message }
    end
  end
  return nil
end

local function status(ds, ready, pods)
  return policy.status(ds, observe(ds, ready, pods), ctx_for(ds))
end

local PREFIX = "pod dittofs-sample-0, container dittofs: "
local PULL_MSG = 'Back-off pulling image "' .. IMAGE .. '": ErrImagePull: '
  .. "failed to pull and unpack image \"" .. IMAGE .. "\": failed to "
  .. "resolve reference \"" .. IMAGE .. "\": " .. IMAGE .. ": not found"
local CLBO_MSG = "back-off 2m40s restarting failed container=dittofs "
  .. "pod=dittofs-sample-0_default(9b2e1c4d-uid)"
local UNBOUND = "0/1 nodes are available: 1 pod has unbound immediate "
  .. "PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 "
  .. "Preemption is not helpful for scheduling."
local UNSCHEDULABLE = string.format([=[[
  {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
   "message": %s, "lastProbeTime": null,
   "lastTransitionTime": "2024-05-01T10:00:00Z"}]]=], js(UNBOUND))


describe("dittoserver policy", function()
  describe("status from the pods", function()
    -- { description, container status JSON, phase, Ready reason, message }
    local waiting_cases = {
      { "ImagePullBackOff: Failed", cs(waiting("ImagePullBackOff", PULL_MSG)),
        "Failed", "ImagePullBackOff", PREFIX .. PULL_MSG },
      { "ErrImagePull: Failed",
        cs(waiting("ErrImagePull", "rpc error: code = NotFound desc = "
          .. "failed to pull and unpack image")),
        "Failed", "ErrImagePull", PREFIX .. "rpc error: code = NotFound "
          .. "desc = failed to pull and unpack image" },
      { "InvalidImageName: Failed",
        cs(waiting("InvalidImageName", 'Failed to apply default image tag '
          .. '"Bad Image": couldn\'t parse image reference "Bad Image": '
          .. "invalid reference format")),
        "Failed", "InvalidImageName", PREFIX .. 'Failed to apply default '
          .. 'image tag "Bad Image": couldn\'t parse image reference "Bad '
          .. 'Image": invalid reference format' },
      { "ErrImageNeverPull: Failed",
        cs(waiting("ErrImageNeverPull", 'Container image "' .. IMAGE
          .. '" is not present with pull policy of Never')),
        "Failed", "ErrImageNeverPull", PREFIX .. 'Container image "'
          .. IMAGE .. '" is not present with pull policy of Never' },
      { "CreateContainerConfigError (a missing Secret): Failed",
        cs(waiting("CreateContainerConfigError",
          'secret "s3-credentials" not found')),
        "Failed", "CreateContainerConfigError",
        PREFIX .. 'secret "s3-credentials" not found' },
      { "CreateContainerError: Pending",
        cs(waiting("CreateContainerError", "context deadline exceeded")),
        "Pending", "CreateContainerError",
        PREFIX .. "context deadline exceeded" },
      { "RunContainerError: Pending",
        cs(waiting("RunContainerError", "failed to create containerd task: "
          .. 'exec: "/app/dittofs": stat /app/dittofs: no such file or '
          .. "directory")),
        "Pending", "RunContainerError", PREFIX .. "failed to create "
          .. 'containerd task: exec: "/app/dittofs": stat /app/dittofs: no '
          .. "such file or directory" },
      { "a waiting reason without a message: the reason stands in",
        cs(waiting("ImagePullBackOff")),
        "Failed", "ImagePullBackOff", PREFIX .. "ImagePullBackOff" },
      { "CrashLoopBackOff: Failed, with the last termination message",
        cs(waiting("CrashLoopBackOff", CLBO_MSG),
          terminated(1, "Error", "Error: invalid configuration: share "
            .. "'/export': metadata store 'meta' not found\n"), false, 4),
        "Failed", "CrashLoopBackOff", PREFIX .. "back-off restarting failed "
          .. "container; last termination: Error, exit code 1: Error: "
          .. "invalid configuration: share '/export': metadata store 'meta' "
          .. "not found" },
      { "CrashLoopBackOff without a termination message: reason and code",
        cs(waiting("CrashLoopBackOff", CLBO_MSG),
          terminated(137, "OOMKilled"), false, 2),
        "Failed", "CrashLoopBackOff", PREFIX .. "back-off restarting failed "
          .. "container; last termination: OOMKilled, exit code 137" },
      { "CrashLoopBackOff of a server that exits 0",
        cs(waiting("CrashLoopBackOff", CLBO_MSG),
          terminated(0, "Completed"), false, 3),
        "Failed", "CrashLoopBackOff", PREFIX .. "back-off restarting failed "
          .. "container; last termination: Completed, exit code 0" },
      { "CrashLoopBackOff before any termination was recorded",
        cs(waiting("CrashLoopBackOff", CLBO_MSG)),
        "Failed", "CrashLoopBackOff",
        PREFIX .. "back-off restarting failed container" },
    }

    for _, case in ipairs(waiting_cases) do
      it(case[1], function()
        local ds = readme_ds()
        local st = status(ds, 0, { pod(POD, case[2]) })
        assert.equal(case[3], st.phase)
        assert.equal(0, st.availableReplicas)
        assert.same({ "False", case[4], case[5] }, cond(st, "Ready"))
        assert.same({ "True", "ChildrenUpToDate",
          "ConfigMap, Services and StatefulSet match the spec" },
          cond(st, "Reconciled"))
        assert.equal(2, #st.conditions)
      end)
    end

    it("reports an unschedulable pod (an unbound PVC): Pending", function()
      local ds = readme_ds()
      local st = status(ds, 0, { pod(POD, nil, UNSCHEDULABLE) })
      assert.equal("Pending", st.phase)
      assert.same({ "False", "Unschedulable",
        "pod dittofs-sample-0: " .. UNBOUND }, cond(st, "Ready"))
    end)

    it("keeps ordinary startup as before: StatefulSetNotReady, Pending",
      function()
        local ds = readme_ds()
        local without = status(ds, 0, {})
        for _, c in ipairs({
          cs(waiting("ContainerCreating")),
          cs(RUNNING, nil, false),
          cs(RUNNING, terminated(1, "Error"), false, 1),
        }) do
          local st = status(ds, 0, { pod(POD, c) })
          assert.equal("Pending", st.phase)
          assert.same({ "False", "StatefulSetNotReady",
            "StatefulSet has 0/1 ready replicas" }, cond(st, "Ready"))
          assert.same(norm(without), norm(st))
        end
        local st = status(ds, 0, { pod(POD, nil) })
        assert.same(norm(without), norm(st))
      end)

    it("says Running when every replica is ready, whatever the pods say",
      function()
        local ds = readme_ds()
        local st = status(ds, 1, { pod(POD, cs(RUNNING,
          terminated(1, "Error", "crashed once"), true, 1)) })
        assert.equal("Running", st.phase)
        assert.same({ "True", "StatefulSetReady",
          "StatefulSet has 1/1 ready replicas" }, cond(st, "Ready"))
        assert.same(norm(status(ds, 1, {})), norm(st))
      end)

    it("says Stopped at replicas 0, with a crash-looping pod going away",
      function()
        local ds = readme_ds()
        ds.spec.replicas = 0
        local st = status(ds, 0, { pod(POD, cs(waiting("CrashLoopBackOff",
          CLBO_MSG), terminated(1, "Error"), false, 3)) })
        assert.equal("Stopped", st.phase)
        assert.same({ "True", "Stopped", "DittoServer is stopped (replicas=0)" },
          cond(st, "Ready"))
      end)

    it("keeps Failed and InvalidSpec for an invalid spec, Ready from the pods",
      function()
        local ds = readme_ds()
        ds.spec.replicas = 2
        local st = status(ds, 0, { pod(POD, cs(waiting("CreateContainerError",
          "context deadline exceeded"))) })
        assert.equal("Failed", st.phase)
        assert.same({ "False", "CreateContainerError",
          PREFIX .. "context deadline exceeded" }, cond(st, "Ready"))
        assert.equal("InvalidSpec", cond(st, "Reconciled")[2])
      end)

    it("leaves out pods being deleted", function()
      local ds = readme_ds()
      local p = pod(POD, cs(waiting("ImagePullBackOff", PULL_MSG)), nil,
        ', "deletionTimestamp": "2024-05-01T10:10:00Z", '
          .. '"deletionGracePeriodSeconds": 40')
      local st = status(ds, 0, { p })
      assert.equal("Pending", st.phase)
      assert.equal("StatefulSetNotReady", cond(st, "Ready")[2])
    end)

    it("reports an init container's crash loop", function()
      local ds = readme_ds()
      local p = pod(POD, nil)
      p.status.initContainerStatuses = assert(codec.json_decode(
        "[" .. cs(waiting("CrashLoopBackOff", CLBO_MSG),
          terminated(2, "Error", "chown: /data: Operation not permitted"),
          false, 5):gsub('"name": "dittofs"', '"name": "init-perms"') .. "]"))
      local st = status(ds, 0, { p })
      assert.equal("Failed", st.phase)
      assert.same({ "False", "CrashLoopBackOff", "pod dittofs-sample-0, "
        .. "container init-perms: back-off restarting failed container; last "
        .. "termination: Error, exit code 2: chown: /data: Operation not "
        .. "permitted" }, cond(st, "Ready"))
    end)

    it("orders pods by name and lets a failing problem lead", function()
      local ds = readme_ds()
      -- (3 replicas need shared stores: the spec is invalid and the phase
      -- Failed anyway; the Ready condition is what this is about.)
      ds.spec.replicas = 3
      local st = status(ds, 0, {
        pod(NAME .. "-2", cs(waiting("ErrImagePull", "not found"))),
        pod(NAME .. "-0", nil, UNSCHEDULABLE),
        pod(NAME .. "-1", cs(waiting("ImagePullBackOff", PULL_MSG))),
      })
      assert.same({ "False", "ImagePullBackOff",
        "pod dittofs-sample-1, container dittofs: " .. PULL_MSG
          .. "; pod dittofs-sample-0: " .. UNBOUND
          .. "; pod dittofs-sample-2, container dittofs: not found" },
        cond(st, "Ready"))
    end)

    it("gives Pending when no problem fails the server", function()
      local ds = readme_ds()
      ds.spec.replicas = 2
      local st = policy.status(ds, observe(ds, 0, {
        pod(NAME .. "-0", cs(waiting("RunContainerError", "boom"))),
        pod(NAME .. "-1", nil, UNSCHEDULABLE),
      }), ctx_for(ds))
      assert.same({ "False", "RunContainerError",
        "pod dittofs-sample-0, container dittofs: boom; "
          .. "pod dittofs-sample-1: " .. UNBOUND }, cond(st, "Ready"))
    end)

    describe("crash loops between two restarts", function()
      local function clbo_status(ds)
        return status(ds, 0, { pod(POD, cs(waiting("CrashLoopBackOff",
          CLBO_MSG), terminated(1, "Error", "bad config"), false, 4)) })
      end

      it("keeps CrashLoopBackOff while the restarted container runs",
        function()
          local ds = readme_ds()
          local looping = clbo_status(ds)
          ds.status = norm(looping)
          -- restarted: running, not ready, the crash in lastState
          local st = status(ds, 0, { pod(POD, cs(RUNNING,
            terminated(1, "Error", "bad config"), false, 5)) })
          assert.same(norm(looping), norm(st))
          -- crashed again: terminated, before the next back-off
          st = status(ds, 0, { pod(POD, cs(terminated(1, "Error",
            "bad config", "2024-05-01T10:09:00Z"), terminated(1, "Error",
            "bad config"), false, 5)) })
          assert.same(norm(looping), norm(st))
        end)

      it("does not invent a crash loop the status did not report",
        function()
          local ds = readme_ds()
          local st = status(ds, 0, { pod(POD, cs(RUNNING,
            terminated(1, "Error", "bad config"), false, 1)) })
          assert.equal("Pending", st.phase)
          assert.equal("StatefulSetNotReady", cond(st, "Ready")[2])
        end)

      it("ends when the container is ready", function()
        local ds = readme_ds()
        ds.status = norm(clbo_status(ds))
        local st = status(ds, 1, { pod(POD, cs(RUNNING,
          terminated(1, "Error", "bad config"), true, 5)) })
        assert.equal("Running", st.phase)
        assert.equal("StatefulSetReady", cond(st, "Ready")[2])
      end)

      it("is about the same container only", function()
        local ds = readme_ds()
        ds.status = norm(clbo_status(ds))
        local other = cs(RUNNING, terminated(1, "Error", "x"), false, 1)
          :gsub('"name": "dittofs"', '"name": "sidecar"')
        local st = status(ds, 0, { pod(POD, other) })
        assert.equal("StatefulSetNotReady", cond(st, "Ready")[2])
      end)
    end)

    it("is byte-identical whatever the pods' times, counts and back-off",
      function()
        local ds = readme_ds()
        local a = status(ds, 0, { pod(POD, cs(waiting("CrashLoopBackOff",
          "back-off 40s restarting failed container=dittofs pod=x"),
          terminated(1, "Error", "bad", "2024-05-01T10:05:00Z"), false, 2)) })
        local b = status(ds, 0, { pod(POD, cs(waiting("CrashLoopBackOff",
          "back-off 5m0s restarting failed container=dittofs pod=x"),
          terminated(1, "Error", "bad", "2024-05-01T11:45:00Z"), false, 9)) })
        assert.equal(codec.json_encode(a), codec.json_encode(b))
        assert.equal(codec.json_encode(a), codec.json_encode(status(ds, 0, {
          pod(POD, cs(waiting("CrashLoopBackOff", CLBO_MSG),
            terminated(1, "Error", "bad"), false, 2)) })))
      end)

    it("cuts a long message on a UTF-8 character boundary", function()
      local ds = readme_ds()
      -- 3-byte characters: 4096 is not a multiple of 3
      local long = string.rep("\u{20AC}", 3000)
      local st = status(ds, 0, { pod(POD, cs(waiting("CrashLoopBackOff",
        CLBO_MSG), terminated(1, "Error", long), false, 2)) })
      local msg = cond(st, "Ready")[3]
      assert.is_true(#msg <= 4096 + 3)
      assert.is_not_nil(utf8.len(msg))
      assert.equal("...", msg:sub(-3))
      assert.is_not_nil(codec.json_encode(st))
    end)

    it("bounds the whole message with many pods", function()
      local ds = readme_ds()
      ds.spec.replicas = 40
      local pods = {}
      for i = 0, 39 do
        pods[#pods + 1] = pod(string.format("%s-%d", NAME, i),
          cs(waiting("CrashLoopBackOff", CLBO_MSG), terminated(1, "Error",
            string.rep("\u{00E9}", 2000)), false, 2))
      end
      local msg = cond(status(ds, 0, pods), "Ready")[3]
      assert.is_true(#msg <= 32000 + 3)
      assert.is_not_nil(utf8.len(msg))
    end)

    it("lets a custom policy reclassify a reason", function()
      local ds = readme_ds()
      local saved = policy.POD_WAITING_REASONS.CrashLoopBackOff
      policy.POD_WAITING_REASONS.CrashLoopBackOff = "Pending"
      local ok, st = pcall(status, ds, 0, { pod(POD, cs(waiting(
        "CrashLoopBackOff", CLBO_MSG), terminated(1, "Error"), false, 2)) })
      policy.POD_WAITING_REASONS.CrashLoopBackOff = saved
      assert.is_true(ok)
      assert.equal("Pending", st.phase)
      assert.equal("CrashLoopBackOff", cond(st, "Ready")[2])
    end)

    it("survives garbage in observed.Pod", function()
      local ds = readme_ds()
      for _, pods in ipairs({
        7, { x = "pod" }, { [1] = {} },
        { p = { status = { containerStatuses = "x", conditions = 3 } } },
        { p = { status = { containerStatuses = { 1, { state = "x" },
          { state = { waiting = { reason = 5 } } } } } } },
      }) do
        local observed = observe(ds, 0, {})
        observed.Pod = pods
        local st = policy.status(ds, observed, ctx_for(ds))
        assert.equal("Pending", st.phase)
        assert.equal("StatefulSetNotReady", cond(st, "Ready")[2])
      end
    end)
  end)

  describe("pod_problems", function()
    it("lists every problem in order with its phase", function()
      local observed = { Pod = {
        b = pod("b", cs(waiting("CreateContainerConfigError",
          'couldn\'t find key secretAccessKey in Secret default/s3'))),
        a = pod("a", nil, UNSCHEDULABLE),
      } }
      assert.same({
        { reason = "Unschedulable", phase = "Pending",
          message = "pod a: " .. UNBOUND },
        { reason = "CreateContainerConfigError", phase = "Failed",
          message = "pod b, container dittofs: couldn't find key "
            .. "secretAccessKey in Secret default/s3" },
      }, policy.pod_problems(observed, nil))
    end)

    it("returns an empty list without pods", function()
      assert.same({}, policy.pod_problems({}, nil))
      assert.same({}, policy.pod_problems(nil, nil))
    end)
  end)

  describe("cut_message", function()
    it("never splits a UTF-8 sequence", function()
      local s = "ab\u{20AC}\u{20AC}"
      assert.equal(s, policy.cut_message(s, 8))
      assert.equal("ab\u{20AC}...", policy.cut_message(s, 7))
      assert.equal("ab\u{20AC}...", policy.cut_message(s, 5))
      assert.equal("ab...", policy.cut_message(s, 4))
      assert.equal("ab...", policy.cut_message(s, 2))
      assert.equal("a...", policy.cut_message(s, 1))
    end)

    it("cuts where the core cuts (codec.utf8_cut, one home)", function()
      local s = ("x\u{20AC}\u{1F600}"):rep(3)
      for max = 0, #s - 1 do
        assert.equal(codec.utf8_cut(s, max) .. "...",
          policy.cut_message(s, max))
      end
    end)
  end)
end)
