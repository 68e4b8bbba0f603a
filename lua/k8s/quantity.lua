--- k8s.quantity: Kubernetes resource quantities, exactly.
--
-- Mirrors k8s.io/apimachinery/pkg/api/resource (Quantity): the same grammar,
-- the same rounding (values finer than 1n round up, away from zero), the same
-- canonical String() (including its reuse of an input that is already in
-- canonical form, so "1.500k" stays "1.500k" exactly as the apiserver would
-- serialise it). Arithmetic is exact: decimal digit strings and Lua 5.4
-- integers, never floats.
--
-- One deliberate difference: a quantity whose magnitude exceeds
-- 9223372036854775807 (int64) is rejected with an error. apimachinery caps
-- binary ones ("9Ei" -> 9223372036854775807) and keeps decimal ones as big
-- decimals; neither is a sensible size or CPU request.
--
-- The core's comparison (core/apply.c, apply_quantity_cmp) is the C port of
-- the same grammar; both pass one table of test vectors,
-- spec/c/fixtures/quantity_vectors.json (apimachinery's cases).
--
-- API (every `q` argument accepts a string, a Lua number or a parsed
-- quantity):
--   parse(s)            -> quantity | nil, err
--       quantity fields: sign (-1/0/1), digits (decimal string, no leading or
--       trailing zeros), scale (value = sign * digits * 10^scale), format
--       ("DecimalSI" | "BinarySI" | "DecimalExponent"); tostring(quantity)
--       is its canonical string; ==, < and <= compare values
--   is_valid(s)         -> true | false, err
--   canonical(q)        -> string | nil, err (Quantity.String())
--   to_int(q)           -> integer | nil, err (Quantity.Value(): rounded up,
--                          away from zero)
--   to_bytes(q)         -> same as to_int
--   to_milli(q)         -> integer | nil, err (Quantity.MilliValue())
--   to_scaled(q, scale) -> integer | nil, err (Quantity.ScaledValue(scale))
--   compare(a, b)       -> -1 | 0 | 1 | nil, err
--   equal(a, b)         -> boolean | nil, err (same value, any spelling)
--   format_bytes(n)     -> string | nil, err: integer n in its shortest exact
--                          binary-suffix form (1073741824 -> "1Gi",
--                          1536 -> "1536", 1000 -> "1000")
--   format_decimal(n)   -> string | nil, err: integer n in canonical DecimalSI
--                          form (1000 -> "1k", 1500 -> "1500")

local M = {}

local type = type
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local getmetatable = getmetatable
local sub = string.sub
local find = string.find
local match = string.match
local rep = string.rep
local byte = string.byte
local char = string.char
local concat = table.concat
local math_type = math.type

local ERR_FORMAT = "quantities must match the regular expression "
  .. "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
local ERR_SUFFIX = "unable to parse quantity's suffix"
local ERR_RANGE = "quantity magnitude exceeds 9223372036854775807"

local MAX_DIGITS = "9223372036854775807"
local MAX_INT32 = 2147483647
local NANO = -9
-- Largest integer that can be multiplied by 1024 without overflow.
local MAX_BEFORE_1024 = math.maxinteger // 1024

local DECIMAL_SUFFIXES = {
  [""] = 0, n = -9, u = -6, m = -3,
  k = 3, M = 6, G = 9, T = 12, P = 15, E = 18,
}
local BINARY_SUFFIXES = { Ki = 10, Mi = 20, Gi = 30, Ti = 40, Pi = 50, Ei = 60 }
local DECIMAL_BY_EXPONENT = {
  [-9] = "n", [-6] = "u", [-3] = "m", [0] = "",
  [3] = "k", [6] = "M", [9] = "G", [12] = "T", [15] = "P", [18] = "E",
}
local BINARY_BY_POWER = { [0] = "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" }

--- Quantity formats.
M.DECIMAL_SI = "DecimalSI"
M.BINARY_SI = "BinarySI"
M.DECIMAL_EXPONENT = "DecimalExponent"

local Quantity = {}


-- Digit-string helpers (non-negative integers as decimal strings) ----------

local function strip_leading_zeros(s)
  local i = find(s, "[^0]")
  if i == nil then
    return ""
  end
  return sub(s, i)
end


-- s * m for a small integer m (m * 9 + carry must fit comfortably in int64).
local function mul_small(s, m)
  local out = {}
  local carry = 0
  for i = #s, 1, -1 do
    local v = (byte(s, i) - 48) * m + carry
    out[#out + 1] = char(48 + v % 10)
    carry = v // 10
  end
  while carry > 0 do
    out[#out + 1] = char(48 + carry % 10)
    carry = carry // 10
  end
  -- out holds the digits least significant first.
  local n = #out
  for i = 1, n // 2 do
    out[i], out[n - i + 1] = out[n - i + 1], out[i]
  end
  return concat(out)
end


-- s * 1024^times. Multiplies as Lua integers while the product fits (the
-- usual case: "100Gi" is three integer multiplications), then digit by
-- digit; both give the same digit string.
local function mul_1024(s, times)
  if #s <= 18 then
    local v = tonumber(s)
    while times > 0 and v <= MAX_BEFORE_1024 do
      v = v * 1024
      times = times - 1
    end
    s = tostring(v)
  end
  for _ = 1, times do
    s = mul_small(s, 1024)
  end
  return s
end


-- s + 1.
local function increment(s)
  local i = #s
  while i > 0 and sub(s, i, i) == "9" do
    i = i - 1
  end
  if i == 0 then
    return "1" .. rep("0", #s)
  end
  return sub(s, 1, i - 1) .. char(byte(s, i) + 1) .. rep("0", #s - i)
end


-- Compares the magnitudes d1 * 10^e1 and d2 * 10^e2 (digits normalised:
-- no leading or trailing zeros, non-empty).
local function compare_abs(d1, e1, d2, e2)
  local m1, m2 = #d1 + e1, #d2 + e2
  if m1 ~= m2 then
    return m1 < m2 and -1 or 1
  end
  local n = #d1 > #d2 and #d1 or #d2
  local a = d1 .. rep("0", n - #d1)
  local b = d2 .. rep("0", n - #d2)
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end


-- Parsing -------------------------------------------------------------------

-- Port of apimachinery's parseQuantityString: returns positive, num, denom,
-- suffix (num without leading zeros, "0" when empty), or nil on bad format.
local function split(str)
  local positive = true
  local pos = 1
  local c = sub(str, 1, 1)
  if c == "-" then
    positive = false
    pos = 2
  elseif c == "+" then
    pos = 2
  end
  local i = find(str, "[^0]", pos)
  if i == nil then
    return positive, "0", "", ""
  end
  pos = i
  i = find(str, "[^0-9]", pos)
  if i == nil then
    return positive, sub(str, pos), "", ""
  end
  local num = sub(str, pos, i - 1)
  if num == "" then
    num = "0"
  end
  pos = i
  local denom = ""
  if sub(str, pos, pos) == "." then
    pos = pos + 1
    i = find(str, "[^0-9]", pos)
    if i == nil then
      return positive, num, sub(str, pos), ""
    end
    denom = sub(str, pos, i - 1)
    pos = i
  end
  local suffix_start = pos
  i = find(str, "[^eEinumkKMGTP]", pos)
  if i == nil then
    return positive, num, denom, sub(str, suffix_start)
  end
  pos = i
  c = sub(str, pos, pos)
  if c == "-" or c == "+" then
    pos = pos + 1
  end
  if find(str, "[^0-9]", pos) == nil then
    return positive, num, denom, sub(str, suffix_start)
  end
  return nil
end


-- Port of the suffixer's interpret: base, exponent, format, or nil.
local function interpret(suffix)
  local e = DECIMAL_SUFFIXES[suffix]
  if e ~= nil then
    return 10, e, M.DECIMAL_SI
  end
  e = BINARY_SUFFIXES[suffix]
  if e ~= nil then
    return 2, e, M.BINARY_SI
  end
  local first = sub(suffix, 1, 1)
  if #suffix > 1 and (first == "e" or first == "E") then
    local sign, digits = suffix:match("^.([+-]?)(%d+)$")
    if digits == nil then
      return nil
    end
    digits = strip_leading_zeros(digits)
    -- The exponent must fit in an int32, [-2^31, 2^31 - 1] (apimachinery
    -- rejects rather than truncates it).
    if #digits > 10 then
      return nil
    end
    local v = tonumber(digits ~= "" and digits or "0")
    if v > MAX_INT32 + (sign == "-" and 1 or 0) then
      return nil
    end
    if sign == "-" then
      v = -v
    end
    return 10, v, M.DECIMAL_EXPONENT
  end
  return nil
end


-- Whether ParseQuantity's int64 fast path keeps the input string as the
-- cached String() value.
local function reuses_input(num, denom, exponent, format)
  if format == M.BINARY_SI then
    if #denom ~= 0 then
      return false
    end
    local precision = 15 - #num - (exponent * 3 // 10) - 1
    if precision < 0 then
      return false
    end
    -- Go's check is value&0x07 != 0: the low three bits of the numerator.
    return tonumber(num) & 7 ~= 0
  end
  if 18 - (#num + #denom) < 0 then
    return false
  end
  local scale = exponent - #denom
  if scale < NANO then
    return false
  end
  local shifted = num .. denom
  return scale % 3 == 0 and sub(shifted, -3) ~= "000"
    and sub(shifted, 1, 1) ~= "0"
end


local function new_quantity(sign, digits, scale, format, s)
  return setmetatable({
    sign = sign,
    digits = digits,
    scale = scale,
    format = format,
    s = s,
  }, Quantity)
end


local function fail(str, msg)
  return nil, "invalid quantity \"" .. tostring(str) .. "\": " .. msg
end


-- Fast path of parse() for the common "<integer><suffix>" form ("4Gi",
-- "500m", "2": no sign, no leading zero, no fraction, at most 15 digits,
-- a binary or decimal suffix, the value below 2^63 and 10^18): the
-- quantity the general path builds, without its digit-string arithmetic.
-- nil: not of that form, the general path decides.
local function parse_simple(str)
  local num, suffix = match(str, "^([1-9]%d*)(%a*)$")
  if num == nil or #num > 15 then
    return nil
  end
  local v = tonumber(num)
  local digits, scale, format, s
  local e = BINARY_SUFFIXES[suffix]
  if e ~= nil then
    if v > math.maxinteger >> e then
      return nil
    end
    digits, scale, format = tostring(v << e), 0, M.BINARY_SI
    -- reuses_input() for a whole binary amount
    if 15 - #num - (e * 3 // 10) - 1 >= 0 and v & 7 ~= 0 then
      s = str
    end
  else
    e = DECIMAL_SUFFIXES[suffix]
    if e == nil or #num + e > 18 then
      return nil
    end
    digits, scale, format = num, e, M.DECIMAL_SI
    -- reuses_input() for a whole decimal amount (e is a multiple of 3)
    if sub(num, -3) ~= "000" then
      s = str
    end
  end
  -- trailing zeros move into the scale
  local last = #digits
  while byte(digits, last) == 48 do
    last = last - 1
  end
  if last < #digits then
    scale = scale + #digits - last
    digits = sub(digits, 1, last)
  end
  return new_quantity(1, digits, scale, format, s)
end


-- Shortest decimal text that reads back as the same float.
local function float_text(n)
  for _, prec in ipairs({ 15, 16, 17 }) do
    local s = string.format("%." .. prec .. "g", n)
    if tonumber(s) == n then
      return s
    end
  end
  return string.format("%.17g", n)
end


--- Parses a quantity string as resource.ParseQuantity does.
-- Accepts "<sign><number><suffix>": binary suffixes Ki Mi Gi Ti Pi Ei,
-- decimal n u m "" k M G T P E, exponents e/E (e.g. "1e3", "1.5E-3").
-- Values finer than 1n round up (away from zero) to 1n. Surrounding
-- whitespace is an error. A Lua number is read from its shortest decimal text.
-- @param str string|number
-- @return table|nil the quantity
-- @return string|nil error: 'invalid quantity "<s>": <reason>'
function M.parse(str)
  if math_type(str) == "integer" then
    str = tostring(str)
  elseif math_type(str) == "float" then
    if str ~= str or str == math.huge or str == -math.huge then
      return fail(str, "not a finite number")
    end
    str = float_text(str)
  end
  if type(str) ~= "string" then
    return nil, "invalid quantity: expected a string, got " .. type(str)
  end
  if str == "" then
    return fail(str, ERR_FORMAT)
  end
  if str == "0" then
    return new_quantity(0, "0", 0, M.DECIMAL_SI, "0")
  end
  local q = parse_simple(str)
  if q ~= nil then
    return q
  end
  local positive, num, denom, suffix = split(str)
  if positive == nil then
    return fail(str, ERR_FORMAT)
  end
  local base, exponent, format = interpret(suffix)
  if base == nil then
    return fail(str, ERR_SUFFIX)
  end

  local digits = strip_leading_zeros(num .. denom)
  local scale = -#denom
  if base == 10 then
    scale = scale + exponent
  elseif digits ~= "" then
    digits = mul_1024(digits, exponent // 10)
  end
  if digits == "" then
    return new_quantity(0, "0", 0, format, nil)
  end

  -- Round up to the nanounit: inf.Dec Round(..., 9, RoundUp).
  if scale < NANO then
    local drop = NANO - scale
    local kept, dropped
    if drop >= #digits then
      kept, dropped = "", digits
    else
      kept, dropped = sub(digits, 1, #digits - drop), sub(digits, -drop)
    end
    if find(dropped, "[1-9]") then
      kept = increment(kept == "" and "0" or kept)
    end
    digits = strip_leading_zeros(kept)
    scale = NANO
  end
  local trailing = #digits - #(digits:match("^(.-)0*$"))
  if trailing > 0 then
    digits = sub(digits, 1, #digits - trailing)
    scale = scale + trailing
  end

  if compare_abs(digits, scale, MAX_DIGITS, 0) > 0 then
    return fail(str, ERR_RANGE)
  end
  if format == M.BINARY_SI and compare_abs(digits, scale, "1", 0) < 0 then
    -- A binary fraction below one is shown in DecimalSI (apimachinery).
    format = M.DECIMAL_SI
  end
  local s = nil
  if reuses_input(num, denom, exponent, format) then
    s = str
  end
  return new_quantity(positive and 1 or -1, digits, scale, format, s)
end


local function coerce(v)
  if type(v) == "table" and getmetatable(v) == Quantity then
    return v
  end
  return M.parse(v)
end


--- Whether a string is a valid quantity.
-- @param str string
-- @return boolean
-- @return string|nil the parse error
function M.is_valid(str)
  local q, err = M.parse(str)
  if q == nil then
    return false, err
  end
  return true
end


-- The value as a Lua integer when it is one (|v| <= max is guaranteed).
local function integer_value(q)
  if q.sign == 0 then
    return 0
  end
  if q.scale < 0 then
    return nil
  end
  local v = tonumber(q.digits .. rep("0", q.scale))
  return q.sign * v
end


local function remove_1024_factors(n)
  local power = 0
  while n ~= 0 and n % 1024 == 0 and power < 6 do
    n = n // 1024
    power = power + 1
  end
  return n, power
end


-- CanonicalizeBytes.
local function canonical_string(q)
  if q.sign == 0 then
    return "0"
  end
  local format = q.format
  if format == M.BINARY_SI then
    if compare_abs(q.digits, q.scale, "1024", 0) < 0 or q.scale < 0 then
      format = M.DECIMAL_SI
    else
      local amount, power = remove_1024_factors(integer_value(q))
      return tostring(amount) .. BINARY_BY_POWER[power]
    end
  end
  -- Lower the exponent to a multiple of 3, padding the mantissa.
  local pad = q.scale % 3
  local exponent = q.scale - pad
  local number = q.digits .. rep("0", pad)
  if q.sign < 0 then
    number = "-" .. number
  end
  if format == M.DECIMAL_EXPONENT then
    if exponent == 0 then
      return number
    end
    return number .. "e" .. exponent
  end
  local suffix = DECIMAL_BY_EXPONENT[exponent]
  if suffix == nil then
    -- Unreachable within int64 and nano bounds; newer apimachinery also
    -- falls back to exponent notation here.
    return number .. "e" .. exponent
  end
  return number .. suffix
end


--- The canonical string of a quantity, as Quantity.String() returns it.
-- "1024Mi" -> "1Gi", "1000m" -> "1", "0.5Gi" -> "512Mi", "0.1" -> "100m",
-- "1.5" -> "1500m", "1e3" -> "1e3" (exponent form is kept), "1500m" stays.
-- An input already in canonical form is returned as written, like the
-- apimachinery parser's cached string ("+1Gi" and "1.500k" stay as they are).
-- @param q string|number|table
-- @return string|nil
-- @return string|nil error
function M.canonical(q)
  local err
  q, err = coerce(q)
  if q == nil then
    return nil, err
  end
  if q.s == nil then
    q.s = canonical_string(q)
  end
  return q.s
end


--- The value at a decimal scale, rounded up away from zero:
-- Quantity.ScaledValue(scale).
-- @param q string|number|table
-- @param scale integer power of ten (0 = units, -3 = milli, -9 = nano)
-- @return integer|nil
-- @return string|nil error when q is invalid or the result overflows int64
function M.to_scaled(q, scale)
  local err
  q, err = coerce(q)
  if q == nil then
    return nil, err
  end
  if q.sign == 0 then
    return 0
  end
  local shift = q.scale - scale
  local digits
  if shift >= 0 then
    digits = q.digits .. rep("0", shift)
  else
    local keep = #q.digits + shift
    -- Digits are normalised, so a dropped part is never all zeros.
    if keep <= 0 then
      digits = "1"
    else
      digits = increment(sub(q.digits, 1, keep))
    end
  end
  if compare_abs(digits, 0, MAX_DIGITS, 0) > 0 then
    return nil, "quantity " .. canonical_string(q)
      .. " overflows int64 at scale " .. scale
  end
  return q.sign * tonumber(digits)
end


--- The value in units, rounded up away from zero: Quantity.Value().
-- "1Gi" -> 1073741824, "1.5" -> 2, "100m" -> 1, "-1.5" -> -2.
-- @param q string|number|table
-- @return integer|nil
-- @return string|nil error
function M.to_int(q)
  return M.to_scaled(q, 0)
end


--- Same as to_int, named for sizes: "1Gi" -> 1073741824.
-- @param q string|number|table
-- @return integer|nil
-- @return string|nil error
function M.to_bytes(q)
  return M.to_scaled(q, 0)
end


--- The value in thousandths, rounded up: Quantity.MilliValue().
-- "1.5" -> 1500, "100m" -> 100, "1n" -> 1.
-- @param q string|number|table
-- @return integer|nil
-- @return string|nil error (also when the result overflows int64)
function M.to_milli(q)
  return M.to_scaled(q, -3)
end


local function compare_quantities(a, b)
  if a.sign ~= b.sign then
    return a.sign < b.sign and -1 or 1
  end
  if a.sign == 0 then
    return 0
  end
  return a.sign * compare_abs(a.digits, a.scale, b.digits, b.scale)
end


--- Compares two quantities by value.
-- @param a string|number|table
-- @param b string|number|table
-- @return integer|nil -1, 0 or 1
-- @return string|nil error when either does not parse
function M.compare(a, b)
  local qa, err = coerce(a)
  if qa == nil then
    return nil, err
  end
  local qb
  qb, err = coerce(b)
  if qb == nil then
    return nil, err
  end
  return compare_quantities(qa, qb)
end


--- Whether two quantities have the same value ("1Gi" and "1024Mi" do).
-- @param a string|number|table
-- @param b string|number|table
-- @return boolean|nil
-- @return string|nil error when either does not parse
function M.equal(a, b)
  local c, err = M.compare(a, b)
  if c == nil then
    return nil, err
  end
  return c == 0
end


local function check_integer(n)
  if math_type(n) ~= "integer" then
    return nil, "expected an integer, got " .. (math_type(n) or type(n))
  end
  return true
end


--- An integer in its shortest exact binary-suffix form.
-- 1073741824 -> "1Gi", 1536 -> "1536", 1572864 -> "1536Ki", 0 -> "0".
-- @param n integer
-- @return string|nil
-- @return string|nil error when n is not an integer
function M.format_bytes(n)
  local ok, err = check_integer(n)
  if not ok then
    return nil, err
  end
  local amount, power = remove_1024_factors(n)
  return tostring(amount) .. BINARY_BY_POWER[power]
end


--- An integer in canonical DecimalSI form: 1000 -> "1k", 1500 -> "1500",
-- 2000000 -> "2M".
-- @param n integer
-- @return string|nil
-- @return string|nil error when n is not an integer
function M.format_decimal(n)
  local ok, err = check_integer(n)
  if not ok then
    return nil, err
  end
  -- The decimal text of an integer is DecimalSI; parse() rejects
  -- math.mininteger (magnitude above int64's maximum).
  return M.canonical(tostring(n))
end


-- Metamethods: tostring gives the canonical string; comparisons by value.

Quantity.__name = "k8s.quantity"

Quantity.__tostring = function(q)
  return M.canonical(q)
end

-- Either side may be a string or number (Lua calls __lt/__le for mixed
-- operands); an operand that does not parse raises.
local function compare_or_raise(a, b)
  local c, err = M.compare(a, b)
  if c == nil then
    error(err, 3)
  end
  return c
end

Quantity.__eq = function(a, b)
  return compare_quantities(a, b) == 0
end

Quantity.__lt = function(a, b)
  return compare_or_raise(a, b) < 0
end

Quantity.__le = function(a, b)
  return compare_or_raise(a, b) <= 0
end


return M
