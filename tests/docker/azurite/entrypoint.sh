#!/bin/sh
# Azurite's blob service in the foreground on 127.0.0.1:AZURITE_PORT (default 10000); the
# container runs with host networking. Uses the copied npm install when there is one, else the
# image's own azurite-blob.
set -eu
bin=/opt/kafkapipe-azurite/node_modules/.bin/azurite-blob
[ -x "$bin" ] || bin=azurite-blob
mkdir -p /tmp/azurite
exec "$bin" --blobHost 127.0.0.1 --blobPort "${AZURITE_PORT:-10000}" --location /tmp/azurite \
    --disableTelemetry
