#!/bin/bash
# The NFSv3 half of the multi-host test bed (see README.md here); run as root.
# A real NFS server, nfs-ganesha (userspace, FSAL_VFS), in netns fsp-srv, and on each
# simulated host a userspace NFS client: libnfs, driven through ctypes and mounted
# with FUSE by nfsfuse.py. No kernel NFS (server or client) is needed.
#   export : $FSP_NFS_EXPORT (default /srv/fsp-nfs-export)
#   mounts : /mnt/fsp-nfs-h1 .. /mnt/fsp-nfs-h$FSP_HOSTS
# Everything comes from Debian packages, none from PyPI: nfsfuse.py runs under
# /usr/bin/python3 with python3-fusepy, not in the project's virtualenv.
# FSP_NFS_ATTR_TIMEOUT=3 makes the clients cache attributes like a kernel client's
# actimeo (default 0: every stat goes to the server).
# Safe to run again: whatever is already up is left as it is.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/fsp-lib.sh"
EXPORT=${FSP_NFS_EXPORT:-/srv/fsp-nfs-export}

log "install"
apt_install nfs-ganesha nfs-ganesha-vfs rpcbind libnfs13 libfuse2 python3-fusepy

log "netns"
netns_up

mkdir -p "$EXPORT" /var/lib/nfs/ganesha /run/ganesha "$FSP_STATE/ganesha"
cat >"$FSP_STATE/ganesha/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Protocols = 3, 4;
    Enable_UDP = false;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    NFS_Port = 2049;
    MNT_Port = 20048;
}
NFSV4 {
    Graceless = true;
    RecoveryBackend = fs;
    Allow_Numeric_Owners = true;
    Only_Numeric_Owners = true;
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
    Export_Id = 1;
    Path = $EXPORT;
    Pseudo = /export;
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
EOF

log "rpcbind + ganesha in fsp-srv"
if ! { [ -s "$FSP_STATE/rpcbind.pid" ] && kill -0 "$(cat "$FSP_STATE/rpcbind.pid")" 2>/dev/null; }; then
    # -f: stay in the foreground so we know the PID; NFSv3 MOUNT needs rpcbind
    nsenter --net=/run/netns/fsp-srv setsid rpcbind -f </dev/null >"$FSP_STATE/rpcbind.log" 2>&1 &
    echo $! >"$FSP_STATE/rpcbind.pid"
fi
if ! { [ -s "$FSP_STATE/ganesha.pid" ] && kill -0 "$(cat "$FSP_STATE/ganesha.pid")" 2>/dev/null; }; then
    nsenter --net=/run/netns/fsp-srv setsid ganesha.nfsd -F -f "$FSP_STATE/ganesha/ganesha.conf" \
        -L "$FSP_STATE/ganesha/ganesha.log" -N NIV_EVENT </dev/null >/dev/null 2>&1 &
    echo $! >"$FSP_STATE/ganesha.pid"
fi
wait_tcp 1 "$FSP_SRV_IP" 2049 30
# ganesha registers with rpcbind a moment after it listens
for i in $(seq 100); do in_srv rpcinfo -T tcp 127.0.0.1 100005 3 >/dev/null 2>&1 && break; sleep 0.1; done

log "mount clients"
for i in $(seq 1 "$FSP_HOSTS"); do
    mp=/mnt/fsp-nfs-h$i
    mkdir -p "$mp"
    findmnt --mountpoint "$mp" >/dev/null && continue
    nsenter --net=/run/netns/fsp-h$i setsid /usr/bin/python3 "$HERE/nfsfuse.py" "$FSP_SRV_IP" "$EXPORT" "$mp" \
        --nfs-version 3 --attr-timeout "${FSP_NFS_ATTR_TIMEOUT:-0}" </dev/null >"$FSP_STATE/nfsfuse-h$i.log" 2>&1 &
    echo $! >"$FSP_STATE/nfsfuse-h$i.pid"
done
for i in $(seq 1 "$FSP_HOSTS"); do wait_mount /mnt/fsp-nfs-h$i fuse.nfsfuse 20; done
log "ready: $(findmnt -rn -t fuse.nfsfuse -o TARGET | tr '\n' ' ')"
