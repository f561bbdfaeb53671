// Package registry holds the test that checks server.json, this server's
// entry for the MCP registry, against the registry's own published schema.
package registry
