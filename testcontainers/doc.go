// Package integration holds the integration suite that runs the shipping
// artifacts for real: the server and backend-fake images built by ko
// (ko/build-local.sh), started by testcontainers-go on a Docker network, and
// the server also as a local process, all driven with the go-sdk MCP client.
//
// It needs a Docker daemon. Without one the tests skip with a line saying how
// to enable them, unless CI is set, when that is a failure. Set
// PORTFOLIO_MCP_SERVER_IMAGE and PORTFOLIO_MCP_FAKES_IMAGE to use images
// built beforehand instead of building them.
package integration
