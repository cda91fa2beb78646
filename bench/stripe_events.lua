-- wrk script: every request is a unique Stripe event (~4 KB), signed like Stripe signs it
-- (HMAC-SHA256 of "t.body" with the endpoint secret), computed with OpenSSL through FFI.
-- Environment: BENCH_SECRET, BENCH_BODY (a file with __ID__ where the event id goes),
-- BENCH_PREFIX (makes ids unique across rounds).
local ffi = require("ffi")
ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
]]
local ok, crypto = pcall(function() local _ = ffi.C.HMAC; return ffi.C end)
if not ok then crypto = ffi.load("libcrypto.so.3") end

local secret = os.getenv("BENCH_SECRET")
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local template = f:read("*a")
f:close()
local cut = template:find("__ID__", 1, true)
local head, tail = template:sub(1, cut - 1), template:sub(cut + 6)
local prefix = os.getenv("BENCH_PREFIX")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
local md = ffi.new("unsigned char[32]")
local mdlen = ffi.new("unsigned int[1]")
local hex = {}
for i = 0, 255 do hex[i] = string.format("%02x", i) end

function request()
  counter = counter + 1
  local body = head .. prefix .. "_" .. tostring(tid) .. "_" .. counter .. tail
  local ts = tostring(os.time())
  local signed = ts .. "." .. body
  crypto.HMAC(crypto.EVP_sha256(), secret, #secret, signed, #signed, md, mdlen)
  local parts = {}
  for i = 0, 31 do parts[i + 1] = hex[md[i]] end
  return wrk.format("POST", "/webhooks/stripe", {
    ["Content-Type"] = "application/json; charset=utf-8",
    ["Stripe-Signature"] = "t=" .. ts .. ",v1=" .. table.concat(parts),
    ["User-Agent"] = "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
  }, body)
end
