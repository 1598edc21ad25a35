"""Updates handled outside the nodes, remembered so a re-delivery is not handled twice.

An update that reaches a node is recorded as handled by the commit that stores its step, in
the user's set of handled events (storage.py), at no cost of its own. A command or a button
handled outside the nodes (choosing a language, a hint for a sticker) stores no step, so it
marks its update in the same set first: one script call, only for such updates, and a
re-delivery (Telegram sends an update again when it saw no answer), on this replica or
another, finds the mark and is skipped.

Marked before it is handled: a process that dies in between leaves that update unanswered
(the user asks again), never answered twice; for a menu or a hint that is the better loss.
"""

from __future__ import annotations

# KEYS: the user's handled events. ARGV: event id, how long handled events are remembered in
# ms, the caller's clock in ms (orders them). Returns 1 marked now, 0 marked before. The set is
# kept as the commit keeps it: the newest 128 ids, expiring a window after the last mark.
MARK_HANDLED = """
local seen = redis.pcall('ZSCORE', KEYS[1], ARGV[1])
if type(seen) == 'table' then
  redis.call('DEL', KEYS[1])
elseif seen then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
if redis.call('ZCARD', KEYS[1]) > 128 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -129)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
