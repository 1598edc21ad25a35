"""`python -m <package>`: the bot's command line (run, chat, new-node, diagram, broadcast...)."""

import sys

from botnodes.telegram.cli import main

from .main import BOT

if __name__ == "__main__":
    sys.exit(main(BOT))
