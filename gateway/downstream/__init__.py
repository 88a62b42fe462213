"""The MCP server agents talk to: HTTP (both eras on one endpoint) and stdio."""
