# Sourced by the container scripts: points podman (and podman-compose, which calls it) at the
# harness's own containers.conf, so nothing in the host's /etc/containers changes.
#
# Why a containers.conf of our own: this sandbox refuses setrlimit inside containers (crun
# and runc both fail with "setrlimit RLIMIT_NPROC: Operation not permitted", even for the
# current values), and crun also refuses the host's hybrid cgroup layout. runc through
# ./oci-runtime (which drops process.rlimits from the bundle) with the cgroupfs manager works.
# On a machine with a normal container setup these settings are harmless.
CONTAINERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONTAINERS_STATE=${CONTAINERS_STATE:-/var/cache/mcp-gateway}
mkdir -p "$CONTAINERS_STATE"
cat > "$CONTAINERS_STATE/containers.conf.tmp" <<CONF
[engine]
runtime = "runc-norlimits"
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.runtimes]
runc-norlimits = ["$CONTAINERS_DIR/oci-runtime"]
CONF
mv "$CONTAINERS_STATE/containers.conf.tmp" "$CONTAINERS_STATE/containers.conf"
export CONTAINERS_CONF=$CONTAINERS_STATE/containers.conf
