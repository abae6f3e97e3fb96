#!/bin/bash
# The GlusterFS half of the multi-host test bed (see README.md here); run as root.
# glusterd and the brick(s) run in netns fsp-srv, one FUSE client per simulated host:
#   volume : fspvol, distributed over $FSP_GLUSTER_BRICKS bricks (default 1) in /srv/fsp-gluster
#   mounts : /mnt/fsp-gl-h1 .. /mnt/fsp-gl-h$FSP_HOSTS
# The client caches are off (volume options, and FUSE timeouts of 0): with Gluster's
# defaults, md-cache shows the other mount a stale st_nlink and mtime for about a
# second, and the queue's link() check and waiting both read those.
# Safe to run again: whatever is already up is left as it is.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/fsp-lib.sh"
VOL=fspvol
NBRICKS=${FSP_GLUSTER_BRICKS:-1}
G="gluster --mode=script"

log "install"
apt_install glusterfs-server glusterfs-client

log "netns"
netns_up

log "glusterd in fsp-srv"
mkdir -p "$FSP_STATE/gluster"
if ! { [ -s "$FSP_STATE/glusterd.pid" ] && kill -0 "$(cat "$FSP_STATE/glusterd.pid")" 2>/dev/null; }; then
    nsenter --net=/run/netns/fsp-srv setsid glusterd -N --log-file="$FSP_STATE/gluster/glusterd.log" \
        </dev/null >/dev/null 2>&1 &
    echo $! >"$FSP_STATE/glusterd.pid"
fi
for i in $(seq 200); do $G volume list >/dev/null 2>&1 && break; sleep 0.1; done

if ! $G volume info $VOL >/dev/null 2>&1; then
    bricks=()
    for b in $(seq 1 "$NBRICKS"); do
        mkdir -p /srv/fsp-gluster/brick$b
        bricks+=("$FSP_SRV_IP:/srv/fsp-gluster/brick$b")
    done
    # 'force': bricks on the root filesystem
    $G volume create $VOL "${bricks[@]}" force
    for o in performance.stat-prefetch performance.quick-read performance.io-cache \
             performance.read-ahead performance.write-behind performance.open-behind \
             performance.readdir-ahead performance.nl-cache; do
        $G volume set $VOL $o off >/dev/null
    done
fi
$G volume info $VOL | grep -q '^Status: Started' || $G volume start $VOL

log "mount clients"
for i in $(seq 1 "$FSP_HOSTS"); do
    mp=/mnt/fsp-gl-h$i
    mkdir -p "$mp"
    findmnt --mountpoint "$mp" >/dev/null && continue
    nsenter --net=/run/netns/fsp-h$i mount -t glusterfs \
        -o attribute-timeout=0,entry-timeout=0,negative-timeout=0,log-file="$FSP_STATE/gluster/client-h$i.log" \
        "$FSP_SRV_IP:/$VOL" "$mp"
done
for i in $(seq 1 "$FSP_HOSTS"); do wait_mount /mnt/fsp-gl-h$i fuse.glusterfs 20; done
log "ready: $(findmnt -rn -t fuse.glusterfs -o TARGET | tr '\n' ' ')"
