#!/bin/bash
# Take down the multi-host test bed: unmount /mnt/fsp-*, stop the daemons the setup
# scripts started (by the PIDs they recorded), delete the Gluster volume and its
# bricks, and delete the fsp-* network namespaces. Installed packages stay.
# --purge-data also deletes the NFS export under /srv, the state in $FSP_STATE and the
# Ceph OSD's image (setup-ceph.sh).
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/fsp-lib.sh"
set +e

log "unmount"
umount_fsp
# nfsfuse.py exits when its mount goes away; this is for one that did not.
for f in "$FSP_STATE"/nfsfuse-h*.pid; do [ -e "$f" ] && kill_pidfile "$f"; done
# setup-ceph.sh's clients and daemons (clients first), and its OSD's loop device.
for f in "$FSP_STATE"/ceph/fuse-h*.pid "$FSP_STATE"/ceph/{mds,mgr,osd,mon}.pid; do
    [ -e "$f" ] && kill_pidfile "$f"
done
[ -s "$FSP_STATE/ceph/loopdev" ] && losetup -d "$(cat "$FSP_STATE/ceph/loopdev")" 2>/dev/null

if [ -s "$FSP_STATE/glusterd.pid" ] && kill -0 "$(cat "$FSP_STATE/glusterd.pid")" 2>/dev/null; then
    log "gluster volume stop/delete"
    gluster --mode=script volume stop fspvol force >/dev/null 2>&1
    gluster --mode=script volume delete fspvol >/dev/null 2>&1
fi
log "stop daemons"
for d in ganesha rpcbind glusterd; do kill_pidfile "$FSP_STATE/$d.pid"; done
rm -rf /srv/fsp-gluster
rm -f /run/rpcbind.sock /run/rpcbind.lock /run/rpcbind/*.xdr

log "netns"
netns_down
if [ "${1:-}" = "--purge-data" ]; then
    rm -rf "${FSP_NFS_EXPORT:-/srv/fsp-nfs-export}" "$FSP_STATE" "${FSP_CEPH_IMAGE:-/var/tmp/fsp-ceph-osd.img}"
fi
rmdir /mnt/fsp-* 2>/dev/null
log "left: mounts=[$(findmnt -rn -o TARGET | grep -E '^/mnt/fsp-' | tr '\n' ' ')] netns=[$(ip netns list | grep -E '^fsp-' | tr '\n' ' ')]"
