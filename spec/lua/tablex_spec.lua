-- Specs for lua/k8s/tablex.lua.

local codec = require("codec_shim").install()
-- Loaded as the policy sandbox loads it: no globals beyond the allow-list.
local tablex = require("k8s_spec_helper").require("k8s.tablex")

local array, object, null = codec.array, codec.object, codec.null


describe("k8s.tablex", function()
  describe("deepcopy", function()
    it("returns scalars and codec.null unchanged", function()
      for _, v in ipairs({ 1, 1.5, "s", true, false, null }) do
        assert.equal(v, tablex.deepcopy(v))
      end
      assert.is_nil(tablex.deepcopy(nil))
    end)

    it("returns a distinct table with the same content", function()
      local src = { a = { b = { 1, 2, { c = "d" } } }, e = null }
      local copy = tablex.deepcopy(src)
      assert.same(src, copy)
      assert.are_not.equal(src, copy)
      assert.are_not.equal(src.a, copy.a)
      assert.are_not.equal(src.a.b[3], copy.a.b[3])
      assert.equal(null, copy.e)
    end)

    it("keeps the codec array and object markers", function()
      local src = object({ list = array({}), map = object({}),
        nested = array({ object({ x = array({ 1 }) }) }) })
      local copy = tablex.deepcopy(src)
      assert.is_true(codec.is_object(copy))
      assert.is_true(codec.is_array(copy.list))
      assert.is_true(codec.is_object(copy.map))
      assert.is_true(codec.is_object(copy.nested[1]))
      assert.is_true(codec.is_array(copy.nested[1].x))
    end)

    it("copies a shared sub-table once and survives cycles", function()
      local shared = { v = 1 }
      local src = { a = shared, b = shared }
      src.self = src
      local copy = tablex.deepcopy(src)
      assert.equal(copy.a, copy.b)
      assert.equal(copy, copy.self)
      assert.are_not.equal(shared, copy.a)
    end)

    it("copies what the codec's copy leaves to Lua the same way", function()
      -- another metatable (kept, not copied), and deep nesting
      local mt = {}
      local src = { x = setmetatable({ 1 }, mt), deep = {} }
      local t = src.deep
      for i = 1, 150 do
        t.next = { i }
        t = t.next
      end
      local copy = tablex.deepcopy(src)
      assert.same(src, copy)
      assert.are_not.equal(src.x, copy.x)
      assert.equal(mt, getmetatable(copy.x))
      assert.are_not.equal(src.deep.next, copy.deep.next)
    end)
  end)

  describe("kind", function()
    local cases = {
      { "marked empty array", array({}), "array" },
      { "marked empty object", object({}), "object" },
      { "unmarked empty table", {}, "object" },
      { "unmarked 1..n list", { "a", "b" }, "array" },
      { "unmarked map", { a = 1 }, "object" },
      { "table with holes", { [1] = "a", [3] = "c" }, "object" },
      { "mixed table", { "a", x = 1 }, "object" },
      { "codec.null", null, "null" },
      { "string", "s", "string" },
      { "number", 1, "number" },
      { "boolean", false, "boolean" },
    }
    for _, case in ipairs(cases) do
      it("returns " .. case[3] .. " when given a " .. case[1], function()
        assert.equal(case[3], tablex.kind(case[2]))
      end)
    end
  end)

  describe("is_array", function()
    it("returns true when given a marked or 1..n table", function()
      assert.is_true(tablex.is_array(array({})))
      assert.is_true(tablex.is_array({ 1, 2 }))
    end)

    it("returns false when given an object or a scalar", function()
      assert.is_false(tablex.is_array({}))
      assert.is_false(tablex.is_array(object({ 1 })))
      assert.is_false(tablex.is_array("x"))
    end)
  end)

  describe("equal", function()
    local equal_cases = {
      { "identical scalars", 1, 1 },
      { "integer and float of the same value", 1, 1.0 },
      { "nested tables", { a = { 1, 2, { b = "c" } } },
        { a = { 1, 2, { b = "c" } } } },
      { "unmarked {} and an empty object", {}, object({}) },
      { "unmarked list and a marked array", { 1, 2 }, array({ 1, 2 }) },
      { "two codec.null", null, null },
      { "two empty arrays", array({}), array({}) },
    }
    for _, case in ipairs(equal_cases) do
      it("returns true when given " .. case[1], function()
        assert.is_true(tablex.equal(case[2], case[3]))
        assert.is_true(tablex.equal(case[3], case[2]))
      end)
    end

    local differ_cases = {
      { "an empty array and an empty object", array({}), object({}) },
      { "an empty array and an unmarked {}", array({}), {} },
      { "codec.null and nil", null, nil },
      { "codec.null and an empty object", null, object({}) },
      { "different scalars", 1, 2 },
      { "a string and a number", "1", 1 },
      { "tables with an extra key", { a = 1 }, { a = 1, b = 2 } },
      { "lists of different length", { 1, 2 }, { 1, 2, 3 } },
      { "nested differences", { a = { b = { 1 } } }, { a = { b = { 2 } } } },
      { "a table and a scalar", {}, 0 },
    }
    for _, case in ipairs(differ_cases) do
      it("returns false when given " .. case[1], function()
        assert.is_false(tablex.equal(case[2], case[3]))
        assert.is_false(tablex.equal(case[3], case[2]))
      end)
    end
  end)

  describe("merge", function()
    it("returns dst with src's values merged deeply, src winning", function()
      local dst = { a = 1, b = { c = 2, d = 3 }, keep = "x" }
      local src = { a = 10, b = { d = 30, e = 40 }, new = "y" }
      local out = tablex.merge(dst, src)
      assert.equal(dst, out)
      assert.same({ a = 10, b = { c = 2, d = 30, e = 40 }, keep = "x",
        new = "y" }, out)
    end)

    it("replaces arrays instead of merging them", function()
      local dst = { list = array({ 1, 2, 3 }) }
      tablex.merge(dst, { list = array({ 9 }) })
      assert.same({ 9 }, dst.list)
      assert.is_true(codec.is_array(dst.list))
    end)

    it("replaces an object by a scalar and a scalar by an object", function()
      local dst = { a = { b = 1 }, c = 5 }
      tablex.merge(dst, { a = "flat", c = { d = 1 } })
      assert.same({ a = "flat", c = { d = 1 } }, dst)
    end)

    it("sets codec.null when src holds codec.null", function()
      local dst = { a = { b = 1 } }
      tablex.merge(dst, { a = null })
      assert.equal(null, dst.a)
    end)

    it("never aliases src's tables", function()
      local src = { a = { b = { 1 } } }
      local dst = tablex.merge({}, src)
      dst.a.b[1] = 99
      assert.equal(1, src.a.b[1])
    end)

    it("returns dst unchanged when src is nil", function()
      local dst = { a = 1 }
      assert.equal(dst, tablex.merge(dst, nil))
      assert.same({ a = 1 }, dst)
    end)
  end)

  describe("sorted_keys", function()
    it("returns string keys in bytewise order", function()
      assert.same({ "B", "a", "b", "c" },
        tablex.sorted_keys({ c = 1, a = 1, b = 1, B = 1 }))
    end)

    it("returns numbers first, then strings", function()
      assert.same({ 1, 2, 10, "a", "z" },
        tablex.sorted_keys({ [10] = 1, z = 1, [2] = 1, a = 1, [1] = 1 }))
    end)

    it("returns a codec array, empty when given nil or {}", function()
      assert.is_true(codec.is_array(tablex.sorted_keys({})))
      assert.same({}, tablex.sorted_keys(nil))
    end)

    it("returns the same order however the table was built", function()
      local a, b = {}, {}
      for i = 1, 50 do
        a["k" .. i] = i
        b["k" .. (51 - i)] = i
      end
      assert.same(tablex.sorted_keys(a), tablex.sorted_keys(b))
    end)
  end)

  describe("is_empty", function()
    it("returns true when given nil, {} or an empty array", function()
      assert.is_true(tablex.is_empty(nil))
      assert.is_true(tablex.is_empty({}))
      assert.is_true(tablex.is_empty(array({})))
    end)

    it("returns false when the table has a key", function()
      assert.is_false(tablex.is_empty({ 1 }))
      assert.is_false(tablex.is_empty({ a = false }))
    end)
  end)

  describe("shallow_copy", function()
    it("returns a one-level copy with the same marker", function()
      local inner = { x = 1 }
      local src = object({ a = inner })
      local copy = tablex.shallow_copy(src)
      assert.are_not.equal(src, copy)
      assert.equal(inner, copy.a)
      assert.is_true(codec.is_object(copy))
    end)
  end)

  describe("contains", function()
    it("returns true when the list holds the value", function()
      assert.is_true(tablex.contains({ "a", "b" }, "b"))
    end)

    it("returns false when it does not, or when the list is nil", function()
      assert.is_false(tablex.contains({ "a" }, "c"))
      assert.is_false(tablex.contains(nil, "a"))
    end)
  end)

  describe("map", function()
    it("returns a codec array of the results, skipping nils", function()
      local out = tablex.map({ 1, 2, 3 }, function(v, i)
        if i == 2 then
          return nil
        end
        return v * 10
      end)
      assert.same({ 10, 30 }, out)
      assert.is_true(codec.is_array(out))
    end)

    it("returns an empty array when given nil", function()
      assert.is_true(codec.is_array(tablex.map(nil, tostring)))
    end)
  end)

  describe("filter", function()
    it("returns the kept items in order", function()
      local out = tablex.filter({ 1, 2, 3, 4 }, function(v)
        return v % 2 == 0
      end)
      assert.same({ 2, 4 }, out)
      assert.is_true(codec.is_array(out))
    end)

    it("returns an empty array when given nil", function()
      assert.same({}, tablex.filter(nil, function() return true end))
    end)
  end)

  describe("extend", function()
    it("returns dst with src's items appended", function()
      local dst = { 1 }
      assert.equal(dst, tablex.extend(dst, { 2, 3 }))
      assert.same({ 1, 2, 3 }, dst)
    end)

    it("returns dst unchanged when src is nil", function()
      assert.same({ 1 }, tablex.extend({ 1 }, nil))
    end)
  end)

  describe("with the real codec", function()
    local real = codec.json_decode ~= nil

    it("keeps JSON null, [] and {} through deepcopy", function()
      if not real then
        pending("build/codec.so is not built; the shim has no JSON")
        return
      end
      local text = '{"a":[],"b":{},"c":null,"d":[{"e":[1,2.5,"x"]}]}'
      local doc = assert(codec.json_decode(text))
      assert.equal(text, codec.json_encode(tablex.deepcopy(doc)))
    end)

    it("tells decoded [] from decoded {} in equal", function()
      if not real then
        pending("build/codec.so is not built; the shim has no JSON")
        return
      end
      local a = assert(codec.json_decode("[]"))
      local o = assert(codec.json_decode("{}"))
      assert.is_false(tablex.equal(a, o))
      assert.is_true(tablex.equal(o, {}))
      assert.is_true(tablex.equal(assert(codec.json_decode('{"x":null}')),
        { x = codec.null }))
    end)

    it("merges decoded documents and encodes deterministically", function()
      if not real then
        pending("build/codec.so is not built; the shim has no JSON")
        return
      end
      local dst = assert(codec.json_decode('{"a":{"b":1,"l":[1,2]},"z":[]}'))
      tablex.merge(dst, assert(codec.json_decode('{"a":{"c":2,"l":[]}}')))
      assert.equal('{"a":{"b":1,"c":2,"l":[]},"z":[]}',
        codec.json_encode(dst))
    end)
  end)

  describe("get", function()
    local doc = { spec = { storage = { size = "1Gi" }, list = { "a" },
      gone = null } }

    it("returns the nested value when every step exists", function()
      assert.equal("1Gi", tablex.get(doc, "spec", "storage", "size"))
      assert.equal("a", tablex.get(doc, "spec", "list", 1))
      assert.equal(doc, tablex.get(doc))
    end)

    it("returns nil when a step is missing, null or a scalar", function()
      assert.is_nil(tablex.get(doc, "spec", "nope", "size"))
      assert.is_nil(tablex.get(doc, "spec", "gone", "x"))
      assert.is_nil(tablex.get(doc, "spec", "storage", "size", "x"))
      assert.is_nil(tablex.get(nil, "a"))
    end)
  end)
end)
