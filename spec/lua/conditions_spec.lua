-- Specs for lua/k8s/conditions.lua.

local codec = require("codec_shim").install()
-- Loaded as the policy sandbox loads it: no globals beyond the allow-list.
local conditions = require("k8s_spec_helper").require("k8s.conditions")


local function cond(ctype, status, extra)
  local c = { type = ctype, status = status, reason = "Because",
    message = "m" }
  for k, v in pairs(extra or {}) do
    c[k] = v
  end
  return c
end


describe("k8s.conditions", function()
  describe("new", function()
    it("returns a condition when given valid fields", function()
      local c = assert(conditions.new("Ready", "True", "AllReplicasReady",
        "3/3 replicas ready"))
      assert.same({ type = "Ready", status = "True",
        reason = "AllReplicasReady", message = "3/3 replicas ready" }, c)
      assert.is_true(codec.is_object(c))
    end)

    it("returns True/False statuses when given booleans", function()
      assert.equal("True", conditions.new("Ready", true, "Ok", "").status)
      assert.equal("False", conditions.new("Ready", false, "No", "").status)
    end)

    it("returns an empty message when message is nil", function()
      assert.equal("", conditions.new("Ready", "Unknown", "Pending").message)
    end)

    local valid_reasons = { "A", "Ready", "Pod_Ready", "a:b,c", "X1",
      "InvalidSpec", "Reason_" }
    for _, reason in ipairs(valid_reasons) do
      it("returns a condition when the reason is " .. reason, function()
        assert.is_table(conditions.new("Ready", "True", reason, ""))
      end)
    end

    local valid_types = { "Ready", "Reconciled", "example.com/Ready",
      "a.b-c.d/Some_Type.v1", "X" }
    for _, ctype in ipairs(valid_types) do
      it("returns a condition when the type is " .. ctype, function()
        assert.is_table(conditions.new(ctype, "True", "Ok", ""))
      end)
    end

    local invalid = {
      { "an unknown status", { "Ready", "Yes", "Ok", "" }, "status must be" },
      { "a lowercase status", { "Ready", "true", "Ok", "" }, "status must be" },
      { "a nil status", { "Ready", nil, "Ok", "" }, "status must be" },
      { "an empty reason", { "Ready", "True", "", "" }, "reason" },
      { "a reason with a space", { "Ready", "True", "Not Ready", "" },
        "reason" },
      { "a reason starting with a digit", { "Ready", "True", "1Bad", "" },
        "reason" },
      { "a reason ending with ':'", { "Ready", "True", "Bad:", "" },
        "reason" },
      { "a reason ending with ','", { "Ready", "True", "Bad,", "" },
        "reason" },
      { "a reason with a dash", { "Ready", "True", "Not-Ready", "" },
        "reason" },
      { "a nil reason", { "Ready", "True", nil, "" }, "reason" },
      { "a too long reason", { "Ready", "True", string.rep("A", 1025), "" },
        "reason" },
      { "a non-string message", { "Ready", "True", "Ok", 42 },
        "message must be a string" },
      { "a too long message", { "Ready", "True", "Ok",
        string.rep("x", 32769) }, "message longer" },
      { "an empty type", { "", "True", "Ok", "" }, "invalid condition type" },
      { "a nil type", { nil, "True", "Ok", "" }, "invalid condition type" },
      { "a type with a space", { "Is Ready", "True", "Ok", "" },
        "invalid condition type" },
      { "a type with a bad prefix", { "Example.com/Ready", "True", "Ok", "" },
        "invalid condition type" },
      { "a type with an empty prefix", { "/Ready", "True", "Ok", "" },
        "invalid condition type" },
      { "a type ending with '-'", { "Ready-", "True", "Ok", "" },
        "invalid condition type" },
    }
    for _, case in ipairs(invalid) do
      it("returns nil, err when given " .. case[1], function()
        local a = case[2]
        local c, err = conditions.new(a[1], a[2], a[3], a[4])
        assert.is_nil(c)
        assert.matches(case[3], err, 1, true)
      end)
    end
  end)

  describe("validate", function()
    it("returns true when given a valid condition", function()
      assert.is_true(conditions.validate(cond("Ready", "True")))
    end)

    it("returns nil, err when given a non-table", function()
      local ok, err = conditions.validate("Ready")
      assert.is_nil(ok)
      assert.equal("condition must be a table", err)
    end)
  end)

  describe("set", function()
    it("returns a new codec array holding cond when list is nil", function()
      local c = cond("Ready", "True")
      local list = conditions.set(nil, c)
      assert.same({ c }, list)
      assert.is_true(codec.is_array(list))
    end)

    it("appends a condition of a new type", function()
      local list = { cond("Ready", "True") }
      local out = conditions.set(list, cond("Reconciled", "False"))
      assert.equal(list, out)
      assert.same({ "Ready", "Reconciled" }, { list[1].type, list[2].type })
    end)

    it("replaces a condition of the same type in place", function()
      local list = { cond("A", "True"), cond("B", "True"), cond("C", "True") }
      conditions.set(list, cond("B", "False", { reason = "Broken" }))
      assert.same({ "A", "B", "C" },
        { list[1].type, list[2].type, list[3].type })
      assert.equal("False", list[2].status)
      assert.equal("Broken", list[2].reason)
      assert.equal(3, #list)
    end)

    it("keeps lastTransitionTime when the status is unchanged", function()
      local list = { cond("Ready", "True", { lastTransitionTime = "T1" }) }
      conditions.set(list, cond("Ready", "True", { message = "new" }))
      assert.equal("T1", list[1].lastTransitionTime)
      assert.equal("new", list[1].message)
    end)

    it("drops lastTransitionTime when the status changed", function()
      local list = { cond("Ready", "True", { lastTransitionTime = "T1" }) }
      conditions.set(list, cond("Ready", "False"))
      assert.is_nil(list[1].lastTransitionTime)
    end)

    it("keeps cond's own lastTransitionTime", function()
      local list = { cond("Ready", "True", { lastTransitionTime = "T1" }) }
      conditions.set(list, cond("Ready", "True", { lastTransitionTime = "T2" }))
      assert.equal("T2", list[1].lastTransitionTime)
    end)
  end)

  describe("get", function()
    local list = { cond("Ready", "True"), cond("Reconciled", "False") }

    it("returns the condition of the type", function()
      assert.equal(list[2], conditions.get(list, "Reconciled"))
    end)

    it("returns nil when the type is absent or the list is nil", function()
      assert.is_nil(conditions.get(list, "Degraded"))
      assert.is_nil(conditions.get(nil, "Ready"))
    end)
  end)

  describe("remove", function()
    it("returns the list without the type, order kept", function()
      local list = { cond("A", "True"), cond("B", "True"), cond("C", "True") }
      conditions.remove(list, "B")
      assert.same({ "A", "C" }, { list[1].type, list[2].type })
      assert.equal(2, #list)
    end)

    it("returns the list unchanged when the type is absent", function()
      local list = { cond("A", "True") }
      assert.equal(list, conditions.remove(list, "Z"))
      assert.equal(1, #list)
      assert.is_nil(conditions.remove(nil, "Z"))
    end)
  end)

  describe("status_of", function()
    it("returns the status, or nil when absent", function()
      local list = { cond("Ready", "Unknown") }
      assert.equal("Unknown", conditions.status_of(list, "Ready"))
      assert.is_nil(conditions.status_of(list, "Other"))
    end)
  end)

  describe("predicates", function()
    local list = { cond("T", "True"), cond("F", "False"),
      cond("U", "Unknown") }
    local cases = {
      -- type, is_true, is_false, is_unknown
      { "T", true, false, false },
      { "F", false, true, false },
      { "U", false, false, true },
      { "Missing", false, false, true },
    }
    for _, case in ipairs(cases) do
      it("returns is_true/is_false/is_unknown = " .. tostring(case[2]) .. "/"
        .. tostring(case[3]) .. "/" .. tostring(case[4]) .. " when the type "
        .. "is " .. case[1], function()
        assert.equal(case[2], conditions.is_true(list, case[1]))
        assert.equal(case[3], conditions.is_false(list, case[1]))
        assert.equal(case[4], conditions.is_unknown(list, case[1]))
      end)
    end

    it("returns false from is_true when the list is nil", function()
      assert.is_false(conditions.is_true(nil, "Ready"))
    end)
  end)

  describe("merge_transition", function()
    local NOW = "2024-05-01T10:00:00Z"
    local OLD = "2024-04-01T09:00:00Z"

    it("returns old lastTransitionTime when the status is unchanged",
      function()
        local old = { cond("Ready", "True", { lastTransitionTime = OLD }) }
        local out = conditions.merge_transition(old,
          { cond("Ready", "True", { message = "still" }) }, NOW)
        assert.equal(OLD, out[1].lastTransitionTime)
        assert.equal("still", out[1].message)
      end)

    it("returns now when the status flipped", function()
      local old = { cond("Ready", "True", { lastTransitionTime = OLD }) }
      local out = conditions.merge_transition(old, { cond("Ready", "False") },
        NOW)
      assert.equal(NOW, out[1].lastTransitionTime)
    end)

    it("returns now for a type that is new", function()
      local out = conditions.merge_transition({}, { cond("Ready", "True") },
        NOW)
      assert.equal(NOW, out[1].lastTransitionTime)
    end)

    it("returns now when the old condition had no time", function()
      local out = conditions.merge_transition({ cond("Ready", "True") },
        { cond("Ready", "True") }, NOW)
      assert.equal(NOW, out[1].lastTransitionTime)
    end)

    it("returns new_list's order and types, not old_list's", function()
      local old = { cond("B", "True", { lastTransitionTime = OLD }),
        cond("Gone", "True", { lastTransitionTime = OLD }) }
      local out = conditions.merge_transition(old,
        { cond("A", "True"), cond("B", "True") }, NOW)
      assert.same({ "A", "B" }, { out[1].type, out[2].type })
      assert.same({ NOW, OLD },
        { out[1].lastTransitionTime, out[2].lastTransitionTime })
      assert.equal(2, #out)
      assert.is_true(codec.is_array(out))
    end)

    it("does not modify its inputs", function()
      local old = { cond("Ready", "True", { lastTransitionTime = OLD }) }
      local new = { cond("Ready", "False") }
      conditions.merge_transition(old, new, NOW)
      assert.is_nil(new[1].lastTransitionTime)
      assert.equal(OLD, old[1].lastTransitionTime)
    end)

    it("returns an empty array when new_list is nil", function()
      local out = conditions.merge_transition(nil, nil, NOW)
      assert.same({}, out)
      assert.is_true(codec.is_array(out))
    end)

    it("returns nil, err when now is missing or not a string", function()
      for _, now in ipairs({ false, 0, "" }) do
        local out, err = conditions.merge_transition({}, {}, now)
        assert.is_nil(out)
        assert.matches("now must be", err)
      end
      assert.is_nil(conditions.merge_transition({}, {}, nil))
    end)
  end)
end)
