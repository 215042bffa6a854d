#!/usr/bin/env bash
# Data-plane benchmark, one command: builds the release binaries, copies
# them aside (a rebuild during the run changes nothing), and runs
# proxy-bench, which starts connect-control, connect-client Studios,
# connect-proxy (CONNECT_IO=uring and epoll, alternating) and OpenSSH sshd
# as a ProxyJump peer on 127.0.0.1, and writes bench/results/latest.json
# and latest.md. Arguments go to proxy-bench (see --help), e.g.
#
#   bench/proxy-bench.sh                       # everything, ~30 min on 2 vCPU
#   bench/proxy-bench.sh --only throughput --rounds 5
#   bench/proxy-bench.sh --only idle --idle 1000 --idle-rounds 1
#   bench/proxy-bench.sh --only interactive --rounds 3
#
# SKIP_BUILD=1 uses the binaries already in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --workspace --bins
fi

snap=$(mktemp -d "${TMPDIR:-/tmp}/connect-proxy-bench.XXXXXX")
bins=(connect-proxy connect-client connect-control connect-loadtest proxy-bench)
for b in "${bins[@]}"; do
    cp "target/release/$b" "$snap/"
done

# sshd refuses to start without its privilege-separation directory.
if [ -x /usr/sbin/sshd ] && [ ! -d /run/sshd ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
fi

# 10,000 idle sessions need ~10,000 descriptors in the proxies (two sockets
# per session, 5,000 sessions per proxy process) and ~5,000 in each
# connect-loadtest (one per proxy process).
ulimit -n "$(ulimit -Hn)"

status=0
"$snap/proxy-bench" --bin-dir "$snap" --work-dir "$snap/work" "$@" || status=$?
for b in "${bins[@]}"; do
    rm -f "${snap:?}/$b"
done
echo "logs of this run: $snap/work"
exit "$status"
