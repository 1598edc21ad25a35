"""The Lua scripts of storage.py: taking a user's lock with their state, and the fenced commit.

They are kept apart from the Python that calls them so each reads on its own; what every
script takes and returns is said above it. storage.py registers them and names their answers.
"""

from __future__ import annotations

from .budget import GCRA_FUNCTION
from .handled import HANDLED_FUNCTIONS
from .line import LINE_FUNCTIONS

# A user's note: a small key of their slot that a rider (storage.LockRider; the runtime's
# language) has the lock script read, so it costs no script of its own. A value set by the
# user (a choice) is kept as it is and wins; else the value last reported for them is kept as
# `~<value>`, written only when it changes (a user's first update, a new phone language).
# `noted(key, stored, reported)`: the note's value; `stored` is what a GET or MGET of `key`
# gave (false when missing or of another type: then it is overwritten), `reported` '' = none.
NOTE_FUNCTION = """
local function noted(key, stored, reported)
  if stored and string.sub(stored, 1, 1) ~= '~' then return stored end
  if reported == '' then
    if stored then return string.sub(stored, 2) end
    return ''
  end
  if stored ~= '~' .. reported then redis.call('SET', key, '~' .. reported) end
  return reported
end
"""

# A lock value is a holder's token, `<hex>:<counter>`; a trailing `~` marks a holder whose step
# is stored and whose replies are going out (see lease.py): waiters wait for it without
# counting that time against their own deadline, since the holder is alive and finishing.

# Take the lock if it is free (or dead) and return the state in the same trip; otherwise
# return how long the lock has left, so the caller sleeps no longer than needed. The common
# path is SET NX + one MGET of the state, the user's record of handled events (handled.py) and
# their note (a rider's key, see NOTE_FUNCTION: the runtime's language); MGET answers nil for
# a key of another type, so only when it finds no state does a TYPE tell a missing key from
# one to report (when it finds neither state nor record, one EXISTS first: a new user's keys,
# and the 0.1.0 hash, are all missing, and nothing is looked up). An event whose id is in the
# record (a re-delivered update) is a duplicate: the lock is handed straight back.
# A lock found held, or a taken one for which an earlier event waits in the user's line, puts
# the event in the line (line.py), so the lock goes to events in the user's order.
# KEYS: state, lock, handled events, the user's note (the state key again when none is read),
# the user's line, [0.1.0 hash]. ARGV: token, lock TTL in ms, user id (the 0.1.0 hash field),
# event id ('' = none), the note's reported value ('' = none), '1' to read the note ('' = not),
# the event's place in the user's order ('' = none: it does not queue in the line), the
# orders of the events queued behind it in this process (comma-separated, '' = none).
# Returns {status, value or ms left, source, repairs, now, replying, note}: status 1 = taken,
# 0 = held by another, 2 = a duplicate event; source 1 = the state key, 2 = the 0.1.0 hash,
# 0 = nothing readable; repairs is '' or what had to be fixed, for the log; now is the Redis
# server's clock in microseconds when there was no readable value (a fresh start's first
# visit), else 0; replying is 1 when the other holder is sending the replies of a stored step;
# note is the note's value (NOTE_FUNCTION) when it was asked for and the lock taken (or the
# event a duplicate), else absent.
# Holding the lock already counts as taking it, so a call retried after a lost reply succeeds.
LOCK_AND_READ = (
    HANDLED_FUNCTIONS
    + NOTE_FUNCTION
    + LINE_FUNCTIONS
    + """
local repairs = {}
local order = tonumber(ARGV[7])
local mine = order and string.format('=%d', order)
local waiting = orders_in(ARGV[8])  -- this event and the followers queued behind it
if order then table.insert(waiting, 1, order) end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local holder = redis.pcall('GET', KEYS[2])
  if type(holder) == 'table' then
    table.insert(repairs, 'the lock key was a Redis ' .. redis.call('TYPE', KEYS[2]).ok)
  elseif holder ~= ARGV[1] and holder ~= ARGV[1] .. '~' and holder ~= mine then
    local left = redis.call('PTTL', KEYS[2])
    if not string.match(holder, '^%x+:%d+~?$') and not string.match(holder, '^=%d+$') then
      table.insert(repairs, 'the lock held a value that is not a botnodes token')
    elseif left < 0 then
      table.insert(repairs, 'the lock had no expiry')
    elseif left > math.max(tonumber(ARGV[2]), LINE_TTL_MS) then
      table.insert(repairs, 'the lock expired later than any holder sets it')
    else
      local replying = 0
      if string.sub(holder, -1) == '~' or string.sub(holder, 1, 1) == '=' then
        replying = 1
      end
      if order then
        line_join(KEYS[5], redis.pcall('GET', KEYS[5]), waiting, now_ms())
      end
      return {0, left, 0, '', 0, replying}
    end
  end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
local found = redis.call('MGET', KEYS[1], KEYS[3], KEYS[4], KEYS[5])
local value, record, line = found[1], found[2], found[4]
-- Taken: but an event that came earlier may wait in the line; then it goes first.
if line and order then
  local now = now_ms()
  local head = line_head(line, now)
  if head and head < order then
    redis.call('SET', KEYS[2], string.format('=%d', head), 'PX', LINE_TTL_MS)
    line_join(KEYS[5], line, waiting, now)
    return {0, LINE_TTL_MS, 0, table.concat(repairs, '; '), 0, 1}
  end
  line = line_leave(KEYS[5], line, order)
end
local note = false
if ARGV[6] == '1' then
  note = noted(KEYS[4], found[3], ARGV[5])
end
-- Neither the state nor the record read: a new user, most likely. One EXISTS of every key
-- that could still hold something (a key of another type, the sorted set of the version
-- before, the 0.1.0 hash) says so, instead of a look-up in each; if any exists, each is
-- looked up as below.
local nothing = false
if not value and not record then
  if KEYS[6] then
    nothing = redis.call('EXISTS', KEYS[1], KEYS[3], KEYS[6]) == 0
  else
    nothing = redis.call('EXISTS', KEYS[1], KEYS[3]) == 0
  end
end
if ARGV[4] ~= '' and not nothing then
  local before, repair = handled_before(record, KEYS[3], ARGV[4])
  if repair ~= '' then
    table.insert(repairs, repair)
  end
  if before then
    hand_on(KEYS[2], KEYS[5], line, orders_in(ARGV[8]))
    return {2, false, 0, table.concat(repairs, '; '), 0, 0, note}
  end
end
if value then
  return {1, value, 1, table.concat(repairs, '; '), 0, 0, note}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if nothing then
  return {1, false, 0, table.concat(repairs, '; '), now, 0, note}
end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' then
  table.insert(repairs, 'the state key was a Redis ' .. kind)
  return {1, false, 0, table.concat(repairs, '; '), now, 0, note}
end
if KEYS[6] then
  local legacy = redis.pcall('HGET', KEYS[6], ARGV[3])
  if type(legacy) == 'string' then
    return {1, legacy, 2, table.concat(repairs, '; '), now, 0, note}
  end
end
return {1, false, 0, table.concat(repairs, '; '), now, 0, note}
"""
)

# Store the new value only if the stored one is still what the caller read (compared by
# SHA-1, '' = nothing readable was read), record the event as handled, then release the lock
# if it is still ours, or keep it in the reply phase (`~`) while the step's replies go out.
# Fencing by what was read, not by who holds the lock, means a handler that outlived its lock
# still commits when nobody wrote since, and can never overwrite a newer state.
# KEYS: state, lock, handled events, reply budget, the user's timer schedule shard (each the state
# key again when there is none), the user's line (line.py), [0.1.0 hash]. ARGV: token, value ('' =
# a release that keeps the stored value), state TTL in ms ('0' = none), user id, SHA-1 of what was
# read, event id ('' = none), how long handled events are remembered in ms, how long to keep the
# lock for the replies in ms ('0' = release), the Redis server's clock in ms as the caller tracks
# it ('' = read it with TIME; budget.ServerClock), then the reply budget's interval ms, burst and
# count ('' = nothing to reserve; see budget.py), then the user's member in the timer schedule (''
# = leave it) and their earliest due ms ('' = none: removed), then the orders of the events
# queued behind the holder in its process ('' = none; line.py's `hand_on`). The schedule shard is
# in another Redis Cluster slot, so only a single Redis gets it here (timers.py sends it beside
# the commit on a cluster).
# Returns {status, [clock, wait ms of each reserved reply...]}, the part in brackets when turns
# were reserved (clock: the server's clock in ms if the script read it with TIME, else 0):
# status 1 stored (lock released or kept), 2 stored but the lock had been lost meanwhile, 0
# refused: someone else wrote since (the lock is released if ours; nothing reserved). A retry
# after a lost reply finds its own value stored and reports success (and reserves again: its
# first answer was lost).
# Everything the script decides on is read by one MGET: the lock, the state, the handled
# record, the reply budget and the line (a released lock is left reserved for the line's
# earliest waiter, line.py). MGET answers nil for a key of another type: for each of them
# that reads as "nothing there", and the SET that writes it replaces the foreign value.
# The handled record (handled.py) is rewritten whole with its expiry: a window after the
# user's last stored step, so a user who has been quiet that long costs nothing for it.
WRITE_AND_UNLOCK = (
    GCRA_FUNCTION
    + HANDLED_FUNCTIONS
    + LINE_FUNCTIONS
    + """
local found = redis.call('MGET', KEYS[2], KEYS[1], KEYS[3], KEYS[4], KEYS[6])
local holder, current, record, budget, line = found[1], found[2], found[3], found[4], found[5]
local ours = holder == ARGV[1] or holder == ARGV[1] .. '~'
local function stored(status)
  if ARGV[10] == nil or ARGV[10] == '' then
    return {status}
  end
  local waits = gcra_after_read(
    KEYS[4], budget, tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]),
    tonumber(ARGV[9]))
  table.insert(waits, 1, server_now)
  table.insert(waits, 1, status)
  return waits
end
if ARGV[2] ~= '' then
  if current ~= ARGV[2] then
    local digest = ''
    if current then
      digest = redis.sha1hex(current)
    end
    if digest ~= ARGV[5] then
      if ours then
        hand_on(KEYS[2], KEYS[6], line, orders_in(ARGV[15]))
      end
      return {0}
    end
    if ARGV[3] ~= '0' then
      redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    else
      redis.call('SET', KEYS[1], ARGV[2])
    end
    if KEYS[7] then
      redis.pcall('HDEL', KEYS[7], ARGV[4])
    end
  elseif ARGV[3] ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  if ARGV[6] ~= '' then
    redis.call('SET', KEYS[3], remembered(record, ARGV[6]), 'PX', ARGV[7])
  end
  if ARGV[13] and ARGV[13] ~= '' then
    if ARGV[14] == '' then
      redis.call('ZREM', KEYS[5], ARGV[13])
    else
      redis.call('ZADD', KEYS[5], ARGV[14], ARGV[13])
    end
  end
  if ARGV[8] ~= '0' then
    if ours then
      redis.call('SET', KEYS[2], ARGV[1] .. '~', 'PX', ARGV[8])
      return stored(1)
    end
    redis.call('SET', KEYS[2], ARGV[1] .. '~', 'NX', 'PX', ARGV[8])
  end
elseif current and ARGV[3] ~= '0' and ours then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if ours then
  if ARGV[8] == '0' then
    hand_on(KEYS[2], KEYS[6], line, orders_in(ARGV[15]))
  end
  if ARGV[2] == '' then
    return {1}
  end
  return stored(1)
end
if ARGV[2] == '' then
  return {1}
end
return stored(2)
"""
)

# Push the lock's expiry back while a handler (or its replies) still runs, if the lock is
# still ours. ARGV: token, lock TTL in ms. Returns 1 if extended, 0 if the lock was lost.
EXTEND_LOCK = """
local holder = redis.pcall('GET', KEYS[1])
if holder == ARGV[1] or holder == ARGV[1] .. '~' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
