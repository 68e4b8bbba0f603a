// dittofs-standin: a stand-in for the DittoFS server (github.com/marmos91/dittofs),
// whose source cannot be fetched on the machines that build this project's
// test images. It is invoked the way the operator's default policy invokes
// DittoFS (/app/dittofs start --config /config/config.yaml), reads the same
// configuration, listens on the NFS port (TCP: accepts and closes, which is
// all the pod's tcpSocket probes need) and serves on the metrics port:
//
//	GET /metrics          Prometheus text (up, boot count, files, connections)
//	GET /healthz          "ok"
//	PUT /files/NAME       store the body (<= 1 MiB) in DATA/files/NAME
//	GET /files/NAME       read it back (404 when missing)
//	DELETE /files/NAME    remove it
//	GET /files/           the stored names, one per line
//
// DATA is /data/metadata (STANDIN_DATA_DIR overrides it), where a boot
// counter is kept too: together they show that data goes through the
// Service to the PVC and survives a pod deletion. It speaks no NFS.
//
// Failure to start (unreadable or unparsable configuration, a missing
// adapters.nfs.port or server.metrics.port, a port it cannot bind, a data
// directory it cannot write) writes the reason to /dev/termination-log
// (STANDIN_TERMINATION_LOG overrides it) and exits 1. STANDIN_FAIL=TEXT
// makes it fail at once with TEXT (the :crash image bakes it in).
// SIGTERM and SIGINT end it with status 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	version      = "0.1"
	maxFileBytes = 1 << 20
	maxConfig    = 4 << 20
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,255}$`)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// fail reports why the server cannot run, where Kubernetes shows it
// (the container's termination message) and on stderr, and exits 1.
func fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	path := env("STANDIN_TERMINATION_LOG", "/dev/termination-log")
	if err := os.WriteFile(path, []byte(msg+"\n"), 0o644); err != nil {
		log.Printf("cannot write the termination message to %s: %v", path, err)
	}
	log.Printf("fatal: %s", msg)
	os.Exit(1)
}

const usage = `dittofs-standin ` + version + `: a stand-in for the DittoFS server (no NFS)
usage: dittofs start --config FILE
       dittofs version`

type server struct {
	dataDir   string
	filesDir  string
	boots     int64
	nfsConns  atomic.Int64
	requests  atomic.Int64
	started   time.Time
	nfsPort   int
	metrics   int
	shares    []string
	configRaw string
}

func main() {
	log.SetOutput(os.Stdout)
	log.SetFlags(log.LstdFlags | log.LUTC | log.Lmicroseconds)
	log.SetPrefix("dittofs-standin: ")

	if msg := os.Getenv("STANDIN_FAIL"); msg != "" {
		fail("%s", msg)
	}
	args := os.Args[1:]
	if len(args) == 1 && (args[0] == "version" || args[0] == "--version") {
		fmt.Println("dittofs-standin", version)
		return
	}
	if len(args) == 1 && (args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
		fmt.Println(usage)
		return
	}
	if len(args) == 0 || args[0] != "start" {
		fail("usage error: %q\n%s", strings.Join(args, " "), usage)
	}
	configPath := ""
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case (a == "--config" || a == "-c") && i+1 < len(args):
			i++
			configPath = args[i]
		case strings.HasPrefix(a, "--config="):
			configPath = strings.TrimPrefix(a, "--config=")
		default:
			fail("usage error: unknown argument %q\n%s", a, usage)
		}
	}
	if configPath == "" {
		fail("usage error: start needs --config FILE\n%s", usage)
	}

	s := &server{started: time.Now(), dataDir: env("STANDIN_DATA_DIR", "/data/metadata")}
	s.filesDir = filepath.Join(s.dataDir, "files")
	s.loadConfig(configPath)
	s.prepareData()

	nfsLn, err := net.Listen("tcp", ":"+strconv.Itoa(s.nfsPort))
	if err != nil {
		fail("NFS adapter: %v", err)
	}
	metricsLn, err := net.Listen("tcp", ":"+strconv.Itoa(s.metrics))
	if err != nil {
		fail("metrics server: %v", err)
	}
	go s.acceptNFS(nfsLn)
	httpSrv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := httpSrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail("metrics server: %v", err)
		}
	}()
	log.Printf("started (boot %d): NFS port %d (TCP accept only, no NFS protocol), "+
		"metrics and file API on port %d, shares %v, data in %s",
		s.boots, s.nfsPort, s.metrics, s.shares, s.dataDir)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	got := <-sig
	log.Printf("%v: shutting down", got)
	nfsLn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(ctx)
	log.Printf("stopped")
}

func portOf(cfg any, path ...string) int {
	v, ok := lookup(cfg, path...)
	name := strings.Join(path, ".")
	if !ok || v == nil {
		fail("configuration: %s is missing", name)
	}
	str, _ := v.(string)
	n, err := strconv.Atoi(str)
	if err != nil || n < 1 || n > 65535 {
		fail("configuration: %s: %v is not a port number", name, v)
	}
	return n
}

func (s *server) loadConfig(path string) {
	f, err := os.Open(path)
	if err != nil {
		fail("configuration: %v", err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	f.Close()
	if err != nil {
		fail("configuration: %s: %v", path, err)
	}
	if len(raw) > maxConfig {
		fail("configuration: %s is larger than %d bytes", path, maxConfig)
	}
	cfg, err := parseYAML(string(raw))
	if err != nil {
		fail("configuration: %s: %v", path, err)
	}
	if _, ok := cfg.(map[string]any); !ok {
		fail("configuration: %s: not a mapping", path)
	}
	s.configRaw = string(raw)
	s.nfsPort = portOf(cfg, "adapters", "nfs", "port")
	s.metrics = portOf(cfg, "server", "metrics", "port")
	if s.nfsPort == s.metrics {
		fail("configuration: adapters.nfs.port and server.metrics.port are both %d", s.nfsPort)
	}
	if shares, ok := lookup(cfg, "shares"); ok {
		list, _ := shares.([]any)
		for _, sh := range list {
			if name, ok := lookup(sh, "name"); ok {
				if n, ok := name.(string); ok {
					s.shares = append(s.shares, n)
				}
			}
		}
	}
	// Like DittoFS opening its stores: the local directories must be usable.
	for _, dir := range storeDirs(cfg) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fail("store directory: %v", err)
		}
	}
}

// storeDirs lists the local paths the configuration's stores use
// (metadata.stores.*.badger.db_path, content.stores.*.filesystem.path).
func storeDirs(cfg any) []string {
	var out []string
	collect := func(section, kind, key string) {
		stores, _ := lookup(cfg, section, "stores")
		m, _ := stores.(map[string]any)
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if p, ok := lookup(m[n], kind, key); ok {
				if ps, ok := p.(string); ok && ps != "" {
					out = append(out, ps)
				}
			}
		}
	}
	collect("metadata", "badger", "db_path")
	collect("content", "filesystem", "path")
	return out
}

// prepareData makes the files directory and counts this boot.
func (s *server) prepareData() {
	if err := os.MkdirAll(s.filesDir, 0o755); err != nil {
		fail("data directory: %v", err)
	}
	countFile := filepath.Join(s.dataDir, "standin-boot-count")
	if b, err := os.ReadFile(countFile); err == nil {
		s.boots, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	} else if !errors.Is(err, os.ErrNotExist) {
		fail("boot counter: %v", err)
	}
	s.boots++
	if err := writeAtomic(countFile, []byte(strconv.FormatInt(s.boots, 10)+"\n")); err != nil {
		fail("boot counter: %v", err)
	}
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (s *server) acceptNFS(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("NFS accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.nfsConns.Add(1)
		c.Close()
	}
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, s.configRaw)
	})
	mux.HandleFunc("GET /files/{$}", s.handleList)
	mux.HandleFunc("GET /files/{name}", s.handleGet)
	mux.HandleFunc("PUT /files/{name}", s.handlePut)
	mux.HandleFunc("DELETE /files/{name}", s.handleDelete)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "dittofs-standin %s: a stand-in for DittoFS (no NFS); "+
			"see /metrics, /healthz, /config, /files/\n", version)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		mux.ServeHTTP(w, r)
	})
}

func (s *server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	files, _ := s.listFiles()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP dittofs_standin_up The DittoFS stand-in is running.\n"+
		"# TYPE dittofs_standin_up gauge\ndittofs_standin_up 1\n")
	fmt.Fprintf(w, "# HELP dittofs_standin_info Stand-in version and configured ports.\n"+
		"# TYPE dittofs_standin_info gauge\n"+
		"dittofs_standin_info{version=%q,nfs_port=\"%d\",metrics_port=\"%d\"} 1\n",
		version, s.nfsPort, s.metrics)
	fmt.Fprintf(w, "# HELP dittofs_standin_boot_count Starts recorded on the metadata volume.\n"+
		"# TYPE dittofs_standin_boot_count gauge\ndittofs_standin_boot_count %d\n", s.boots)
	fmt.Fprintf(w, "# HELP dittofs_standin_shares Shares in the configuration.\n"+
		"# TYPE dittofs_standin_shares gauge\ndittofs_standin_shares %d\n", len(s.shares))
	fmt.Fprintf(w, "# HELP dittofs_standin_files Files stored through the file API.\n"+
		"# TYPE dittofs_standin_files gauge\ndittofs_standin_files %d\n", len(files))
	fmt.Fprintf(w, "# HELP dittofs_standin_nfs_connections_total TCP connections accepted on the NFS port.\n"+
		"# TYPE dittofs_standin_nfs_connections_total counter\n"+
		"dittofs_standin_nfs_connections_total %d\n", s.nfsConns.Load())
	fmt.Fprintf(w, "# HELP dittofs_standin_http_requests_total HTTP requests served.\n"+
		"# TYPE dittofs_standin_http_requests_total counter\n"+
		"dittofs_standin_http_requests_total %d\n", s.requests.Load())
	fmt.Fprintf(w, "# HELP dittofs_standin_start_time_seconds Start time (Unix seconds).\n"+
		"# TYPE dittofs_standin_start_time_seconds gauge\n"+
		"dittofs_standin_start_time_seconds %d\n", s.started.Unix())
}

func (s *server) listFiles() ([]string, error) {
	entries, err := os.ReadDir(s.filesDir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && nameRE.MatchString(e.Name()) && !strings.HasPrefix(e.Name(), ".tmp-") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func (s *server) fileName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if !nameRE.MatchString(name) || name == "." || name == ".." || strings.HasPrefix(name, ".tmp-") {
		http.Error(w, "bad file name: [A-Za-z0-9._-]{1,255}, not . or ..", http.StatusBadRequest)
		return "", false
	}
	return filepath.Join(s.filesDir, name), true
}

func (s *server) handleList(w http.ResponseWriter, r *http.Request) {
	names, err := s.listFiles()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, n := range names {
		fmt.Fprintln(w, n)
	}
}

func (s *server) handleGet(w http.ResponseWriter, r *http.Request) {
	path, ok := s.fileName(w, r)
	if !ok {
		return
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func (s *server) handlePut(w http.ResponseWriter, r *http.Request) {
	path, ok := s.fileName(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFileBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body larger than %d bytes", maxFileBytes),
				http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := writeAtomic(path, body); err != nil {
		log.Printf("PUT %s: %v", r.URL.Path, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	log.Printf("stored %s (%d bytes)", filepath.Base(path), len(body))
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "stored %d bytes\n", len(body))
}

func (s *server) handleDelete(w http.ResponseWriter, r *http.Request) {
	path, ok := s.fileName(w, r)
	if !ok {
		return
	}
	if err := os.Remove(path); errors.Is(err, os.ErrNotExist) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
