//go:build !linux

package proc

import "syscall"

// Without Pdeathsig outside Linux, a test binary killed before its cleanups
// run can leave a server behind; the cleanups cover every normal exit.
func sysProcAttr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: group}
}
