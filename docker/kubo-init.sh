#!/bin/sh
# Run by the Kubo image (from /container-init.d) before its daemon starts:
# keep the daemon to the compose network, with no public bootstrap peers and
# no DHT. p2pmr's peers connect it to the master themselves.
set -eu
ipfs bootstrap rm --all >/dev/null
ipfs config Routing.Type none
