#!/bin/bash
# mount-client.sh gl|nfs|ceph N MOUNTPOINT: one more client mount of the test bed's share,
# made from simulated host N (its network namespace) exactly as setup-gluster.sh,
# setup-nfs-ganesha.sh and setup-ceph.sh make /mnt/fsp-KIND-hN. A test that makes a host die (umount -l
# of its mount) does it to a mount of its own, so the shared ones stay up for others.
# The NFS client's PID is kept in $FSP_STATE/nfsfuse-<mountpoint's name>.pid.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/fsp-lib.sh"
kind=$1 n=$2 mp=$3
mkdir -p "$mp"
case $kind in
gl)
    in_host "$n" mount -t glusterfs \
        -o attribute-timeout=0,entry-timeout=0,negative-timeout=0,log-file="$FSP_STATE/gluster/client-$(basename "$mp").log" \
        "$FSP_SRV_IP:/fspvol" "$mp"
    wait_mount "$mp" fuse.glusterfs 20
    ;;
nfs)
    in_host "$n" setsid /usr/bin/python3 "$HERE/nfsfuse.py" "$FSP_SRV_IP" "${FSP_NFS_EXPORT:-/srv/fsp-nfs-export}" "$mp" \
        --nfs-version 3 --attr-timeout "${FSP_NFS_ATTR_TIMEOUT:-0}" </dev/null >"$FSP_STATE/nfsfuse-$(basename "$mp").log" 2>&1 &
    echo $! >"$FSP_STATE/nfsfuse-$(basename "$mp").pid"
    wait_mount "$mp" fuse.nfsfuse 20
    ;;
ceph)
    # setup-ceph.sh's cluster; ceph-fuse ends by itself when its mount goes away.
    nsenter --net=/run/netns/fsp-h"$n" setsid ceph-fuse -f -c "$FSP_STATE/ceph/ceph.conf" "$mp" \
        </dev/null >"$FSP_STATE/ceph/fuse-$(basename "$mp").log" 2>&1 &
    echo $! >"$FSP_STATE/ceph/fuse-$(basename "$mp").pid"
    wait_mount "$mp" fuse.ceph-fuse 30
    ;;
*) echo "usage: $0 gl|nfs|ceph N MOUNTPOINT" >&2; exit 2 ;;
esac
