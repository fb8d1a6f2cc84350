# Sourced (not run) by scripts/install-etcd.sh and scripts/install-etcd-client.sh:
# install one tool from its Debian package, idempotently.
#
#   install_debian_tool TOOL PACKAGE
#
# Prints the tool's path on stdout (the caller prints its version).  Does
# nothing but find it when TOOL is already on PATH or in /usr/bin.  Otherwise
# needs apt-get and root (or sudo); it tries the install from the apt lists
# already on the machine first and runs `apt-get update` only when that fails,
# because the update is most of the cost and a CI image often has fresh lists.
# Returns 1 with a one-line reason on stderr when the tool cannot be had, so
# .ci/run can go on and the tests that need it skip (or fail under CI=true,
# see tests/conftest.py) naming the package.

find_debian_tool() {
    command -v "$1" 2>/dev/null || { [ -x "/usr/bin/$1" ] && echo "/usr/bin/$1"; } || true
}

install_debian_tool() {
    local tool="$1" pkg="$2" path sudo=""
    path="$(find_debian_tool "$tool")"
    if [ -n "$path" ]; then
        echo "$path"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install $pkg: apt-get not found; install $tool by other means" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "install $pkg: run as root (apt-get install needs it)" >&2
            return 1
        fi
    fi
    # apt's progress goes to stderr so that stdout stays the tool's path.
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$pkg" >&2; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get update >&2 || {
            echo "install $pkg: apt-get update failed (no network?)" >&2
            return 1
        }
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$pkg" >&2 || {
            echo "install $pkg: apt-get install failed" >&2
            return 1
        }
    fi
    path="$(find_debian_tool "$tool")"
    if [ -z "$path" ]; then
        echo "install $pkg: package installed but no $tool binary found" >&2
        return 1
    fi
    echo "$path"
}
