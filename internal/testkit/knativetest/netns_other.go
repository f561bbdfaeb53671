//go:build !linux

package knativetest

import "errors"

// unshareNetwork fails: network namespaces are Linux's.
func unshareNetwork() error { return errors.New("network namespaces need Linux") }
