# Helpers shared by the service scripts (sourced, not run).
# Every service lives under $OPERATORS_SERVICES_DIR (default: <repo>/target/services):
# downloaded jars, data, logs and pid files. Nothing outside it but Debian's packages.

SERVICES_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SERVICES_SRC/../.." && pwd)"
SERVICES_DIR="${OPERATORS_SERVICES_DIR:-$REPO/target/services}"
mkdir -p "$SERVICES_DIR"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt-get install of the given Debian packages, once per run of a script.
APT_UPDATED=""
apt_install() {
    log "installing $* (Debian packages)"
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

need_pkg() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# port_open <port>: something listens on 127.0.0.1:<port>.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until <what> <seconds> <command...>
wait_until() {
    local what=$1 secs=$2; shift 2
    local start=$SECONDS
    while ! "$@" >/dev/null 2>&1; do
        if (( SECONDS - start >= secs )); then
            die "$what did not come up within ${secs}s"
        fi
        sleep 0.5
    done
}

# pid_alive <pidfile>
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Java 17 for the JVM services (OpenSearch 2.x and Kafka 4.x both run on it).
java_bin() {
    if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"; return; fi
    command -v java >/dev/null 2>&1 || need_pkg openjdk-17-jre-headless
    command -v java
}

# fetch_jars <pom dir> <target lib dir>: the pom's runtime dependencies from Maven Central.
fetch_jars() {
    local pom=$1 lib=$2
    if [ -f "$lib/.complete" ] && [ "$lib/.complete" -nt "$pom/pom.xml" ]; then return; fi
    command -v mvn >/dev/null 2>&1 || need_pkg maven
    log "fetching jars of $pom/pom.xml from Maven Central"
    rm -rf "$lib"
    mkdir -p "$(dirname "$lib")"
    if ! mvn -B -Dstyle.color=never -f "$pom/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$lib" >"$lib.mvn.log" 2>&1; then
        tail -40 "$lib.mvn.log" >&2
        die "mvn dependency:copy-dependencies -f $pom/pom.xml failed (log: $lib.mvn.log)"
    fi
    touch "$lib/.complete"
}
