#!/bin/sh
# Like the official redis image's docker-entrypoint.sh: started as root, hand /data (the volume)
# to the redis user and run redis-server as that user. The official image's Redis is built with
# protected mode off (the container network is its boundary); Debian's is not, so say it here.
set -e
if [ "$1" = "redis-server" ]; then
    set -- "$@" --protected-mode no
fi
if [ "$1" = "redis-server" ] && [ "$(id -u)" = "0" ]; then
    chown -R redis:redis .
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
