"""The line of a user's events that wait for their lock in other processes: arrival order.

In one process a user's events queue on a local FIFO lock (keyed_lock.py), so they run in the
order they came. Across processes (webhook replicas behind a load balancer) each process's
first waiting event polls the Redis lock, and a plain lock goes to whichever poll comes first:
a replica could run its own later update before the other's earlier one. So an event that
finds the lock held joins the user's line, `<prefix>:{<user_id>}:line`, under its place in
the user's order (the runtime gives Telegram's `update_id`), and the lock goes to the line's
earliest event:

- whoever releases the lock (the commit, or the release after the replies) leaves it
  *reserved* for the earliest live waiter, as `=<order>`, instead of deleting it;
- whoever takes a lock that is free, or takes it back from this process's previous holder,
  first looks at the line (in the MGET the lock script runs anyway) and, if an earlier event
  waits there, reserves the lock for it and joins the line itself.

The line is a string (`<order>:<expires ms>,` per waiter) so both scripts read it in the MGET
they already run: without contention it costs no command. A waiter renews its entry every poll
(at most `_MAX_LOCK_POLL` apart, lease.py), so an entry expires `LINE_TTL_MS` after its
process died or gave up, and a reservation for an event that never comes lapses as fast:
a dead waiter holds the others up for at most that long. Events without a place in the order
(a timer, `NodesUser.to` outside an update) do not queue in the line; they take a free lock.

Events queued in a process behind its own first one (its followers) are in the line too: the
first one's polls carry their orders, and so does a release by a holder they wait behind, so
an event that waits anywhere is seen by whoever hands the lock on.
"""

from __future__ import annotations

#: How long a waiter's entry, and a lock reserved for it, outlive its last poll (ms).
LINE_TTL_MS = 2000

#: Lua shared by the lock and commit scripts (storage_scripts.py). A `line` is what a GET or
#: MGET of the line key gave (false when missing or of another type); `orders` a Lua list.
#: `orders_in(csv)`: the orders of a comma-separated ARGV ('' = none) as a list.
#: `line_head(line, now)`: the earliest order of a live waiter in `line`, or nil.
#: `line_join(key, line, orders, now)`: `line` with each of `orders` renewed (added if new),
#: dead entries dropped, written back with its expiry.
#: `line_leave(key, line, order)`: `line` without `order`'s entry, written back and returned
#: (deleted when empty: then false).
#: `hand_on(lock, line_key, line, followers)`: the lock released by its holder, whose process
#: has `followers` (orders) queued for the same user. Without a line (nobody waits elsewhere)
#: it is deleted: the followers' own queue keeps their order. With one, the followers join it
#: and the lock is reserved for the earliest of all, so a follower never overtakes an earlier
#: event waiting in another process, nor the other way round.
#: `now_ms()`: the Redis server's clock in ms (one TIME, only where a line exists).
LINE_FUNCTIONS = f"""
local LINE_TTL_MS = {LINE_TTL_MS}
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local function orders_in(csv)
  local orders = {{}}
  for each in string.gmatch(csv or '', '%d+') do orders[#orders + 1] = tonumber(each) end
  return orders
end
local function line_head(line, now)
  if type(line) ~= 'string' then return nil end
  local head = nil
  for order, expires in string.gmatch(line, '(%d+):(%d+),') do
    order = tonumber(order)
    if tonumber(expires) > now and (head == nil or order < head) then head = order end
  end
  return head
end
local function line_join(key, line, orders, now)
  local fresh = {{}}
  for _, order in ipairs(orders) do fresh[order] = true end
  local entries = {{}}
  if type(line) == 'string' then
    for each, expires in string.gmatch(line, '(%d+):(%d+),') do
      if tonumber(expires) > now and not fresh[tonumber(each)] then
        entries[#entries + 1] = each .. ':' .. expires .. ','
      end
    end
  end
  for _, order in ipairs(orders) do
    entries[#entries + 1] = string.format('%d:%d,', order, now + LINE_TTL_MS)
  end
  redis.call('SET', key, table.concat(entries), 'PX', LINE_TTL_MS)
end
local function line_leave(key, line, order)
  if type(line) ~= 'string' then return false end
  local entries = {{}}
  for each, expires in string.gmatch(line, '(%d+):(%d+),') do
    if tonumber(each) ~= order then entries[#entries + 1] = each .. ':' .. expires .. ',' end
  end
  if #entries == 0 then
    redis.call('DEL', key)
    return false
  end
  line = table.concat(entries)
  redis.call('SET', key, line, 'KEEPTTL')
  return line
end
local function hand_on(lock, line_key, line, followers)
  if type(line) ~= 'string' then
    redis.call('DEL', lock)
    return
  end
  local now = now_ms()
  local head = line_head(line, now)
  for _, order in ipairs(followers) do
    if head == nil or order < head then head = order end
  end
  if #followers > 0 then line_join(line_key, line, followers, now) end
  if head == nil then
    redis.call('DEL', lock, line_key)
  else
    redis.call('SET', lock, string.format('=%d', head), 'PX', LINE_TTL_MS)
  end
end
"""


def as_order(order: int | None) -> str:
    """`order` as the scripts take it: '' for none (the event does not queue in the line)."""
    if order is None or order < 0:
        return ""
    return str(order)


def as_orders(orders: list[int]) -> str:
    """Followers' orders as the scripts take them: comma-separated, '' for none."""
    return ",".join(str(order) for order in orders if order >= 0)
