#!/usr/bin/env bash
# Build deploy/Dockerfile's images with buildah (no Docker engine needed) and check that they start.
#
#   deploy/build-images.sh base           debootstrap Debian bookworm + Python 3.11 and import it as a local
#                                         base image (for machines that reach no container registry)
#   deploy/build-images.sh cloud|edge     build that target of deploy/Dockerfile
#   deploy/build-images.sh check [IMAGE]  in the image: `splitinfer --help`, the service imports, and a cloud
#                                         that loads the model and answers gRPC health SERVING
#   deploy/build-images.sh weights        build the weights image from WEIGHTS_DIR and list its files
#   deploy/build-images.sh clean          remove the images this script made
#
# Settings (environment):
#   BASE_IMAGE       base of every stage (default python:3.11-slim; `base` prints the local one to use)
#   TORCH_INDEX_URL  where torch comes from (default PyTorch's CPU index; "" = pip's own index: PyPI's CUDA build)
#   WEIGHTS_DIR      folder with the model's .cfg and .weights for the health check (default ../shared/data/models/...)
#   HOST_MOUNTS      space-separated host paths bind-mounted read-only into every RUN step; default: the CA
#                    certificates folder and pip's global configuration with the local package folders it
#                    names, so RUN steps reach the same package indexes as this machine
# Storage is buildah's vfs driver with chroot isolation: slow and disk-hungry, but it needs no kernel
# overlay support and no user namespaces.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")"
local_base="localhost/splitinfer-base:bookworm-py3.11"
cloud_image="localhost/splitinfer:$version"
edge_image="localhost/splitinfer-edge:$version"
weights_image="localhost/splitinfer-weights:yolo-fastest-1.1"
weights_dir="${WEIGHTS_DIR:-$repo/../shared/data/models/yolo-fastest-1.1}"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
buildah=(buildah --storage-driver vfs)

need() {
    command -v "$1" >/dev/null || { echo "$1 is missing: apt-get install $2" >&2; exit 2; }
}

default_mounts() {
    local paths=(/etc/ssl/certs) conf token
    for conf in /etc/pip.conf /etc/xdg/pip; do
        [ -e "$conf" ] && paths+=("$conf")
    done
    # Local indexes and wheel folders named in pip's configuration (file:///x/simple -> /x, /x -> /x).
    for token in $(cat /etc/pip.conf /etc/xdg/pip/pip.conf 2>/dev/null | tr ' =' '\n'); do
        case "$token" in
            file:///*) token="${token#file://}"; token="${token%/simple}"; token="${token%/simple/}" ;;
            /*) ;;
            *) continue ;;
        esac
        [ -d "$token" ] && [ "$token" != /etc/ssl/certs ] && paths+=("$token")
    done
    echo "${paths[@]}"
}

build_base() {
    need debootstrap debootstrap
    local work rootfs ctr started
    started=$(date +%s)
    work="$(mktemp -d /var/tmp/splitinfer-base.XXXXXX)"
    rootfs="$work/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
    tar -C "$rootfs" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -cf "$work/rootfs.tar" .
    ctr="$("${buildah[@]}" from scratch)"
    "${buildah[@]}" add "$ctr" "$work/rootfs.tar" /
    "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$ctr"
    "${buildah[@]}" commit --rm "$ctr" "$local_base"
    rm -rf "$work"
    echo "base image $local_base built in $(( $(date +%s) - started )) s; use it with BASE_IMAGE=$local_base"
}

build_target() {
    local target="$1" image="$2" started mounts=() path
    started=$(date +%s)
    for path in ${HOST_MOUNTS:-$(default_mounts)}; do
        mounts+=(--volume "$path:$path:ro")
    done
    "${buildah[@]}" bud --isolation chroot --layers=false --target "$target" \
        --build-arg "BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}" \
        --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}" \
        --ignorefile "$repo/deploy/Dockerfile.dockerignore" \
        "${mounts[@]}" -f "$repo/deploy/Dockerfile" -t "$image" "$repo"
    echo "$image built in $(( $(date +%s) - started )) s"
    "${buildah[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image"
}

# The cloud's health check, run inside the image: start it on free ports, poll grpc.health.v1 until
# SERVING (or the process dies, or 300 s pass), then stop it with SIGTERM as Kubernetes would.
read -r -d '' health_check <<'PY' || true
import socket, subprocess, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

help_text = subprocess.run(["splitinfer", "cloud", "--help"], capture_output=True, text=True, check=True).stdout
port = free_port()
command = ["splitinfer", "cloud", "--weights", "/weights", "--host", "127.0.0.1", "--port", str(port),
           "--metrics-port", "-1"]
probe_port = port
if "--health-port" in help_text:  # TLS-era cloud: plaintext asked for explicitly, health on its own port
    probe_port = free_port()
    command += ["--plaintext", "--health-port", str(probe_port)]
print("starting:", " ".join(command), flush=True)
cloud = subprocess.Popen(command)
started, status = time.monotonic(), None
with grpc.insecure_channel(f"127.0.0.1:{probe_port}") as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    while time.monotonic() - started < 300 and cloud.poll() is None:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service="splitinfer.v1.InferenceService"), timeout=2)
            if status.status == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        time.sleep(1)
serving = status is not None and status.status == health_pb2.HealthCheckResponse.SERVING
print(f"health on port {probe_port}: {'SERVING' if serving else 'not SERVING'} after "
      f"{time.monotonic() - started:.1f} s", flush=True)
cloud.terminate()
code = cloud.wait(timeout=60)
print("cloud exited with", code, "after SIGTERM", flush=True)
sys.exit(0 if serving and code == 0 else 1)
PY

check_image() {
    local image="$1" ctr weights="$weights_dir"
    [ -f "$weights/yolo-fastest-1.1-xl.weights" ] || { echo "no weights in $weights: set WEIGHTS_DIR" >&2; exit 2; }
    ctr="$("${buildah[@]}" from "$image")"
    trap '"${buildah[@]}" rm "$ctr" >/dev/null' RETURN
    local run=("${buildah[@]}" run --isolation chroot --volume "$weights:/weights:ro" "$ctr" --)
    echo "== splitinfer --help"
    "${run[@]}" splitinfer --help
    echo "== splitinfer edge --help (the edge target runs the same environment)"
    "${run[@]}" splitinfer edge --help >/dev/null
    echo "edge --help: ok"
    echo "== imports, user, versions"
    "${run[@]}" python -c 'import os, av, cv2, nats, torch, splitinfer.services.cloud.server, splitinfer.services.edge.app
print("uid", os.getuid(), "torch", torch.__version__, "opencv", cv2.__version__)'
    echo "== cloud health"
    "${run[@]}" python -c "$health_check"
}

# The weights image: the model files on a small base (the local one: any image with cp will do); the cloud's
# init container copies them into the pod (deploy/kubernetes/base/deployment.yaml, the default model source).
build_weights() {
    local ctr containerfile
    [ -f "$weights_dir/yolo-fastest-1.1-xl.weights" ] || { echo "no weights in $weights_dir: set WEIGHTS_DIR" >&2; exit 2; }
    containerfile="$(mktemp)"
    printf '%s\n' 'ARG BASE_IMAGE=busybox:1.37' 'FROM ${BASE_IMAGE}' 'COPY *.cfg *.weights /weights/' 'USER 10001' \
        'CMD ["cp", "-R", "/weights/.", "/var/lib/splitinfer/weights/"]' > "$containerfile"
    "${buildah[@]}" bud --isolation chroot --layers=false \
        --build-arg "BASE_IMAGE=${BASE_IMAGE:-busybox:1.37}" \
        -f "$containerfile" -t "$weights_image" "$weights_dir"
    rm -f "$containerfile"
    ctr="$("${buildah[@]}" from "$weights_image")"
    "${buildah[@]}" run --isolation chroot "$ctr" -- sh -c 'cd /weights && ls -l && sha256sum *'
    "${buildah[@]}" rm "$ctr" >/dev/null
}

need buildah buildah
case "${1:-}" in
    base) build_base ;;
    cloud) build_target cloud "$cloud_image" ;;
    edge) build_target edge "$edge_image" ;;
    weights) build_weights ;;
    check) check_image "${2:-$cloud_image}" ;;
    clean)
        "${buildah[@]}" rmi -f "$cloud_image" "$edge_image" "$weights_image" "$local_base" 2>/dev/null || true ;;
    *) sed -n '2,21p' "$0"; exit 2 ;;
esac
