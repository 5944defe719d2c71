#!/bin/sh
# Initialise the repo on first start (config.json: API and swarm on every
# interface, no bootstrap peers, no discovery), then run the daemon.
set -eu
if [ ! -f "$IPFS_PATH/config" ]; then
    jsipfs init --emptyRepo /opt/jsipfs/config.json
fi
exec jsipfs daemon --enable-preload=false
