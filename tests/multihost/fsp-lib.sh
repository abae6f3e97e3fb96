# Helpers for the multi-host test bed's scripts (sourced by setup-*.sh and
# teardown.sh; not run on its own).
#
# The network is private; nothing listens on the machine's real interfaces:
#   netns fsp-srv : the file server's daemons, and the bridge fsp-br0 (10.213.0.1/24)
#   netns fsp-hN  : simulated host N, eth0 10.213.0.(10+N)/24, a veth pair into fsp-br0
# Each daemon is started as 'nsenter ... setsid DAEMON-in-the-foreground &': nsenter
# and setsid both exec, so $! is the daemon's own PID, kept in $FSP_STATE/NAME.pid so
# that teardown.sh stops exactly what we started.
# A host's FUSE client runs in fsp-hN through 'nsenter --net', not 'ip netns exec'
# (which would also give it a private mount namespace and hide the mount). The
# mount points are in the machine's own mount namespace, /mnt/fsp-KIND-hN, where
# tests/test_multihost.py looks for them.
set -euo pipefail

FSP_STATE=${FSP_STATE:-/run/fsprobe}
FSP_HOSTS=${FSP_HOSTS:-2}
FSP_SRV_IP=10.213.0.1
mkdir -p "$FSP_STATE"

log() { echo "[$(date +%T.%3N)] $*" >&2; }

in_srv() { nsenter --net=/run/netns/fsp-srv "$@"; }
in_host() { local n=$1; shift; nsenter --net=/run/netns/fsp-h"$n" "$@"; }

# as_host N CMD...: run CMD as simulated host N, in its netns and its own UTS
# namespace (host name fsphostN). tests/test_multihost.py does the same in Python.
as_host() {
    local n=$1; shift
    nsenter --net=/run/netns/fsp-h"$n" unshare -u sh -c 'hostname "$0"; exec "$@"' "fsphost$n" "$@"
}

# apt_install PACKAGE...: install the Debian packages that are missing (apt-get update
# at most once per test bed).
apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ((${#missing[@]})); then
        [ -e "$FSP_STATE/apt-updated" ] || { apt-get update -qq; touch "$FSP_STATE/apt-updated"; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

netns_up() {
    if [ ! -e /run/netns/fsp-srv ]; then
        ip netns add fsp-srv
        ip -n fsp-srv link set lo up
        ip -n fsp-srv link add fsp-br0 type bridge
        ip -n fsp-srv addr add "$FSP_SRV_IP/24" dev fsp-br0
        ip -n fsp-srv link set fsp-br0 up
    fi
    local i
    for i in $(seq 1 "$FSP_HOSTS"); do
        [ -e /run/netns/fsp-h$i ] && continue
        ip netns add fsp-h$i
        ip -n fsp-h$i link set lo up
        ip -n fsp-h$i link add eth0 type veth peer name fsp-h$i-p netns fsp-srv
        ip -n fsp-srv link set fsp-h$i-p master fsp-br0 up
        ip -n fsp-h$i addr add 10.213.0.$((10 + i))/24 dev eth0
        ip -n fsp-h$i link set eth0 up
    done
}

netns_down() {
    local n
    for n in $(ip netns list | awk '$1 ~ /^fsp-(srv|h[0-9]+)$/ {print $1}'); do
        ip netns del "$n"
    done
}

# wait_tcp HOSTNUM IP PORT [SECONDS]: wait until IP:PORT answers, as seen from host N
wait_tcp() {
    local n=$1 ip=$2 port=$3 t=${4:-20} i
    for ((i = 0; i < t * 10; i++)); do
        if in_host "$n" timeout 1 bash -c ">/dev/tcp/$ip/$port" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "timeout waiting for $ip:$port from fsp-h$n"; return 1
}

wait_mount() { # wait_mount PATH FSTYPE [SECONDS]
    local p=$1 t=$2 s=${3:-20} i
    for ((i = 0; i < s * 10; i++)); do
        [ "$(findmnt -n -o FSTYPE --mountpoint "$p" 2>/dev/null)" = "$t" ] && return 0
        sleep 0.1
    done
    log "timeout waiting for $t mount on $p"; return 1
}

# kill a daemon whose pid is in a file (by PID only), wait for it to go
kill_pidfile() {
    local f=$1 pid i
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

umount_fsp() { # unmount every /mnt/fsp-* mount (lazy as a last resort)
    local m
    for m in $(findmnt -rn -o TARGET | grep -E '^/mnt/fsp-' | sort -r); do
        umount "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || umount -l "$m" || true
    done
}
