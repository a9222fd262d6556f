#!/usr/bin/env bash
# Installs what libvmm's build and tests need beyond the pinned Rust toolchain, only when missing:
#   - the Rust targets named in rust-toolchain.toml (RUSTUP_AUTO_INSTALL=0 on these machines),
#   - QEMU 10 (x86_64 + riscv64, OpenSBI) from Debian bookworm-backports,
#   - Bochs 2.7 and the GRUB ISO tools, BIOS and UEFI (for the VMX backend's bootable ISO),
#   - on request only (`kvm DIR`, run by `cargo xtask bench --vs-kvm`): Debian's current amd64 kernel
#     package, fetched with `apt-get download` and unpacked into DIR (not installed),
#   - gdb and gdb-multiarch (`cargo xtask run --gdb`, and its batch test: RISC-V needs gdb-multiarch).
# The backports suite is added from the mirror address the machine's own apt sources already use;
# no registry host name is written here. When another apt/dpkg (unattended upgrades, a provisioning
# script) holds the package locks, this waits for them, up to LIBVMM_APT_LOCK_WAIT seconds (600).
set -euo pipefail
cd "$(dirname "$0")/.."

want="${1:-all}"   # all | rust | qemu | bochs | gdb | kvm DIR

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

install_rust_targets() {
    local tc
    tc=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
    for t in $(sed -n 's/^targets *= *\[\(.*\)\]/\1/p' rust-toolchain.toml | tr -d '",'); do
        if ! rustup +"$tc" target list --installed 2>/dev/null | grep -qx "$t"; then
            echo "ci: rustup target add $t ($tc)"
            rustup +"$tc" target add "$t"
        fi
    done
    for c in $(sed -n 's/^components *= *\[\(.*\)\]/\1/p' rust-toolchain.toml | tr -d '",'); do
        if ! rustup +"$tc" component list --installed 2>/dev/null | grep -q "^$c"; then
            echo "ci: rustup component add $c ($tc)"
            rustup +"$tc" component add "$c"
        fi
    done
}

LOCK_WAIT="${LIBVMM_APT_LOCK_WAIT:-600}"
LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)

# Whether another process holds one of apt's or dpkg's locks (needs fuser; without it apt-get's own
# lock timeout and the retry below do the waiting).
apt_locked() {
    command -v fuser >/dev/null || return 1
    $SUDO fuser "${LOCKS[@]}" >/dev/null 2>&1
}

# apt-get "$@", waiting (bounded by LOCK_WAIT seconds, polling) while another apt or dpkg holds the locks,
# and retrying when apt-get still fails on a lock.
apt_get() {
    local deadline=$((SECONDS + LOCK_WAIT)) out rc said=0
    while :; do
        while apt_locked && [ "$SECONDS" -lt "$deadline" ]; do
            [ "$said" = 1 ] || echo "ci: another apt/dpkg holds the package locks: waiting (up to ${LOCK_WAIT} s)"
            said=1
            sleep 3
        done
        local left=$((deadline - SECONDS))
        [ "$left" -gt 0 ] || left=1
        out=$($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$left" "$@" 2>&1) && rc=0 || rc=$?
        if [ "$rc" = 0 ]; then
            return 0
        fi
        if grep -qiE 'could not get lock|unable to acquire|unable to lock|is another process using it' <<<"$out" \
            && [ "$SECONDS" -lt "$deadline" ]; then
            [ "$said" = 1 ] || echo "ci: apt/dpkg lock busy: retrying (up to ${LOCK_WAIT} s)"
            said=1
            sleep 3
            continue
        fi
        printf '%s\n' "$out" >&2
        if grep -qiE 'could not get lock|unable to acquire|unable to lock' <<<"$out"; then
            echo "ci: the apt/dpkg lock was still held after ${LOCK_WAIT} s" >&2
        fi
        return "$rc"
    done
}

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        apt_get update -qq
        apt_updated=1
    fi
}

add_backports() {
    if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return
    fi
    # The first deb URI of the machine's own Debian sources (not the security archive).
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    [ -n "$uri" ] || { echo "ci: cannot find the machine's Debian mirror address" >&2; exit 1; }
    echo "ci: adding bookworm-backports from the machine's own mirror"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" | $SUDO tee /etc/apt/sources.list.d/libvmm-backports.sources >/dev/null
    apt_updated=0
}

install_qemu() {
    if command -v qemu-system-x86_64 >/dev/null && command -v qemu-system-riscv64 >/dev/null; then
        return
    fi
    add_backports
    apt_update
    apt_get install -y -qq -t bookworm-backports qemu-system-x86 qemu-system-misc
}

install_bochs() {
    local pkgs=()
    command -v bochs >/dev/null || pkgs+=(bochs bochsbios vgabios)
    command -v grub-mkrescue >/dev/null || pkgs+=(grub-pc-bin grub-common xorriso mtools)
    [ -d /usr/lib/grub/i386-pc ] || pkgs+=(grub-pc-bin)
    # UEFI as well: grub-mkrescue then makes one ISO that boots on BIOS and UEFI machines.
    [ -d /usr/lib/grub/x86_64-efi ] || pkgs+=(grub-efi-amd64-bin)
    command -v xorriso >/dev/null || pkgs+=(xorriso)
    command -v mformat >/dev/null || pkgs+=(mtools)
    # UEFI firmware for QEMU: the ISO's UEFI path is booted by `cargo xtask test` under OVMF.
    [ -f /usr/share/OVMF/OVMF_CODE.fd ] || pkgs+=(ovmf)
    [ ${#pkgs[@]} -gt 0 ] || return 0
    apt_update
    apt_get install -y -qq --no-install-recommends "${pkgs[@]}"
}

install_gdb() {
    local pkgs=()
    command -v gdb >/dev/null || pkgs+=(gdb)
    command -v gdb-multiarch >/dev/null || pkgs+=(gdb-multiarch)
    [ ${#pkgs[@]} -gt 0 ] || return 0
    apt_update
    apt_get install -y -qq --no-install-recommends "${pkgs[@]}"
}

# Debian's kernel (the package linux-image-amd64 points at), unpacked into $1/unpacked: boot/vmlinuz-* and the
# plain .ko modules under lib/modules/*/kernel/. Only for the KVM comparison of the bench.
fetch_kvm_kernel() {
    local dir="$1" pkg
    if compgen -G "$dir/unpacked/boot/vmlinuz-*" >/dev/null; then
        return 0
    fi
    mkdir -p "$dir"
    apt_update
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$pkg" ] || { echo "ci: apt-cache knows no linux-image-amd64 kernel" >&2; exit 1; }
    echo "ci: apt-get download $pkg"
    (cd "$dir" && apt-get download -qq "$pkg")
    dpkg-deb -x "$dir"/"$pkg"_*.deb "$dir/unpacked"
}

case "$want" in
    kvm) fetch_kvm_kernel "${2:?usage: $0 kvm DIR}" ;;
    all) install_rust_targets; install_qemu; install_bochs; install_gdb ;;
    rust) install_rust_targets ;;
    qemu) install_qemu ;;
    bochs) install_bochs ;;
    gdb) install_gdb ;;
    *) echo "usage: $0 [all|rust|qemu|bochs|gdb|kvm DIR]" >&2; exit 2 ;;
esac
