//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// raiseNoFile is a no-op outside Linux; wsbench's /proc readings need Linux anyway.
func raiseNoFile() (soft, hard uint64, err error) { return 0, 0, nil }

func childAttr() *syscall.SysProcAttr { return nil }

func setAutogroupNice(int) error { return errors.New("autogroups are Linux only") }
