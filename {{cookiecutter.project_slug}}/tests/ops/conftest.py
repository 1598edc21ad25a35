"""The process fixtures every ops test file may ask for: polling bots and webhook replicas."""

from .polling import start_bot
from .replicas import start_replica

__all__ = ["start_bot", "start_replica"]
