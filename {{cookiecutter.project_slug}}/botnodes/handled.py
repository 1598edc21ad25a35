"""The record of a user's handled updates, so a re-delivery is not handled twice.

Telegram sends an update again when it saw no answer. Every user has one record of the ids of
their newest handled updates, `<prefix>:{<user_id>}:seen`: a string of ids between newlines
(`\\nm7\\nm8\\n`), so that the lock script reads it in the same `MGET` as the state and a lookup
is one plain `string.find`; the commit rewrites it with one `SET` that also gives it its
expiry. (A sorted set cost a `ZSCORE` per update and a `ZADD`, `ZCARD` and `PEXPIRE` per
commit: four commands where this costs two.) The record keeps the newest `HANDLED_KEPT` ids
and expires a window after the last one was added, so a user who has been quiet that long
costs nothing for it.

An update that reaches a node is recorded by the commit that stores its step (storage.py), at
no cost of its own. A command or a button handled outside the nodes (choosing a language, a
hint for a sticker) stores no step, so it marks its update first: one script call, only for
such updates, and a re-delivery, on this replica or another, finds the mark and is skipped.
Marked before it is handled: a process that dies in between leaves that update unanswered
(the user asks again), never answered twice; for a menu or a hint that is the better loss.

Earlier versions kept the record as a sorted set at the same key. Where no string is found,
the scripts still look an id up in such a set (one `ZSCORE`, only for a user without a
current record: a new or long-quiet one), so a re-delivery of an update handled before an
upgrade is still found. The first write replaces the set: what it held is then forgotten,
which matters only for a re-delivery that comes after a newer update of the same user.
"""

from __future__ import annotations

#: How many of a user's newest handled update ids are remembered.
HANDLED_KEPT = 128

#: Lua shared by the scripts that read or write the record (storage_scripts.py, below).
#: `handled_before(record, key, id)`: whether `id` was handled; `record` is what a GET or
#: MGET of `key` gave (false when missing or of another type). Returns true/false, and a
#: repair ('' if none) when the key held something that is neither a record nor the sorted
#: set of the version before (it is deleted, and replaced by the next write).
#: `remembered(record, id)`: the record with `id` added, its oldest ids dropped past the limit.
HANDLED_FUNCTIONS = f"""
local function handled_before(record, key, id)
  if record then
    return string.find(record, '\\n' .. id .. '\\n', 1, true) ~= nil, ''
  end
  local score = redis.pcall('ZSCORE', key, id)
  if type(score) == 'table' then
    local kind = redis.call('TYPE', key).ok
    redis.call('DEL', key)
    return false, 'the handled-events key was a Redis ' .. kind
  end
  return score ~= false, ''
end
local function remembered(record, id)
  local ids = {{}}
  if record then
    for each in string.gmatch(record, '[^\\n]+') do
      ids[#ids + 1] = each
    end
  end
  ids[#ids + 1] = id
  return '\\n' .. table.concat(ids, '\\n', math.max(1, #ids - {HANDLED_KEPT - 1})) .. '\\n'
end
"""

# KEYS: the user's handled record. ARGV: event id, how long the record is remembered in ms.
# Returns 1 marked now, 0 marked before. GET of a key of another type is an error value
# (`pcall`): then only a sorted set of the version before may hold the id.
MARK_HANDLED = (
    HANDLED_FUNCTIONS
    + """
local record = redis.pcall('GET', KEYS[1])
if type(record) == 'table' then
  record = false
end
if handled_before(record, KEYS[1], ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], remembered(record, ARGV[1]), 'PX', ARGV[2])
return 1
"""
)


def as_handled_id(event_id: str) -> str:
    """`event_id` as the record keeps it: a newline separates ids there, so none is in one."""
    return event_id.replace("\n", " ")
