package knativetest

import (
	"fmt"
	"syscall"
)

// unshareNetwork moves the calling thread into a new network namespace.
func unshareNetwork() error {
	if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
	}
	return nil
}
