"""The payment desk's records in Redis: invoices, who paid each, and the state of each charge.

Every key sits under the user's hash tag, next to their node (one Redis Cluster slot), so the
pre-checkout read and the charge claim are single scripts that see the invoice, its payer and
the user's stored node at once: no other replica can slip between the check and the claim.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from ..codec import VISIT_FIELD
from .invoices import InvoiceRecord, read_record

#: How long invoice and charge records are kept (an invoice can't be paid after it goes stale).
RECORD_TTL = 30 * 86_400

# KEYS: the invoice record, who paid it, the user's stored node. Read-only: what pre-checkout
# decides from.
_READ = """
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
"""

# KEYS: invoice record, who paid it, the charge. ARGV: charge id, claim ms, keep ms.
# Returns {verdict, record}: done:<state> (handled before), busy (claimed, being handled),
# unknown (no such invoice), first (this charge pays it), second (paid by another charge).
_CLAIM = """
local state = redis.call('GET', KEYS[3])
if state == 'claimed' then return {'busy', ''} end
if state then return {'done:' .. state, ''} end
local record = redis.call('GET', KEYS[1])
if not record then return {'unknown', ''} end
redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3])
redis.call('SET', KEYS[3], 'claimed', 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[1] then return {'first', record} end
return {'second', record}
"""

Runner = Callable[[Any, list[str], list[str]], Awaitable[Any]]

_UNBOUND = "PaymentDesk.bind(nodes, ...) was not called"


class PaymentLedger:
    """The keys and scripts of the desk's records; usable once `bind` gave it Redis."""

    def __init__(self, key_prefix: str) -> None:
        self._prefix = key_prefix
        self._run: Runner | None = None
        self._redis: Any = None
        self._read: Any = None
        self._claim: Any = None

    def bind(self, run: Runner, redis: Any) -> None:
        """`run` is botnodes' script runner (`Nodes.run_script`: pipelined, Cluster-aware)."""
        self._run = run
        self._redis = redis
        self._read = redis.register_script(_READ)
        self._claim = redis.register_script(_CLAIM)

    # Keys: under the user's hash tag, next to their state (one Redis Cluster slot).
    def _state_key(self, user_id: int) -> str:
        return f"{self._prefix}:{{{user_id}}}"

    def _invoice_key(self, user_id: int, nonce: str) -> str:
        return f"{self._state_key(user_id)}:invoice:{nonce}"

    def _charge_key(self, user_id: int, charge_id: str) -> str:
        return f"{self._state_key(user_id)}:charge:{charge_id}"

    async def _script(self, script: Any, keys: list[str], args: list[str]) -> Any:
        if self._run is None:
            raise RuntimeError(_UNBOUND)
        return await self._run(script, keys, args)

    def _client(self) -> Any:
        if self._redis is None:
            raise RuntimeError(_UNBOUND)
        return self._redis

    async def store(self, user_id: int, nonce: str, record: InvoiceRecord) -> None:
        """Keep an invoice's record before the invoice goes out (`RECORD_TTL`)."""
        await self._client().set(
            self._invoice_key(user_id, nonce), record.model_dump_json(), px=RECORD_TTL * 1000
        )

    async def read(self, user_id: int, nonce: str) -> tuple[InvoiceRecord | None, bool, int | None]:
        """What pre-checkout decides from: the record, whether it is paid, the user's visit."""
        invoice_key = self._invoice_key(user_id, nonce)
        raw_record, paid_by, raw_state = await self._script(
            self._read, [invoice_key, invoice_key + ":paid", self._state_key(user_id)], []
        )
        return read_record(raw_record), bool(paid_by), stored_visit(raw_state)

    async def claim(
        self, user_id: int, nonce: str, charge: str, claim_ttl: float
    ) -> tuple[str, InvoiceRecord | None]:
        """Claim a charge for `claim_ttl` seconds: the verdict of `_CLAIM`, and the record."""
        invoice_key = self._invoice_key(user_id, nonce)
        keys = [invoice_key, invoice_key + ":paid", self._charge_key(user_id, charge)]
        args = [charge, str(int(claim_ttl * 1000)), str(RECORD_TTL * 1000)]
        verdict, raw = await self._script(self._claim, keys, args)
        return _text(verdict), read_record(raw)

    async def done(self, user_id: int, charge: str, state: str) -> None:
        """A charge's final state (ordered, refunded, ...): a re-delivery finds it and stops."""
        await self._client().set(self._charge_key(user_id, charge), state, px=RECORD_TTL * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def stored_visit(raw_state: Any) -> int | None:
    """The visit number in a stored node (None: no node, or unreadable)."""
    if not raw_state:
        return None
    try:
        value = json.loads(raw_state)
    except ValueError:
        return None
    visit = value.get(VISIT_FIELD, 0) if isinstance(value, dict) else None
    return visit if isinstance(visit, int) else None
