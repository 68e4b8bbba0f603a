-- Specs of the Lua module `codec` (core/lcodec.c), loaded from build/codec.so.
local codec = require("codec")


describe("codec", function()
  describe("representation", function()
    it("exposes null as a lightuserdata distinct from nil", function()
      assert.equal("userdata", type(codec.null))
      assert.is_true(codec.is_null(codec.null))
      assert.is_false(codec.is_null(nil))
    end)

    it("marks tables with array() and object()", function()
      local a, o = codec.array(), codec.object({ x = 1 })
      assert.is_true(codec.is_array(a))
      assert.is_false(codec.is_object(a))
      assert.is_true(codec.is_object(o))
      assert.equal(codec.array_mt, getmetatable(a))
      assert.equal(codec.object_mt, getmetatable(o))
      assert.equal(1, o.x)
    end)

    it("raises on misuse of array()", function()
      assert.has_error(function() codec.array(42) end)
    end)
  end)

  describe("utf8_cut", function()
    local s = "ab\u{20AC}cd" -- 7 bytes

    it("returns s when it is short enough", function()
      assert.equal(s, codec.utf8_cut(s, 7))
      assert.equal(s, codec.utf8_cut(s, 100))
    end)

    it("cuts on a UTF-8 character boundary, never inside one", function()
      assert.equal("ab\u{20AC}c", codec.utf8_cut(s, 6))
      assert.equal("ab\u{20AC}", codec.utf8_cut(s, 5))
      assert.equal("ab", codec.utf8_cut(s, 4))
      assert.equal("ab", codec.utf8_cut(s, 3))
      assert.equal("", codec.utf8_cut(s, 0))
    end)

    it("raises on a negative length", function()
      assert.has_error(function() codec.utf8_cut(s, -1) end)
    end)
  end)


  describe("json_decode", function()
    it("keeps null, empty objects and empty arrays", function()
      local v = assert(codec.json_decode('{"a":null,"o":{},"l":[]}'))
      assert.is_true(codec.is_null(v.a))
      assert.is_true(codec.is_object(v.o))
      assert.is_true(codec.is_array(v.l))
      assert.equal('{"a":null,"l":[],"o":{}}', codec.json_encode(v))
    end)

    it("keeps int64 extremes exact", function()
      local v = codec.json_decode("[9223372036854775807,-9223372036854775808]")
      assert.equal(math.maxinteger, v[1])
      assert.equal(math.mininteger, v[2])
      assert.equal("integer", math.type(v[1]))
    end)

    it("decodes unicode escapes and surrogate pairs", function()
      assert.equal("é😀", codec.json_decode('"\\u00e9\\ud83d\\ude00"'))
    end)

    it("returns nil and a positioned message for malformed input", function()
      local v, err = codec.json_decode('{"a":1,\n"a":2}')
      assert.is_nil(v)
      assert.equal('line 2, column 1: duplicate key "a"', err)
      v, err = codec.json_decode('"\255"')
      assert.is_nil(v)
      assert.equal("line 1, column 2: invalid UTF-8 in string", err)
    end)

    it("honours max_depth and max_size", function()
      assert.is_nil(codec.json_decode("[[1]]", { max_depth = 1 }))
      assert.is_nil(codec.json_decode("[1,2,3]", { max_size = 3 }))
      assert.same({ { 1 } }, codec.json_decode("[[1]]", { max_depth = 2 }))
    end)

    it("raises on a non-string argument", function()
      assert.has_error(function() codec.json_decode({}) end)
    end)
  end)

  describe("json_encode", function()
    it("sorts keys and tells arrays from objects", function()
      assert.equal('{"a":[1,2],"b":{}}', codec.json_encode({ b = {}, a = { 1, 2 } }))
    end)

    it("prints integral floats as integers and others shortest", function()
      assert.equal("[3,0.1,1.5]", codec.json_encode({ 6 / 2, 0.1, 1.5 }))
    end)

    it("returns nil, err for values it cannot encode", function()
      for _, bad in ipairs({ 0 / 0, 1 / 0, print, { [1] = 1, [3] = 3 } }) do
        local s, err = codec.json_encode({ bad })
        assert.is_nil(s)
        assert.is_string(err)
      end
    end)
  end)

  describe("yaml_decode", function()
    it("resolves plain scalars like go-yaml v2", function()
      local v = codec.yaml_decode("[yes, no, ~, 0755, 0x1F, 1_000, 1e3, '1', 10Gi]")
      assert.same({ true, false, codec.null, 493, 31, 1000, 1000.0, "1", "10Gi" }, v)
    end)

    it("returns the first document; yaml_decode_all returns every one", function()
      assert.same({ a = 1 }, codec.yaml_decode("a: 1\n---\nb: 2\n"))
      local docs = codec.yaml_decode_all("a: 1\n---\nb: 2\n")
      assert.equal(2, #docs)
      assert.is_true(codec.is_array(docs))
    end)

    it("turns scalar keys into strings", function()
      assert.same({ ["1"] = "x", ["true"] = "z" }, codec.yaml_decode("1: x\ntrue: z\n"))
    end)

    it("rejects duplicate keys with a position", function()
      local v, err = codec.yaml_decode("a: 1\na: 2\n")
      assert.is_nil(v)
      assert.equal('line 2, column 1: duplicate key "a"', err)
    end)

    it("caps alias expansion", function()
      local bomb = { "a: &a [x, x, x, x, x, x, x, x, x, x]" }
      for i, name in ipairs({ "b", "c", "d", "e", "f", "g" }) do
        local prev = string.char(string.byte("a") + i - 1)
        bomb[#bomb + 1] = name .. ": &" .. name .. " ["
          .. string.rep("*" .. prev, 10, ", ") .. "]"
      end
      local v, err = codec.yaml_decode(table.concat(bomb, "\n"))
      assert.is_nil(v)
      assert.matches("aliases expand to more than", err)
    end)
  end)

  describe("yaml_encode", function()
    it("writes block style with sorted keys and kubectl-style lists", function()
      local obj = { kind = "Service", spec = { ports = { { name = "nfs", port = 2049 } } } }
      assert.equal("kind: Service\nspec:\n  ports:\n  - name: nfs\n    port: 2049\n",
        codec.yaml_encode(obj))
    end)

    it("quotes strings that would read back as another type", function()
      for _, s in ipairs({ "true", "yes", "2049", "0755", "null", "1e3", "", "~", "0x1F" }) do
        local y = codec.yaml_encode({ v = s })
        assert.equal('v: "' .. s .. '"\n', y)
        assert.equal(s, codec.yaml_decode(y).v)
      end
    end)

    it("writes multi-line strings as literal blocks", function()
      assert.equal("v: |\n  a\n  b\n", codec.yaml_encode({ v = "a\nb\n" }))
    end)

    it("round-trips nulls and empty containers", function()
      local v = codec.json_decode('{"a":null,"b":[],"c":{}}')
      assert.equal('{"a":null,"b":[],"c":{}}',
        codec.json_encode(codec.yaml_decode(codec.yaml_encode(v))))
    end)

    it("is deterministic", function()
      local v = { z = 1, a = { 1, 2 }, m = { x = "y" } }
      assert.equal(codec.yaml_encode(v), codec.yaml_encode(v))
    end)

    it("joins documents with yaml_encode_all", function()
      assert.equal("a: 1\n---\nb: 2\n", codec.yaml_encode_all({ { a = 1 }, { b = 2 } }))
    end)
  end)

  describe("fnv1a64", function()
    it("returns the FNV-1a 64 test vectors as 16 hex digits", function()
      assert.equal("cbf29ce484222325", codec.fnv1a64(""))
      assert.equal("af63dc4c8601ec8c", codec.fnv1a64("a"))
      assert.equal("85944171f73967e8", codec.fnv1a64("foobar"))
    end)

    it("raises on a non-string argument", function()
      assert.has_error(function() codec.fnv1a64({}) end)
    end)
  end)

  describe("same", function()
    local function value()
      return codec.object({ a = 1, b = { "x", codec.null },
        c = codec.object({ d = true }), e = codec.array({}) })
    end

    it("is true for equal values in distinct tables", function()
      assert.is_true(codec.same(value(), value()))
      assert.is_true(codec.same("x", "x"))
      assert.is_true(codec.same(codec.null, codec.null))
      local t = value()
      assert.is_true(codec.same(t, t))
    end)

    it("tells an integer from an integral float", function()
      assert.is_false(codec.same(1, 1.0))
      local a, b = value(), value()
      b.a = 1.0
      assert.is_false(codec.same(a, b))
      assert.is_true(codec.same(1.5, 1.5))
    end)

    it("is false for a key more, less or changed, at any depth", function()
      local a, b = value(), value()
      b.c.x = 1
      assert.is_false(codec.same(a, b))
      assert.is_false(codec.same(b, a))
      b = value()
      b.b[2] = "y"
      assert.is_false(codec.same(a, b))
      b = value()
      b.e = nil
      assert.is_false(codec.same(a, b))
    end)

    it("tells the markers apart", function()
      assert.is_false(codec.same(codec.array({}), codec.object({})))
      assert.is_false(codec.same({}, codec.object({})))
      assert.is_true(codec.same({ 1 }, { 1 }))
    end)

    it("is false for a cycle, and does not loop", function()
      local a, b = {}, {}
      a.self, b.self = a, b
      assert.is_false(codec.same(a, b))
    end)
  end)

  describe("deepcopy", function()
    it("copies tables recursively, markers, null and scalars kept", function()
      local src = codec.object({
        a = codec.array({ 1, 2.5, "x", codec.null, true }),
        o = codec.object({}),
        plain = { k = { 1 } },
      })
      local copy = codec.deepcopy(src)
      assert.is_true(codec.same(src, copy))
      assert.are_not.equal(src, copy)
      assert.are_not.equal(src.a, copy.a)
      assert.are_not.equal(src.plain.k, copy.plain.k)
      assert.equal(codec.object_mt, getmetatable(copy))
      assert.equal(codec.array_mt, getmetatable(copy.a))
      assert.equal(codec.null, copy.a[4])
      assert.is_nil(getmetatable(copy.plain))
      assert.equal(math.type(2.5), math.type(copy.a[2]))
      for _, v in ipairs({ 1, "s", false, codec.null }) do
        assert.equal(v, codec.deepcopy(v))
      end
    end)

    it("copies a shared table once, and a cycle", function()
      local shared = { 1 }
      local src = { a = shared, b = shared }
      src.self = src
      local copy = codec.deepcopy(src)
      assert.equal(copy.a, copy.b)
      assert.are_not.equal(shared, copy.a)
      assert.equal(copy, copy.self)
    end)

    it("copies table keys", function()
      local key = { 1 }
      local copy = codec.deepcopy({ [key] = "v" })
      local k, v = next(copy)
      assert.are_not.equal(key, k)
      assert.same({ 1 }, k)
      assert.equal("v", v)
    end)

    it("leaves other metatables and deep nesting to Lua (nil)", function()
      assert.is_nil(codec.deepcopy({ x = setmetatable({}, {}) }))
      local deep = {}
      local t = deep
      for _ = 1, 150 do
        t.next = {}
        t = t.next
      end
      assert.is_nil(codec.deepcopy(deep))
    end)
  end)
end)
