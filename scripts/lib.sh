#!/usr/bin/env bash
# Small helpers shared by the scripts in scripts/ (sourced, not run).

# banner TEXT: a section header that stands out in CI logs.
banner() {
    printf '\n========== %s ==========\n' "$*"
}

die() {
    echo "error: $*" >&2
    exit 1
}

# free_port: print a TCP port on 127.0.0.1 that is free right now (the OS picks it).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# port_open HOST PORT: true if a TCP connect succeeds.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# rand_hex: 8 random hex digits.
rand_hex() {
    od -An -N4 -tx1 /dev/urandom | tr -d ' \n'
}
