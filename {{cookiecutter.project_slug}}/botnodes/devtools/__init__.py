"""Tools for a bot's developers: the terminal chat, the `new-node` scaffold, the flow diagram."""
