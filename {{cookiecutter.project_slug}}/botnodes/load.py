"""The load step: what the lease read, turned back into the user's node.

A stored value can be missing, repaired by the lock script, from botnodes 0.1.0, or
unreadable after a deploy; routing must go on in every case (unreadable means start over), so
this step never raises and instead says once, in the log, what it found.
"""

from __future__ import annotations

import logging

from .codec import Decoded, NodeCodec
from .errors import CorruptStateError
from .lease import Lease
from .node import CtxT, EventT, UserIdT
from .observer import Notify

logger = logging.getLogger("botnodes")


def load(
    lease: Lease,
    codec: NodeCodec[CtxT, EventT, UserIdT],
    notify: Notify,
    *,
    quiet: bool = False,
) -> Decoded[CtxT, EventT, UserIdT] | None:
    """Decode the user's node; None means start over (a new user, or unreadable state).

    Whatever was stored, this logs one warning naming what was wrong and never raises.
    `quiet` leaves the warnings to the user's next event (a timer or `to()` just looks).
    """
    locked = lease.locked
    problems = [locked.repairs] if locked.repairs else []
    decoded = None
    if locked.value is not None:
        if locked.from_legacy:
            logger.info("moving user %s out of the botnodes 0.1.0 hash", lease.user_id)
        try:
            decoded = codec.decode(locked.value)
        except CorruptStateError as error:
            problems.append(error.reason)
    if not problems or quiet:
        pass
    elif decoded is None and (locked.value is not None or "state key" in locked.repairs):
        reason = "; ".join(problems)
        notify(lambda: notify.observer.reset(reason))
        logger.warning(
            "resetting user %s to the start node: %s",
            lease.user_id,
            reason,
            extra={"user_id": lease.user_id, "reason": reason},
        )
    else:
        reason = "; ".join(problems)
        logger.warning(
            "repaired the keys of user %s: %s",
            lease.user_id,
            reason,
            extra={"user_id": lease.user_id, "reason": reason},
        )
    if decoded is not None and decoded.upgraded and not quiet:
        logger.warning(
            "upgraded stored state of user %s: %s",
            lease.user_id,
            decoded.upgraded,
            extra={"user_id": lease.user_id},
        )
    return decoded
