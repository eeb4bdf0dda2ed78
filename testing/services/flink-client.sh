#!/usr/bin/env bash
# Apache Flink 1.20's own command-line client (`flink list|savepoint|stop|cancel|run`,
# `org.apache.flink.client.cli.CliFrontend` in flink-dist), for the tests that drive
# `operator serve` as a Flink cluster's users do. Not a server: it only installs.
#
# The jars come from PyPI's `apache-flink-libraries` (the source distribution PyFlink
# ships Flink's jars in, ~230 MB): flink-dist and the log4j jars are kept, the rest and
# the download are deleted. Written around them: a client `conf/config.yaml`, a
# `conf/log4j-cli.properties` that logs to a file, and the wrapper `bin/flink`, which runs
# the CLI as Flink's own `bin/flink` does (classpath, FLINK_CONF_DIR, the JVM flags
# Java 17 needs) and passes every argument on. Tests call it as `$FLINK_CLIENT <args>`:
#
#   $FLINK_CLIENT list -m 127.0.0.1:8081
#
#   flink-client.sh [install]   idempotent: once installed, only the small files are rewritten
#   flink-client.sh path        prints the wrapper's path (FLINK_CLIENT)
#
# Everything under $OPERATORS_SERVICES_DIR/flink-client (default target/services/flink-client);
# the client's log: flink-client/log/flink-client.log.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VERSION=1.20.0
PACKAGE=apache-flink-libraries
# sha256 of apache-flink-libraries-1.20.0.tar.gz as PyPI serves it.
SHA256=808b381151c51d988c8fe5b5ae59d944d6e61d8193ee6832064f7ca14c88a583
# What the CLI needs of deps/lib: flink-dist (the client, runtime, shaded netty and
# jackson, slf4j-api) and a log4j2 backend for its logging.
JARS=(flink-dist-$VERSION.jar log4j-api-2.17.1.jar log4j-core-2.17.1.jar log4j-slf4j-impl-2.17.1.jar
    log4j-1.2-api-2.17.1.jar)

FLINK_DIR="$SERVICES_DIR/flink-client"
LIB="$FLINK_DIR/lib"
CONF="$FLINK_DIR/conf"
WRAPPER="$FLINK_DIR/bin/flink"

# Flink's own `env.java.opts.all` for Java 17 (flink-dist's default config.yaml), which its
# bin/flink passes to the client JVM.
JAVA_OPTS_ALL="--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED \
--add-exports=jdk.compiler/com.sun.tools.javac.api=ALL-UNNAMED --add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED \
--add-exports=jdk.compiler/com.sun.tools.javac.parser=ALL-UNNAMED --add-exports=jdk.compiler/com.sun.tools.javac.tree=ALL-UNNAMED \
--add-exports=jdk.compiler/com.sun.tools.javac.util=ALL-UNNAMED --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED \
--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED \
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.text=ALL-UNNAMED \
--add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"

installed() { [ -f "$LIB/.complete" ] && [ "$(cat "$LIB/.complete")" = "$PACKAGE==$VERSION" ]; }

fetch() {
    if installed; then return; fi
    local pip=(python3 -m pip)
    command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1 || need_pkg python3-pip
    log "downloading $PACKAGE==$VERSION from PyPI (~230 MB) for Flink's command-line client"
    local download="$FLINK_DIR/download"
    rm -rf "$download" "$LIB"
    mkdir -p "$download"
    # The source distribution, without building it (only its metadata is prepared).
    if ! "${pip[@]}" download --no-deps --no-binary :all: "$PACKAGE==$VERSION" -d "$download" \
        >"$FLINK_DIR/pip.log" 2>&1; then
        tail -30 "$FLINK_DIR/pip.log" >&2
        die "pip download $PACKAGE==$VERSION failed (log: $FLINK_DIR/pip.log)"
    fi
    local tarball="$download/$PACKAGE-$VERSION.tar.gz"
    [ -f "$tarball" ] || die "pip download left no $tarball (log: $FLINK_DIR/pip.log)"
    local sum
    sum=$(sha256sum "$tarball" | cut -d' ' -f1)
    [ "$sum" = "$SHA256" ] || die "$tarball: sha256 $sum, expected $SHA256"
    local members=()
    for j in "${JARS[@]}"; do members+=("$PACKAGE-$VERSION/deps/lib/$j"); done
    tar -xzf "$tarball" -C "$download" "${members[@]}" || die "extracting the client's jars from $tarball failed"
    mkdir -p "$LIB"
    mv "$download/$PACKAGE-$VERSION/deps/lib/"*.jar "$LIB/"
    rm -rf "$download"
    echo "$PACKAGE==$VERSION" >"$LIB/.complete"
}

# write_if_changed <file> <content>: leaves an unchanged file (and its mtime) alone.
write_if_changed() {
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then printf '%s\n' "$2" >"$1"; fi
}

configure() {
    mkdir -p "$CONF" "$FLINK_DIR/bin" "$FLINK_DIR/log" "$FLINK_DIR/plugins"
    # A client's configuration: where the cluster is when no `-m` says it, and how long
    # to wait for its answers. The JVM flags are in the wrapper (the CLI does not read
    # env.java.opts itself; Flink's bin/flink passes them).
    write_if_changed "$CONF/config.yaml" "# Written by testing/services/flink-client.sh: Flink's command-line client only.
rest:
  address: 127.0.0.1
  port: 8081
  # A cluster that does not answer fails a command within seconds (Flink's default
  # retries a refused connection for a minute).
  retry:
    max-attempts: 5
    delay: 1000
client:
  timeout: 60 s
parallelism:
  default: 1"
    # Flink's own log4j-cli.properties, to the file the wrapper names (log.file).
    write_if_changed "$CONF/log4j-cli.properties" "# Written by testing/services/flink-client.sh.
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FileAppender
appender.file.name = FileAppender
appender.file.type = FILE
appender.file.append = true
appender.file.fileName = \${sys:log.file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
logger.netty.name = org.apache.flink.shaded.netty4.io.netty
logger.netty.level = WARN"
    local java
    java=$(java_bin)
    write_if_changed "$WRAPPER" "#!/usr/bin/env bash
# Written by testing/services/flink-client.sh: Flink $VERSION's command-line client, run as
# Flink's bin/flink runs it. Every argument goes to the CLI: \`flink list -m 127.0.0.1:8081\`.
# Its own configuration always (not a FLINK_CONF_DIR of the caller's); FLINK_CLIENT_LOG
# names the log file (default: $FLINK_DIR/log/flink-client.log).
export FLINK_CONF_DIR=\"$CONF\"
# No plugins (an empty directory, as Flink's own layout has one).
export FLINK_PLUGINS_DIR=\"$FLINK_DIR/plugins\"
exec \"$java\" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \\
    $JAVA_OPTS_ALL \\
    -Dlog.file=\"\${FLINK_CLIENT_LOG:-$FLINK_DIR/log/flink-client.log}\" \\
    -Dlog4j.configurationFile=\"file:\$FLINK_CONF_DIR/log4j-cli.properties\" \\
    -classpath \"$LIB/*\" org.apache.flink.client.cli.CliFrontend \"\$@\""
    chmod +x "$WRAPPER"
}

verify() {
    # The CLI starts and answers: `--help` exits 0 without a cluster.
    local out
    if ! out=$("$WRAPPER" --help 2>&1) || ! grep -q "Action \"list\"" <<<"$out"; then
        printf '%s\n' "$out" | tail -30 >&2
        die "Flink's command-line client ($WRAPPER) does not run (log: $FLINK_DIR/log/flink-client.log)"
    fi
}

install() {
    local t0=$SECONDS
    mkdir -p "$FLINK_DIR"
    fetch
    configure
    # `.complete`: installed and seen to run, with the wrapper and configuration of now.
    local done="$FLINK_DIR/.complete"
    if [ ! -f "$done" ] || [ "$WRAPPER" -nt "$done" ] || [ "$CONF/config.yaml" -nt "$done" ] \
        || [ "$CONF/log4j-cli.properties" -nt "$done" ] || [ "$LIB/.complete" -nt "$done" ]; then
        rm -f "$done"
        verify
        echo "$PACKAGE==$VERSION" >"$done"
    fi
    log "Flink $VERSION command-line client ready in $((SECONDS - t0)) s: FLINK_CLIENT=$WRAPPER"
}

case "${1:-install}" in
    install | start) install ;;
    path) echo "$WRAPPER" ;;
    *) die "usage: flink-client.sh [install|path]" ;;
esac
