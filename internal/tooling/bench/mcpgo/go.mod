module github.com/portfolio-mcp/portfolio-mcp/internal/tooling/bench/mcpgo

go 1.26.8

require (
	github.com/mark3labs/mcp-go v1.2.1
	github.com/portfolio-mcp/portfolio-mcp v0.0.0
)

require (
	github.com/google/jsonschema-go v0.4.3 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.2 // indirect
	github.com/spf13/cast v1.10.0 // indirect
	github.com/yosida95/uritemplate/v3 v3.0.2 // indirect
	golang.org/x/text v0.43.0 // indirect
)

replace github.com/portfolio-mcp/portfolio-mcp => ../../../..
