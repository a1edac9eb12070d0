package main

// The client processes of a scale run: started, commanded and summed here.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// child is one scale-client process; call sends it a command and reads its answer.
type child struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	in  io.WriteCloser
	dec *json.Decoder
}

func (s *scale) startClients(ctx context.Context) error {
	cfg := s.cfg
	var targets []string
	for _, a := range s.apis {
		targets = append(targets, "ws://"+strings.TrimPrefix(a, "http://"))
	}
	for p := range cfg.Procs {
		lf, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("client-%d.log", p)))
		if err != nil {
			return err
		}
		cmd := exec.Command(cfg.ClientBin, "scale-client", "--target", strings.Join(targets, ","),
			"--conns", strconv.Itoa(s.maxPer), "--first", strconv.Itoa(p*s.maxPer),
			"--base", strconv.FormatInt(s.base.UnixNano(), 10), "--jwt-secret", cfg.JWTSecret,
			"--payload", strconv.Itoa(cfg.Payload), "--dial-concurrency", strconv.Itoa(cfg.DialConc))
		cmd.Stderr = lf
		cmd.SysProcAttr = childAttr()
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		outp, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		lf.Close() // the child has its own copy
		s.kids = append(s.kids, &child{cmd: cmd, in: in, dec: json.NewDecoder(bufio.NewReader(outp))})
	}
	_, err := s.callAll(ctx, func(int) string { return "stats" })
	return err
}

func (c *child) call(line string) (clientStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st clientStats
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		return st, err
	}
	if err := c.dec.Decode(&st); err != nil {
		return st, err
	}
	if st.Err != "" {
		return st, errors.New(st.Err)
	}
	return st, nil
}

// callAll sends each client process its command at once and returns the answers.
func (s *scale) callAll(ctx context.Context, line func(p int) string) ([]clientStats, error) {
	out := make([]clientStats, len(s.kids))
	errs := make([]error, len(s.kids))
	var wg sync.WaitGroup
	for p, k := range s.kids {
		wg.Go(func() { out[p], errs[p] = k.call(line(p)) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	for p, err := range errs {
		if err != nil {
			return out, fmt.Errorf("client process %d: %w", p, err)
		}
	}
	return out, nil
}

// sum adds the counters of every client process and merges their histograms.
func sum(sts []clientStats) (tot clientStats, h *histSnapshot) {
	h = &histSnapshot{}
	for _, st := range sts {
		tot.Connected += st.Connected
		tot.Errors += st.Errors
		tot.Open += st.Open
		tot.Received += st.Received
		tot.Dup += st.Dup
		tot.Reordered += st.Reordered
		tot.Probes += st.Probes
		tot.Closed += st.Closed
		tot.BadFrames += st.BadFrames
		tot.LastDelivery = max(tot.LastDelivery, st.LastDelivery)
		for code, n := range st.CloseCodes {
			if tot.CloseCodes == nil {
				tot.CloseCodes = map[string]int{}
			}
			tot.CloseCodes[code] += n
		}
		if st.Hist != nil {
			h.add(st.Hist)
		}
	}
	return tot, h
}

func (s *scale) killClients() {
	for _, k := range s.kids {
		if k.cmd.Process != nil {
			_ = k.cmd.Process.Kill()
		}
	}
}
