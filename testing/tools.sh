#!/usr/bin/env bash
# Installs the Debian tools the build and the tests need, when missing (idempotent):
# librdkafka builds from source with make, a C compiler, perl and zlib; the services need
# curl, Java and Maven; `script` runs the runner under a pseudo-terminal; the status
# page's browser test drives headless Chromium through chromedriver.
set -euo pipefail

install() {
    printf '== installing %s (Debian packages)\n' "$*" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

need_cmd() {
    # need_cmd <command> <debian package>
    command -v "$1" >/dev/null 2>&1 || install "$2"
}

need_pkg() {
    # need_pkg <debian package>
    dpkg -s "$1" >/dev/null 2>&1 || install "$1"
}

need_cmd script bsdutils
need_cmd make make
need_cmd cc gcc
need_cmd perl perl
need_cmd curl curl
need_cmd java openjdk-17-jdk-headless
need_cmd mvn maven
need_pkg zlib1g-dev
need_cmd chromedriver chromium-driver
