#!/usr/bin/env bash
# The whole test suite on any machine: installs what the tests need (Debian tools,
# then the services of testing/services/, each only when missing), starts the services,
# and runs `cargo test --workspace` with their environment. Arguments go to cargo test
# (`testing/test.sh -- --nocapture`). With the services up already,
# `cargo test -p <crate>` works as well; a test whose service is down fails naming the
# script that starts it.
set -euo pipefail
cd "$(dirname "$0")/.."

testing/tools.sh

# Only the `export` lines of start-all.sh are evaluated: an installer that writes to
# stdout must not become a command here.
started=$SECONDS
services_env=$(testing/services/start-all.sh | grep '^export ')
eval "$services_env"
echo "$services_env"
echo "services ready after $((SECONDS - started)) s"

t=$SECONDS
cargo test --workspace "$@"
echo "tests took $((SECONDS - t)) s"
