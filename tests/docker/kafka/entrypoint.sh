#!/bin/sh
# Starts a single-node KRaft broker (broker+controller in one JVM) in the foreground, with the
# settings of /opt/kafkapipe-kafka/server.properties (the template bin/kafka-local uses too).
# Environment: KAFKA_PORT (PLAINTEXT, default 9092), KAFKA_SASL_PORT (SASL_PLAINTEXT with
# OAUTHBEARER, default 9093), KAFKA_CONTROLLER_PORT (default 29093), KAFKA_HEAP_OPTS. The
# container runs with host networking: the listeners are on the host's 127.0.0.1.
set -eu
HERE=/opt/kafkapipe-kafka
DIR=/tmp/kafkapipe-kafka
CP='/opt/kafka/libs/*'
LOG4J="-Dlog4j2.configurationFile=$HERE/log4j2.xml"
mkdir -p "$DIR"
sed -e "s|@PORT@|${KAFKA_PORT:-9092}|g" -e "s|@SASL_PORT@|${KAFKA_SASL_PORT:-9093}|g" \
    -e "s|@CONTROLLER_PORT@|${KAFKA_CONTROLLER_PORT:-29093}|g" -e "s|@DATA_DIR@|$DIR/data|g" \
    "$HERE/server.properties" > "$DIR/server.properties"
if [ ! -f "$DIR/data/meta.properties" ]; then
    # 16 random bytes, URL-safe base64 without padding (what `kafka-storage random-uuid` prints)
    # An id starting with "-" would be taken for an option (Kafka's own ids never start so).
    cluster_id=-
    while [ "${cluster_id#-}" != "$cluster_id" ]; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    java -Xmx256m "$LOG4J" -cp "$CP" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$DIR/server.properties" >/dev/null
fi
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "$LOG4J" \
    -cp "$CP" kafka.Kafka "$DIR/server.properties"
