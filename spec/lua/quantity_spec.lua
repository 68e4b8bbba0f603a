-- Specs for lua/k8s/quantity.lua. Most tables are taken from apimachinery's
-- pkg/api/resource/quantity_test.go (TestQuantityParse, TestQuantityString,
-- TestQuantityParseEmit, TestQuantityCmp) so the semantics stay the same.

require("codec_shim").install()
-- Loaded as the policy sandbox loads it: no globals beyond the allow-list.
local quantity = require("k8s_spec_helper").require("k8s.quantity")

local DSI, BSI, DEXP = "DecimalSI", "BinarySI", "DecimalExponent"


-- decQuantity(i, exponent, format) normalised the way parse() stores it.
local function normalise(i, exponent)
  if i == 0 then
    return 0, "0", 0
  end
  local sign = i < 0 and -1 or 1
  local digits = tostring(i < 0 and -i or i)
  while digits:sub(-1) == "0" do
    digits = digits:sub(1, -2)
    exponent = exponent + 1
  end
  return sign, digits, exponent
end


local PARSE_CASES = {
  { "0", 0, 0, DSI }, { "0n", 0, 0, DSI }, { "0u", 0, 0, DSI },
  { "0m", 0, 0, DSI }, { "0Ki", 0, 0, BSI }, { "0k", 0, 0, DSI },
  { "0Mi", 0, 0, BSI }, { "0M", 0, 0, DSI }, { "0Gi", 0, 0, BSI },
  { "0G", 0, 0, DSI }, { "0Ti", 0, 0, BSI }, { "0T", 0, 0, DSI },
  -- Quantity less numbers are allowed
  { "1", 1, 0, DSI },
  -- Binary suffixes
  { "1Ki", 1024, 0, BSI },
  { "8Ki", 8 * 1024, 0, BSI },
  { "7Mi", 7 * 1024 * 1024, 0, BSI },
  { "6Gi", 6 * 1024 * 1024 * 1024, 0, BSI },
  { "5Ti", 5 * 1024 * 1024 * 1024 * 1024, 0, BSI },
  { "4Pi", 4 * 1024 * 1024 * 1024 * 1024 * 1024, 0, BSI },
  { "3Ei", 3 * 1024 * 1024 * 1024 * 1024 * 1024 * 1024, 0, BSI },
  { "10Ti", 10 * 1024 * 1024 * 1024 * 1024, 0, BSI },
  { "100Ti", 100 * 1024 * 1024 * 1024 * 1024, 0, BSI },
  -- Decimal suffixes
  { "5n", 5, -9, DSI }, { "4u", 4, -6, DSI }, { "3m", 3, -3, DSI },
  { "9", 9, 0, DSI }, { "8k", 8, 3, DSI }, { "50k", 5, 4, DSI },
  { "7M", 7, 6, DSI }, { "6G", 6, 9, DSI }, { "5T", 5, 12, DSI },
  { "40T", 4, 13, DSI }, { "300T", 3, 14, DSI }, { "2P", 2, 15, DSI },
  { "1E", 1, 18, DSI },
  -- Decimal exponents
  { "1E-3", 1, -3, DEXP }, { "1e3", 1, 3, DEXP }, { "1E6", 1, 6, DEXP },
  { "1e9", 1, 9, DEXP }, { "1E12", 1, 12, DEXP }, { "1e15", 1, 15, DEXP },
  { "1E18", 1, 18, DEXP },
  -- Nonstandard but still parsable
  { "1e14", 1, 14, DEXP }, { "1e13", 1, 13, DEXP },
  { "100.035k", 100035, 0, DSI },
  -- Things that look like floating point
  { "0.001", 1, -3, DSI }, { "0.0005k", 5, -1, DSI },
  { "0.005", 5, -3, DSI }, { "0.05", 5, -2, DSI }, { "0.5", 5, -1, DSI },
  { "0.00050k", 5, -1, DSI }, { "0.00500", 5, -3, DSI },
  { "0.05000", 5, -2, DSI }, { "0.50000", 5, -1, DSI },
  { "0.5e0", 5, -1, DEXP }, { "0.5e-1", 5, -2, DEXP },
  { "0.5e-2", 5, -3, DEXP }, { "10.035M", 10035, 3, DSI },
  { "1.2e3", 12, 2, DEXP }, { "1.3E+6", 13, 5, DEXP },
  { "1.40e9", 14, 8, DEXP }, { "1.53E12", 153, 10, DEXP },
  { "1.6e15", 16, 14, DEXP }, { "1.7E18", 17, 17, DEXP },
  { "9.01", 901, -2, DSI }, { "8.1k", 81, 2, DSI },
  { "7.123456M", 7123456, 0, DSI }, { "6.987654321G", 6987654321, 0, DSI },
  { "5.444T", 5444, 9, DSI }, { "40.1T", 401, 11, DSI },
  { "300.2T", 3002, 11, DSI }, { "2.5P", 25, 14, DSI },
  { "1.01E", 101, 16, DSI },
  -- Things that saturate/round
  { "3.001n", 4, -9, DSI }, { "1.1E-9", 2, -9, DEXP },
  { "0.0000000001", 1, -9, DSI }, { "0.0000000005", 1, -9, DSI },
  { "0.00000000050", 1, -9, DSI }, { "0.5e-9", 1, -9, DEXP },
  { "0.9n", 1, -9, DSI }, { "0.00000012345", 124, -9, DSI },
  { "0.00000012354", 124, -9, DSI },
  -- We'll accept fractional binary stuff, too.
  { "100.035Ki", 10243584, -2, BSI }, { "0.5Mi", 524288, 0, BSI },
  { "0.05Gi", 536870912, -1, BSI }, { "0.025Ti", 274877906944, -1, BSI },
  -- Things written by trolls
  { "0.000000000001Ki", 2, -9, DSI }, -- rounds up, changes format
  { ".001", 1, -3, DSI }, { ".0001k", 100, -3, DSI }, { "1.", 1, 0, DSI },
  { "1.G", 1, 9, DSI },
  -- Largest accepted magnitude.
  { "9223372036854775807", 9223372036854775807, 0, DSI },
  { "7Ei", 7 * 1024 * 1024 * 1024 * 1024 * 1024 * 1024, 0, BSI },
  { "1.5Ei", 1729382256910270464, 0, BSI },
}

local INVALID = {
  "", "1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i",
  "-3.01e-", "1e4294967297", "1E2147483648", " 1", "1 ", "1K", "1e", "1ki",
  "1e3e3",
}

-- Accepted by apimachinery, rejected here: magnitude above int64.
local OUT_OF_RANGE = {
  "9Ei", "9223372036854775807Ki", "12E", "1e19", "9223372036854775808",
  "-9223372036854775808", "1000E", "1e2147483647", "8Ei",
}

-- input -> Quantity.String() after ParseQuantity(input).
local CANONICAL_CASES = {
  -- TestQuantityParseEmit
  { "1Ki", "1Ki" }, { "1Mi", "1Mi" }, { "1Gi", "1Gi" },
  { "1024Mi", "1Gi" }, { "1000M", "1G" }, { ".001Ki", "1024m" },
  { ".000001Ki", "1024u" }, { ".000000001Ki", "1024n" },
  { ".000000000001Ki", "2n" },
  -- TestQuantityString (alternate spelling -> expected)
  { "307200Ki", "300Mi" }, { "6Ki", "6Ki" }, { "1025024Mi", "1001Gi" },
  { "1024Gi", "1Ti" }, { "5000m", "5" }, { "0.5", "500m" },
  { "1000M", "1G" }, { "0.001T", "1G" }, { "1000u", "1m" },
  { "80m", "80m" }, { "1.08", "1080m" }, { "1080000000n", "1080m" },
  { "300M", "300M" }, { "1T", "1T" }, { "1E", "1E" },
  { "1234567M", "1234567M" }, { "1234567m", "1234567m" }, { "3k", "3k" },
  { "1025", "1025" }, { "0", "0" }, { ".001e12", "1e9" },
  { "0.001e0", "1e-3" }, { "1000e-12", "1e-9" }, { "80e-3", "80e-3" },
  { "300e6", "300e6" }, { "1e12", "1e12" }, { "1e3", "1e3" },
  { "3e3", "3e3" }, { "00", "0" }, { "1n", "1n" }, { "80n", "80n" },
  { "1080n", "1080n" }, { "1u", "1u" }, { "80u", "80u" },
  { "1080u", "1080u" },
  -- The brief's examples and other common spellings
  { "1000m", "1" }, { "0.5Gi", "512Mi" }, { "100M", "100M" },
  { "1500m", "1500m" }, { "0.1", "100m" }, { "1.5", "1500m" },
  { "1.5Gi", "1536Mi" }, { "2048Ki", "2Mi" }, { "1536", "1536" },
  { "1000", "1k" }, { "1000000", "1M" }, { "100Gi", "100Gi" },
  { "0.9Gi", "966367641600m" }, { "0.30000000000000004", "300000001n" },
  { "100.035Ki", "102435840m" }, { "1.5Ei", "1536Pi" },
  { "1Ei", "1Ei" }, { "0Gi", "0" }, { "-0", "0" }, { ".", "0" },
  { "1e0", "1e0" }, { "10e-1", "1" }, { "1.5e3", "1500" },
  { "9223372036854775807", "9223372036854775807" },
  -- Already canonical: the input string is reused verbatim (fast path).
  { "+1Gi", "+1Gi" }, { "01Gi", "01Gi" }, { "1.500k", "1.500k" },
  { "1.G", "1.G" }, { "1E3", "1E3" }, { "+100m", "+100m" },
  { "8Gi", "8Gi" }, { "-1Gi", "-1Gi" },
}


describe("k8s.quantity", function()
  describe("parse", function()
    for _, case in ipairs(PARSE_CASES) do
      local input, i, exponent, format = case[1], case[2], case[3], case[4]
      local sign, digits, scale = normalise(i, exponent)

      it("returns " .. digits .. "e" .. scale .. " " .. format .. " when "
        .. "given " .. input, function()
        local q = assert(quantity.parse(input))
        assert.same({ sign, digits, scale, format },
          { q.sign, q.digits, q.scale, q.format })
      end)

      it("returns the negated value when given -" .. input, function()
        local q = assert(quantity.parse("-" .. input))
        assert.same({ -sign, digits, scale, format },
          { q.sign, q.digits, q.scale, q.format })
      end)

      it("returns the same value when given +" .. input, function()
        local q = assert(quantity.parse("+" .. input))
        assert.same({ sign, digits, scale, format },
          { q.sign, q.digits, q.scale, q.format })
      end)
    end

    for _, input in ipairs(INVALID) do
      it("returns nil, err when given \"" .. input .. "\"", function()
        local q, err = quantity.parse(input)
        assert.is_nil(q)
        assert.matches("^invalid quantity \"", err)
      end)
    end

    for _, input in ipairs(OUT_OF_RANGE) do
      it("returns nil, err when " .. input .. " exceeds int64", function()
        local q, err = quantity.parse(input)
        assert.is_nil(q)
        assert.matches("exceeds 9223372036854775807", err, 1, true)
      end)
    end

    it("returns zero when given a sign, a dot or a bare suffix", function()
      -- apimachinery quirks: an empty numerator reads as 0.
      for _, input in ipairs({ "+", "-", ".", "-.", "Gi", "m" }) do
        local q = assert(quantity.parse(input))
        assert.equal(0, q.sign)
        assert.equal("0", quantity.canonical(q))
      end
    end)

    it("returns the grammar error for a malformed string", function()
      local _, err = quantity.parse("aoeu")
      assert.equal("invalid quantity \"aoeu\": quantities must match the "
        .. "regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        err)
    end)

    it("returns the suffix error for an unknown suffix", function()
      local _, err = quantity.parse("1K")
      assert.equal("invalid quantity \"1K\": unable to parse quantity's "
        .. "suffix", err)
    end)

    it("returns nil, err when given a non-string", function()
      for _, v in ipairs({ true, {}, print }) do
        local q, err = quantity.parse(v)
        assert.is_nil(q)
        assert.matches("expected a string", err)
      end
      assert.is_nil(quantity.parse(nil))
    end)

    it("returns a quantity when given a Lua number", function()
      assert.equal("1k", quantity.canonical(1000))
      assert.equal("500m", quantity.canonical(0.5))
      assert.equal("300000001n", quantity.canonical(0.30000000000000004))
      assert.equal("100m", quantity.canonical(0.1))
    end)

    it("returns nil, err when given a non-finite number", function()
      for _, v in ipairs({ math.huge, -math.huge, 0 / 0 }) do
        local q, err = quantity.parse(v)
        assert.is_nil(q)
        assert.matches("not a finite number", err)
      end
    end)
  end)

  describe("is_valid", function()
    it("returns true when the string parses", function()
      assert.is_true(quantity.is_valid("10Gi"))
    end)

    it("returns false, err when it does not", function()
      local ok, err = quantity.is_valid("10ki")
      assert.is_false(ok)
      assert.matches("suffix", err)
    end)
  end)

  describe("canonical", function()
    for _, case in ipairs(CANONICAL_CASES) do
      local input, want = case[1], case[2]
      it("returns " .. want .. " when given " .. input, function()
        assert.equal(want, quantity.canonical(input))
      end)
    end

    for _, case in ipairs(CANONICAL_CASES) do
      local input, want = case[1], case[2]
      local signed = want:find("^[+-]") ~= nil
      if want ~= "0" and not signed then
        it("returns -" .. want .. " when given -" .. input, function()
          assert.equal("-" .. want, quantity.canonical("-" .. input))
        end)
      end
    end

    it("returns a canonical string that parses to the same value", function()
      for _, case in ipairs(CANONICAL_CASES) do
        local back = assert(quantity.parse(case[2]))
        assert.is_true(quantity.equal(case[1], back))
      end
    end)

    it("accepts a parsed quantity", function()
      local q = assert(quantity.parse("2048Mi"))
      assert.equal("2Gi", quantity.canonical(q))
      assert.equal("2Gi", tostring(q))
    end)

    it("returns nil, err when given an invalid quantity", function()
      local s, err = quantity.canonical("1.1.M")
      assert.is_nil(s)
      assert.matches("invalid quantity", err)
    end)
  end)

  describe("to_int", function()
    local cases = {
      { "0", 0 }, { "1", 1 }, { "1Gi", 1073741824 }, { "1.5", 2 },
      { "-1.5", -2 }, { "100m", 1 }, { "-100m", -1 }, { "1n", 1 },
      { "1k", 1000 }, { "1e3", 1000 }, { "1E", 1000000000000000000 },
      { "0.5Gi", 536870912 }, { "0.9Gi", 966367642 }, { "1.5Ei",
      1729382256910270464 }, { "9223372036854775807", math.maxinteger },
      { "-9223372036854775807", -math.maxinteger }, { "999m", 1 },
      { "1001m", 2 }, { "9.01", 10 },
    }
    for _, case in ipairs(cases) do
      it("returns " .. case[2] .. " when given " .. case[1], function()
        local v = quantity.to_int(case[1])
        assert.equal(case[2], v)
        assert.equal("integer", math.type(v))
      end)
    end

    it("returns nil, err when given an invalid quantity", function()
      local v, err = quantity.to_int("ten")
      assert.is_nil(v)
      assert.matches("invalid quantity", err)
    end)
  end)

  describe("to_bytes", function()
    it("returns the byte count when given a binary size", function()
      assert.equal(10 * 1024 * 1024 * 1024, quantity.to_bytes("10Gi"))
      assert.equal(500000000, quantity.to_bytes("500M"))
    end)

    it("returns nil, err when given an invalid size", function()
      local v, err = quantity.to_bytes("10 Gi")
      assert.is_nil(v)
      assert.is_string(err)
    end)
  end)

  describe("to_milli", function()
    local cases = {
      { "1.5", 1500 }, { "100m", 100 }, { "1n", 1 }, { "-1n", -1 },
      { "2", 2000 }, { "1Ki", 1024000 }, { "0", 0 }, { "1.0001m", 2 },
    }
    for _, case in ipairs(cases) do
      it("returns " .. case[2] .. " when given " .. case[1], function()
        assert.equal(case[2], quantity.to_milli(case[1]))
      end)
    end

    it("returns nil, err when the result overflows int64", function()
      local v, err = quantity.to_milli("1Ei")
      assert.is_nil(v)
      assert.matches("overflows int64", err)
    end)
  end)

  describe("to_scaled", function()
    it("returns the value rounded up at the scale", function()
      assert.equal(1073742, quantity.to_scaled("1Gi", 3))
      assert.equal(1, quantity.to_scaled("1n", 9))
      assert.equal(-1, quantity.to_scaled("-1n", 9))
      assert.equal(5000000000, quantity.to_scaled("5", -9))
      assert.equal(10, quantity.to_scaled("9.01", 0))
      assert.equal(91, quantity.to_scaled("9.01", -1))
    end)

    it("returns nil, err when given an invalid quantity", function()
      assert.is_nil(quantity.to_scaled("x", 0))
    end)
  end)

  describe("compare", function()
    local cases = {
      { "0", "0", 0 }, { "100m", "50m", 1 }, { "50m", "100m", -1 },
      { "10000T", "100Gi", 1 }, { "1Gi", "1024Mi", 0 }, { "-1", "1", -1 },
      { "1", "-1", 1 }, { "-2", "-1", -1 }, { "0", "-1", 1 },
      { "1e3", "1k", 0 }, { "999m", "1", -1 }, { "1.5Gi", "1536Mi", 0 },
      { "1n", "0", 1 }, { "1Ki", "1k", 1 }, { "1G", "1Gi", -1 },
      { "9223372036854775807", "7Ei", 1 }, { "123n", "124n", -1 },
      { "0.5", "500m", 0 }, { "12e-1", "1.2", 0 },
    }
    for _, case in ipairs(cases) do
      it("returns " .. case[3] .. " when given " .. case[1] .. " and "
        .. case[2], function()
        assert.equal(case[3], quantity.compare(case[1], case[2]))
        assert.equal(-case[3], quantity.compare(case[2], case[1]))
      end)
    end

    it("returns nil, err when either side is invalid", function()
      local c, err = quantity.compare("1Gi", "1GB")
      assert.is_nil(c)
      assert.matches("1GB", err)
      c, err = quantity.compare("x", "1")
      assert.is_nil(c)
      assert.matches("\"x\"", err)
    end)
  end)

  -- The vectors core/apply.c passes too (one table for both ports).
  describe("shared vectors (spec/c/fixtures/quantity_vectors.json)", function()
    local codec = require("codec")
    if not codec.json_decode then
      pending("needs build/codec.so")
      return
    end
    local f = assert(io.open("spec/c/fixtures/quantity_vectors.json", "rb"))
    local v = assert(codec.json_decode(f:read("a")))
    f:close()

    for _, p in ipairs(v.equal) do
      it("returns 0 when given " .. p[1] .. " and " .. p[2], function()
        assert.equal(0, quantity.compare(p[1], p[2]))
      end)
    end

    for _, p in ipairs(v.less) do
      it("returns -1 when given " .. p[1] .. " and " .. p[2], function()
        assert.equal(-1, quantity.compare(p[1], p[2]))
        assert.equal(1, quantity.compare(p[2], p[1]))
      end)
    end

    for _, s in ipairs(v.invalid) do
      it("returns nil, err when given \"" .. s .. "\"", function()
        local q, err = quantity.parse(s)
        assert.is_nil(q)
        assert.is_string(err)
      end)
    end

    for _, list in pairs(v.beyond_int64) do
      for _, p in ipairs(list) do
        it("refuses " .. p[1] .. ", beyond int64", function()
          local c, err = quantity.compare(p[1], p[2])
          assert.is_nil(c)
          assert.matches("exceeds", err)
        end)
      end
    end
  end)


  describe("equal", function()
    it("returns true when two spellings have the same value", function()
      assert.is_true(quantity.equal("1Gi", "1024Mi"))
      assert.is_true(quantity.equal("1", "1000m"))
      assert.is_true(quantity.equal(1000, "1k"))
    end)

    it("returns false when the values differ", function()
      assert.is_false(quantity.equal("1G", "1Gi"))
    end)

    it("returns nil, err when either side is invalid", function()
      local r, err = quantity.equal("1G", "")
      assert.is_nil(r)
      assert.is_string(err)
    end)
  end)

  describe("format_bytes", function()
    local cases = {
      { 0, "0" }, { 1, "1" }, { 1023, "1023" }, { 1024, "1Ki" },
      { 1536, "1536" }, { 1048576, "1Mi" }, { 1572864, "1536Ki" },
      { 10 * 1024 * 1024 * 1024, "10Gi" }, { 1 << 60, "1Ei" },
      { 1 << 62, "4Ei" }, { -1024, "-1Ki" }, { 1000, "1000" },
      { math.maxinteger, "9223372036854775807" },
    }
    for _, case in ipairs(cases) do
      it("returns " .. case[2] .. " when given " .. case[1], function()
        assert.equal(case[2], quantity.format_bytes(case[1]))
      end)
    end

    it("returns a string that parses back to the same value", function()
      for _, case in ipairs(cases) do
        assert.equal(case[1], quantity.to_bytes(case[2]))
      end
    end)

    it("returns nil, err when given a non-integer", function()
      for _, v in ipairs({ 1.5, "1024", {} }) do
        local s, err = quantity.format_bytes(v)
        assert.is_nil(s)
        assert.matches("expected an integer", err)
      end
    end)
  end)

  describe("format_decimal", function()
    local cases = {
      { 0, "0" }, { 1000, "1k" }, { 1500, "1500" }, { 2000000, "2M" },
      { -3000, "-3k" }, { 1000000000000000000, "1E" }, { 7, "7" },
    }
    for _, case in ipairs(cases) do
      it("returns " .. case[2] .. " when given " .. case[1], function()
        assert.equal(case[2], quantity.format_decimal(case[1]))
      end)
    end

    it("returns nil, err when given a non-integer", function()
      local s, err = quantity.format_decimal(2.5)
      assert.is_nil(s)
      assert.matches("expected an integer", err)
    end)

    it("returns nil, err when given math.mininteger", function()
      local s, err = quantity.format_decimal(math.mininteger)
      assert.is_nil(s)
      assert.matches("exceeds", err)
    end)
  end)

  describe("quantity metamethods", function()
    it("compares parsed quantities by value", function()
      local a = assert(quantity.parse("1Gi"))
      local b = assert(quantity.parse("1024Mi"))
      local c = assert(quantity.parse("2Gi"))
      assert.is_true(a == b)
      assert.is_true(a < c)
      assert.is_true(a <= b)
      assert.is_false(c < a)
    end)

    it("compares a parsed quantity with a string", function()
      local a = assert(quantity.parse("1Gi"))
      assert.is_true(a < "2Gi")
      assert.is_true("1Mi" <= a)
      assert.is_false(a < "1024Mi")
    end)

    it("raises when the other operand does not parse", function()
      local a = assert(quantity.parse("1Gi"))
      assert.has_error(function() return a < "lots" end)
    end)

    it("returns the canonical string from tostring", function()
      assert.equal("1500m", tostring(assert(quantity.parse("1.5"))))
    end)
  end)
end)
