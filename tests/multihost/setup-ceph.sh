#!/bin/bash
# setup-ceph.sh: a one-node Ceph cluster in the bed's server namespace (a monitor, a
# manager, one OSD on a loop device, one MDS; no authentication, one replica) and a
# CephFS mounted with ceph-fuse on each simulated host at /mnt/fsp-ceph-hN.
# Debian's ceph packages (ceph-mon ceph-mgr ceph-osd ceph-mds ceph-fuse ceph-common)
# are installed when missing. Everything lives in $FSP_STATE/ceph and
# $FSP_CEPH_IMAGE (a 3 GiB sparse image); teardown.sh takes it down with the rest.
# Run again, it leaves what is up alone. The daemons listen on 10.213.0.1 in fsp-srv
# only. Needs netns_up first (setup-gluster.sh or setup-nfs-ganesha.sh).
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/fsp-lib.sh"
apt_install ceph-mon ceph-mgr ceph-osd ceph-mds ceph-fuse ceph-common uuid-runtime
netns_up

C=$FSP_STATE/ceph
IMAGE=${FSP_CEPH_IMAGE:-/var/tmp/fsp-ceph-osd.img}
CONF=$C/ceph.conf
ceph_() { in_srv timeout 30 ceph -c "$CONF" "$@"; }
# start_daemon NAME CMD...: CMD in the foreground in fsp-srv, its PID kept for teardown.
start_daemon() {
    local name=$1; shift
    if [ -s "$C/$name.pid" ] && kill -0 "$(cat "$C/$name.pid")" 2>/dev/null; then return 0; fi
    # nsenter and setsid exec: $! is the daemon's own PID (a shell function would fork).
    nsenter --net=/run/netns/fsp-srv setsid "$@" -f -c "$CONF" </dev/null >"$C/$name.out" 2>&1 &
    echo $! >"$C/$name.pid"
}

if [ ! -e "$CONF" ]; then
    log "a new cluster in $C"
    mkdir -p "$C"/{mon,mgr,osd0,mds,run}
    fsid=$(uuidgen)
    [ -e "$IMAGE" ] || truncate -s 3G "$IMAGE"
    loop=$(losetup --find --show "$IMAGE")
    echo "$loop" >"$C/loopdev"
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v1:$FSP_SRV_IP:6789
public network = 10.213.0.0/24
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd objectstore = bluestore
bluestore block path = $loop
osd memory target = 536870912
bluestore cache size = 134217728
run dir = $C/run
admin socket = $C/run/\$name.asok
log file = $C/\$name.log
mon data = $C/mon
osd data = $C/osd\$id
mgr data = $C/mgr
mds data = $C/mds
keyring = $C/keyring
EOF
    ceph-authtool --create-keyring "$C/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    monmaptool --create --add a "v1:$FSP_SRV_IP:6789" --fsid "$fsid" "$C/monmap" >/dev/null
    in_srv ceph-mon -c "$CONF" --mkfs -i a --monmap "$C/monmap" --keyring "$C/keyring"
    start_daemon mon ceph-mon -i a
    wait_tcp 1 "$FSP_SRV_IP" 6789 30
    uuid=$(uuidgen)
    ceph_ osd new "$uuid" >/dev/null
    in_srv ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >"$C/osd-mkfs.out" 2>&1
    start_daemon osd ceph-osd -i 0
    start_daemon mgr ceph-mgr -i x
    ceph_ osd pool create cephfs_data 8 >/dev/null
    ceph_ osd pool create cephfs_meta 8 >/dev/null
    ceph_ fs new cephfs cephfs_meta cephfs_data >/dev/null
else
    [ -e "$(cat "$C/loopdev")" ] && losetup "$(cat "$C/loopdev")" >/dev/null 2>&1 ||
        losetup "$(cat "$C/loopdev")" "$IMAGE"
    start_daemon mon ceph-mon -i a
    wait_tcp 1 "$FSP_SRV_IP" 6789 30
    start_daemon osd ceph-osd -i 0
    start_daemon mgr ceph-mgr -i x
fi
start_daemon mds ceph-mds -i a
for i in $(seq 100); do ceph_ fs status 2>/dev/null | grep -q active && break; sleep 0.3; done

log "mount clients"
for i in $(seq 1 "$FSP_HOSTS"); do
    mp=/mnt/fsp-ceph-h$i
    mkdir -p "$mp"
    findmnt --mountpoint "$mp" >/dev/null && continue
    nsenter --net=/run/netns/fsp-h"$i" setsid ceph-fuse -f -c "$CONF" --client_mountpoint=/ "$mp" \
        </dev/null >"$C/fuse-h$i.out" 2>&1 &
    echo $! >"$C/fuse-h$i.pid"
done
for i in $(seq 1 "$FSP_HOSTS"); do wait_mount /mnt/fsp-ceph-h$i fuse.ceph-fuse 30; done
log "ready: $(findmnt -rn -t fuse.ceph-fuse -o TARGET | tr '\n' ' ')"
