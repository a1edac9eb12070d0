//go:build !linux

package ws

import (
	"errors"
	"syscall"
)

// poller is Linux-only (epoll); elsewhere every connection keeps its own reader goroutine.
type poller struct{}

var errPollStopped = errors.New("ws: poller stopped")

func newPoller() (*poller, error) { return nil, errors.New("ws: no epoll on this platform") }
func (*poller) add(*Conn) error   { return errPollStopped }
func (*poller) rearm(*Conn) error { return errPollStopped }
func (*poller) take(*Conn) bool   { return false }
func (*poller) shut(*Conn) bool   { return false }
func (*poller) stop()             {}
func rawConn(any) syscall.RawConn { return nil }
