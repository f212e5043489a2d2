"""The Redis store's Lua scripts: each change is one atomic script, so registries never race.

Keys (``P`` is the prefix, ``corral:registry:`` by default):

- ``P lease:<id>``  the instance JSON, ``SET ... PX ttl``: the lease *is* the key's TTL;
- ``P docs``        hash id -> instance JSON (no TTL): the index of instances, and the last
  content of one whose lease ran out, for its ``delete`` event;
- ``P rev``         the revision counter (``INCR``);
- ``P events``      a Stream of encoded event lines, entry id ``<revision>-0``, ``MAXLEN ~``.

Every script takes ``KEYS = [docs, rev, events, (lease)]`` and ``ARGV[1] = maxlen``, so the
``emit`` prelude below is shared. Bumping the counter and appending to the stream happen in the
same script, so stream ids are the revisions, gap-free and in order. A lease that ran out is
turned into a ``delete`` by whichever registry first removes its id from ``docs`` (``HDEL``
answers 1 to exactly one caller), so two registries never both emit it.

Keys built inside the scripts (``lease:<id>``) are not declared: a single Redis (or a
Sentinel-managed primary) is supported, Redis Cluster is not.
"""

from __future__ import annotations

_EMIT = """
local function emit(kind, doc)
  if redis.call('EXISTS', KEYS[2]) == 0 then
    -- A Redis that lost its data (restarted without persistence): go on from the wall clock
    -- in ms, as INIT does, so revisions never go back and watchers see the new events.
    local t = redis.call('TIME')
    redis.call('SET', KEYS[2], string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000)))
  end
  local rev = redis.call('INCR', KEYS[2])
  local r = string.format('%d', rev)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], r .. '-0', 'e',
    '{"type":"' .. kind .. '","revision":' .. r .. ',"instance":' .. doc .. '}\\n')
  return rev
end
local function current()
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
"""

# Expire the given ids (or every id in docs) whose lease key is gone; returns how many.
_SWEEP_BODY = """
local function sweep(prefix, ids)
  local n = 0
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', prefix .. id) == 0 then
      local doc = redis.call('HGET', KEYS[1], id)
      if doc and redis.call('HDEL', KEYS[1], id) == 1 then
        emit('delete', doc)
        n = n + 1
      end
    end
  end
  return n
end
"""

# ARGV: maxlen, id, expected lease value ('' = absent), new doc, px ('0' = keep the TTL),
# changed ('1' = content changed: record and publish). Returns -1 on a lost race (the caller
# reads again), else the revision after the write.
PUT = (
    _EMIT
    + """
local cur = redis.call('GET', KEYS[4])
if (cur or '') ~= ARGV[3] then return -1 end
if not cur then
  local old = redis.call('HGET', KEYS[1], ARGV[2])
  if old and redis.call('HDEL', KEYS[1], ARGV[2]) == 1 then
    emit('delete', old)  -- its lease ran out before anyone noticed: that comes first
  end
end
if ARGV[5] == '0' then
  redis.call('SET', KEYS[4], ARGV[4], 'KEEPTTL')
else
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
  return emit('put', ARGV[4])
end
return current()
"""
)

# ARGV: maxlen, id. Returns {revision, live}: live 0 means the lease had already run out (the
# delete event is still emitted, once); nil when the id is unknown.
DELETE = (
    _EMIT
    + """
local live = redis.call('DEL', KEYS[4])
local doc = redis.call('HGET', KEYS[1], ARGV[2])
if not doc or redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return nil end
return {emit('delete', doc), live}
"""
)

# ARGV: maxlen. Renews the lease from the stored lease_ttl_s; returns {doc, revision} or nil.
HEARTBEAT = """
local doc = redis.call('GET', KEYS[4])
if not doc then return nil end
local ttl = cjson.decode(doc)['lease_ttl_s']
redis.call('PEXPIRE', KEYS[4], math.floor(ttl * 1000 + 0.5))
return {doc, redis.call('GET', KEYS[2])}
"""

# ARGV: maxlen, lease key prefix, [id]. Expires one id (a keyspace notification) or all.
SWEEP = (
    _EMIT
    + _SWEEP_BODY
    + """
local ids
if ARGV[3] then ids = {ARGV[3]} else ids = redis.call('HKEYS', KEYS[1]) end
return sweep(ARGV[2], ids)
"""
)

# ARGV: maxlen, lease key prefix. Sweeps, then returns {revision, doc1, pttl1, doc2, pttl2...}:
# one atomic read, so the revision is exactly the state's.
SNAPSHOT = (
    _EMIT
    + _SWEEP_BODY
    + """
sweep(ARGV[2], redis.call('HKEYS', KEYS[1]))
local out = {current()}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  out[#out + 1] = all[i + 1]
  out[#out + 1] = redis.call('PTTL', ARGV[2] .. all[i])
end
return out
"""
)

# ARGV: start revision. The counter starts at the wall clock in ms (like the memory store), so
# revisions grow even across a Redis that lost its data; an existing counter is kept.
INIT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return tonumber(redis.call('GET', KEYS[1]))
"""
