// Command streamclient drives shimd's CRI streaming server with the same
// client-go code crictl v1.26.1 uses (cmd/crictl/exec.go, attach.go,
// portforward.go), so the tests talk to the server as kubelet's clients do.
//
//	streamclient stream [-stdin] [-tty] [-sizes 80x24,100x30] URL
//	    exec or attach: stdin from our stdin, output to our stdout/stderr;
//	    exits with the remote exit code (prints "exit code N" on stderr).
//	streamclient portforward URL LOCAL:REMOTE...
//	    prints "port LOCAL REMOTE" per forwarded port and "ready", then
//	    forwards until our stdin is closed.
//
// It is built offline inside a copy of the cri-tools v1.26.1 tree so the
// vendored modules resolve (see tests/test_cri_streaming.py).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
)

// sizeQueue hands out fixed terminal sizes, then blocks until the stream ends.
type sizeQueue struct {
	sizes []remotecommand.TerminalSize
	done  chan struct{}
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if len(q.sizes) == 0 {
		<-q.done
		return nil
	}
	s := q.sizes[0]
	q.sizes = q.sizes[1:]
	time.Sleep(50 * time.Millisecond)
	return &s
}

func parseSizes(spec string) ([]remotecommand.TerminalSize, error) {
	var out []remotecommand.TerminalSize
	for _, part := range strings.Split(spec, ",") {
		if part == "" {
			continue
		}
		wh := strings.SplitN(part, "x", 2)
		if len(wh) != 2 {
			return nil, fmt.Errorf("bad size %q", part)
		}
		w, err := strconv.Atoi(wh[0])
		if err != nil {
			return nil, err
		}
		h, err := strconv.Atoi(wh[1])
		if err != nil {
			return nil, err
		}
		out = append(out, remotecommand.TerminalSize{Width: uint16(w), Height: uint16(h)})
	}
	return out, nil
}

func stream(args []string) int {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	in := fs.Bool("stdin", false, "send our stdin")
	tty := fs.Bool("tty", false, "ask for a terminal")
	sizes := fs.String("sizes", "", "terminal sizes to send, WxH,WxH")
	fs.Parse(args)
	u, err := url.Parse(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// As crictl's stream(): an insecure rest config, POST.
	executor, err := remotecommand.NewSPDYExecutor(&restclient.Config{TLSClientConfig: restclient.TLSClientConfig{Insecure: true}}, "POST", u)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	opts := remotecommand.StreamOptions{Stdout: os.Stdout, Stderr: os.Stderr, Tty: *tty}
	if *in {
		opts.Stdin = os.Stdin
	}
	done := make(chan struct{})
	if *tty {
		opts.Stderr = nil // a terminal has one output, as in crictl
		list, err := parseSizes(*sizes)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		opts.TerminalSizeQueue = &sizeQueue{sizes: list, done: done}
	}
	err = executor.StreamWithContext(context.Background(), opts)
	close(done)
	var exitErr exec.CodeExitError
	if errors.As(err, &exitErr) {
		fmt.Fprintf(os.Stderr, "exit code %d\n", exitErr.Code)
		return exitErr.Code
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "stream error: %v\n", err)
		return 125
	}
	fmt.Fprintln(os.Stderr, "exit code 0")
	return 0
}

func portForward(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: streamclient portforward URL LOCAL:REMOTE...")
		return 2
	}
	u, err := url.Parse(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// As crictl's PortForward: spdy.RoundTripperFor an empty config, POST.
	transport, upgrader, err := spdy.RoundTripperFor(&restclient.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, args[1:], stop, ready, os.Stderr, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		fmt.Fprintf(os.Stderr, "forward error: %v\n", err)
		return 1
	}
	ports, err := pf.GetPorts()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, p := range ports {
		fmt.Printf("port %d %d\n", p.Local, p.Remote)
	}
	fmt.Println("ready")
	if err := <-errc; err != nil {
		fmt.Fprintf(os.Stderr, "forward error: %v\n", err)
		return 1
	}
	return 0
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: streamclient stream|portforward ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "stream":
		os.Exit(stream(os.Args[2:]))
	case "portforward":
		os.Exit(portForward(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}
