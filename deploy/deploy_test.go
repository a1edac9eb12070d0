// Package deploy_test checks the deployment files against each other and
// against the gateway: the Kubernetes manifests in k8s/, the Dockerfile and the
// repository's docker-compose.yml. They are not Go, so nothing else would
// notice a probe on the wrong path, a grace period shorter than the drain, a
// Service that selects no pod or a setting the gateway does not know.
package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/wsgateway/wsgateway/internal/config"
)

const (
	k8sDir      = "k8s"
	composeFile = "../docker-compose.yml"
	dockerfile  = "Dockerfile"
	gatewayPort = 8080
)

// doc is one decoded YAML document and where it came from.
type doc struct {
	file string
	obj  map[string]any
}

func (d doc) kind() string { return str(get(d.obj, "kind")) }
func (d doc) name() string { return str(get(d.obj, "metadata", "name")) }
func (d doc) String() string {
	return fmt.Sprintf("%s %s/%s", d.file, d.kind(), d.name())
}

// docSep matches a YAML document marker line: "---" (start) or "..." (end),
// optionally followed by whitespace or a comment.
var docSep = regexp.MustCompile(`^(---|\.\.\.)(\s.*)?$`)

// splitDocs splits a YAML stream into its documents. A marker only counts at
// the start of a line: indented content (block scalars) cannot hold one.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if docSep.MatchString(line) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, cur.Bytes())
}

// decodeAll decodes every non-empty document of a YAML file.
func decodeAll(t *testing.T, path string) []doc {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []doc
	for i, raw := range splitDocs(data) {
		var obj map[string]any
		if err := yaml.UnmarshalStrict(raw, &obj); err != nil {
			t.Fatalf("%s: document %d: %v", path, i+1, err)
		}
		if obj == nil { // empty or comment-only document
			continue
		}
		out = append(out, doc{file: filepath.Base(path), obj: obj})
	}
	return out
}

// k8sFiles lists deploy/k8s/*.yaml (and *.yml, which kustomization must not
// forget either).
func k8sFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(k8sDir, pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	slices.Sort(files)
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", k8sDir)
	}
	return files
}

// manifests decodes every Kubernetes object in deploy/k8s (without the
// kustomization itself).
func manifests(t *testing.T) []doc {
	t.Helper()
	var all []doc
	for _, f := range k8sFiles(t) {
		for _, d := range decodeAll(t, f) {
			if d.kind() != "Kustomization" {
				all = append(all, d)
			}
		}
	}
	return all
}

func ofKind(docs []doc, kind string) []doc {
	var out []doc
	for _, d := range docs {
		if d.kind() == kind {
			out = append(out, d)
		}
	}
	return out
}

func find(docs []doc, kind, name string) (doc, bool) {
	for _, d := range docs {
		if d.kind() == kind && d.name() == name {
			return d, true
		}
	}
	return doc{}, false
}

// get walks maps (string keys) and lists (int indices); nil when missing.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k < 0 || k >= len(l) {
				return nil
			}
			v = l[k]
		default:
			panic(fmt.Sprintf("get: bad path element %T", p))
		}
	}
	return v
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// num returns a YAML number (float64 after the JSON round trip) or a numeric
// string as a float.
func num(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case string:
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil
	}
	return 0, false
}

// subset reports whether every label of sel is in labels (and sel is not
// empty, which would select everything).
func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// gateway is the gateway Deployment and its container, found as the
// Deployment whose container takes settings through envFrom.
type gateway struct {
	dep       doc
	podSpec   map[string]any
	podLabels map[string]any
	container map[string]any
}

func findGateway(t *testing.T, docs []doc) gateway {
	t.Helper()
	for _, d := range ofKind(docs, "Deployment") {
		for _, c := range list(get(d.obj, "spec", "template", "spec", "containers")) {
			if len(list(get(c, "envFrom"))) > 0 {
				return gateway{
					dep:       d,
					podSpec:   mapOf(get(d.obj, "spec", "template", "spec")),
					podLabels: mapOf(get(d.obj, "spec", "template", "metadata", "labels")),
					container: mapOf(c),
				}
			}
		}
	}
	t.Fatal("no Deployment with an envFrom container (the gateway) in deploy/k8s")
	return gateway{}
}

// selectedBy returns whether the label selector at path of an object matches the gateway pods.
func (g gateway) selectedBy(path ...any) func(doc) bool {
	return func(d doc) bool { return subset(mapOf(get(d.obj, path...)), g.podLabels) }
}

// serving returns the objects of kind that serve the gateway (for which serves is true) and
// fails the test when there is none: each of these kinds exists for the gateway's pods.
func (g gateway) serving(t *testing.T, docs []doc, kind string, serves func(doc) bool) []doc {
	t.Helper()
	var out []doc
	for _, d := range ofKind(docs, kind) {
		if serves(d) {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s in deploy/k8s selects the gateway pod labels %v or targets %s", kind, g.podLabels, g.dep)
	}
	return out
}

// resolvePort turns a port (number or name of a container port) into a
// number.
func (g gateway) resolvePort(p any) (int, bool) {
	if n, ok := p.(float64); ok {
		return int(n), true
	}
	name := str(p)
	for _, cp := range list(get(g.container, "ports")) {
		if str(get(cp, "name")) == name {
			n, ok := num(get(cp, "containerPort"))
			return int(n), ok
		}
	}
	return 0, false
}

// configEnv is the gateway's environment as Kubernetes builds it: envFrom
// ConfigMaps and Secrets, then env values (fieldRefs become a placeholder).
func configEnv(t *testing.T, docs []doc, g gateway) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range list(get(g.container, "envFrom")) {
		if name := str(get(ef, "configMapRef", "name")); name != "" {
			cm, ok := find(docs, "ConfigMap", name)
			if !ok {
				t.Fatalf("envFrom configMapRef %q: no such ConfigMap in deploy/k8s", name)
			}
			for k, v := range mapOf(get(cm.obj, "data")) {
				env[k] = str(v)
			}
		}
		if name := str(get(ef, "secretRef", "name")); name != "" {
			s, ok := find(docs, "Secret", name)
			if !ok {
				t.Fatalf("envFrom secretRef %q: no such Secret in deploy/k8s", name)
			}
			if len(mapOf(get(s.obj, "data"))) > 0 {
				t.Errorf("%s: use stringData (placeholders readable in review), not base64 data", s)
			}
			for k, v := range mapOf(get(s.obj, "stringData")) {
				env[k] = str(v)
			}
		}
	}
	for _, e := range list(get(g.container, "env")) {
		if get(e, "valueFrom") != nil {
			env[str(get(e, "name"))] = "from-" + str(get(e, "valueFrom", "fieldRef", "fieldPath"))
			continue
		}
		env[str(get(e, "name"))] = str(get(e, "value"))
	}
	return env
}

// knownSettings returns the GATEWAY_* variables the gateway understands,
// from its own --help.
func knownSettings(t *testing.T) map[string]bool {
	t.Helper()
	var usage bytes.Buffer
	if _, err := config.Parse([]string{"--help"}, nil, &usage); err != config.ErrHelp {
		t.Fatalf("config.Parse(--help) = %v, want ErrHelp", err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`).FindAllStringSubmatch(usage.String(), -1) {
		known["GATEWAY_"+strings.ToUpper(strings.ReplaceAll(m[1], "-", "_"))] = true
	}
	if len(known) < 5 {
		t.Fatalf("found only %d settings in --help output:\n%s", len(known), usage.String())
	}
	return known
}

// checkSettings asserts that env names only settings the gateway knows and
// that the gateway accepts the values (as it would at start-up). Empty
// credentials are filled in, since placeholders may be deliberately empty.
func checkSettings(t *testing.T, where string, env map[string]string) config.Config {
	t.Helper()
	known := knownSettings(t)
	var environ []string
	for k, v := range env {
		if strings.HasPrefix(k, "GATEWAY_") && !known[k] {
			t.Errorf("%s: %s is not a gateway setting (see gateway --help)", where, k)
		}
		if (k == "GATEWAY_JWT_SECRET" || k == "GATEWAY_API_KEYS") && v == "" {
			v = "test-placeholder-of-32-bytes-or-more"
		}
		environ = append(environ, k+"="+v)
	}
	slices.Sort(environ)
	cfg, err := config.Parse(nil, environ, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("%s: the gateway would refuse this environment: %v\n%s", where, err, strings.Join(environ, "\n"))
	}
	return cfg
}

func TestSplitDocs(t *testing.T) {
	in := "# c\na: 1\n---\nb: |\n  ---\n  x\n--- # next\n...\n---\nc: 3\n"
	got := splitDocs([]byte(in))
	var nonEmpty []string
	for _, d := range got {
		if s := strings.TrimSpace(string(d)); s != "" {
			nonEmpty = append(nonEmpty, s)
		}
	}
	want := []string{"# c\na: 1", "b: |\n  ---\n  x", "c: 3"}
	if !slices.Equal(nonEmpty, want) {
		t.Fatalf("splitDocs = %q, want %q", nonEmpty, want)
	}
}

func TestManifestsWellFormed(t *testing.T) {
	docs := manifests(t)
	seen := map[string]string{}
	for _, d := range docs {
		if str(get(d.obj, "apiVersion")) == "" || d.kind() == "" || d.name() == "" {
			t.Errorf("%s: apiVersion, kind and metadata.name are required", d)
		}
		if ns := get(d.obj, "metadata", "namespace"); ns != nil {
			t.Errorf("%s: metadata.namespace %v: the manifests are namespace-agnostic", d, ns)
		}
		key := d.kind() + "/" + d.name()
		if prev, dup := seen[key]; dup {
			t.Errorf("%s defined in %s and %s", key, prev, d.file)
		}
		seen[key] = d.file
	}
}

func TestKustomizationListsEveryFile(t *testing.T) {
	kdocs := decodeAll(t, filepath.Join(k8sDir, "kustomization.yaml"))
	if len(kdocs) != 1 || kdocs[0].kind() != "Kustomization" {
		t.Fatalf("kustomization.yaml: want one Kustomization document, got %d", len(kdocs))
	}
	var listed []string
	for _, r := range list(get(kdocs[0].obj, "resources")) {
		listed = append(listed, str(r))
	}
	if ns := get(kdocs[0].obj, "namespace"); ns != nil {
		t.Errorf("kustomization.yaml sets namespace %v; the base is namespace-agnostic", ns)
	}
	var files []string
	for _, f := range k8sFiles(t) {
		if b := filepath.Base(f); b != "kustomization.yaml" && b != "kustomization.yml" {
			files = append(files, b)
		}
	}
	for _, f := range files {
		if !slices.Contains(listed, f) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}
	for _, r := range listed {
		if !slices.Contains(files, r) {
			t.Errorf("kustomization.yaml lists %q, which is not a file in %s", r, k8sDir)
		}
	}
}

func TestDeployment(t *testing.T) {
	docs := manifests(t)
	g := findGateway(t, docs)
	c := g.container

	for _, p := range []struct{ probe, path string }{
		{"readinessProbe", "/readyz"},
		{"livenessProbe", "/healthz"},
	} {
		if got := str(get(c, p.probe, "httpGet", "path")); got != p.path {
			t.Errorf("%s: %s.httpGet.path = %q, want %q", g.dep, p.probe, got, p.path)
		}
		if port, ok := g.resolvePort(get(c, p.probe, "httpGet", "port")); !ok || port != gatewayPort {
			t.Errorf("%s: %s port resolves to %d, want %d", g.dep, p.probe, port, gatewayPort)
		}
	}

	// A failing startup probe restarts the container, so it must not depend
	// on Redis either: pods starting during a Redis outage would loop.
	if sp := get(c, "startupProbe"); sp != nil {
		if got := str(get(sp, "httpGet", "path")); got != "/healthz" {
			t.Errorf("%s: startupProbe.httpGet.path = %q, want /healthz (a restart does not bring Redis back)", g.dep, got)
		}
	}

	// The drain must finish before the SIGKILL: grace > preStop + shutdown-grace.
	env := configEnv(t, docs, g)
	cfg := checkSettings(t, g.dep.String(), env)
	if _, ok := env["GATEWAY_SHUTDOWN_GRACE"]; !ok {
		t.Errorf("%s: GATEWAY_SHUTDOWN_GRACE is not set in the ConfigMap; the deadline check would rest on the default", g.dep)
	}
	grace, err := time.ParseDuration(env["GATEWAY_SHUTDOWN_GRACE"])
	if err != nil {
		grace = cfg.ShutdownGrace
	}
	preStop := get(c, "lifecycle", "preStop")
	if preStop == nil {
		t.Fatalf("%s: no lifecycle.preStop: the pod would get SIGTERM before the load balancers stop sending to it", g.dep)
	}
	sleepSec, ok := num(get(preStop, "sleep", "seconds"))
	if !ok || sleepSec <= 0 {
		t.Errorf("%s: preStop = %v, want sleep.seconds > 0 (the image has no shell for an exec sleep)", g.dep, preStop)
	}
	tgps, ok := num(get(g.podSpec, "terminationGracePeriodSeconds"))
	if !ok {
		t.Fatalf("%s: terminationGracePeriodSeconds not set (default 30s is not above the drain)", g.dep)
	}
	need := grace + time.Duration(sleepSec*float64(time.Second))
	if time.Duration(tgps*float64(time.Second)) <= need {
		t.Errorf("%s: terminationGracePeriodSeconds %vs <= shutdown grace %v + preStop %vs: the drain would be SIGKILLed",
			g.dep, tgps, grace, sleepSec)
	}

	for _, r := range []string{"cpu", "memory"} {
		if get(c, "resources", "requests", r) == nil {
			t.Errorf("%s: resources.requests.%s not set (the HPA's CPU target needs requests)", g.dep, r)
		}
	}

	// The container's securityContext wins over the pod's.
	nonRoot := get(c, "securityContext", "runAsNonRoot")
	if nonRoot == nil {
		nonRoot = get(g.podSpec, "securityContext", "runAsNonRoot")
	}
	if nonRoot != true {
		t.Errorf("%s: runAsNonRoot is %v, want true", g.dep, nonRoot)
	}
	if get(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Errorf("%s: securityContext.readOnlyRootFilesystem is not true", g.dep)
	}
	if get(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("%s: securityContext.allowPrivilegeEscalation is not false", g.dep)
	}
	if drop := list(get(c, "securityContext", "capabilities", "drop")); !slices.Contains(drop, any("ALL")) {
		t.Errorf("%s: capabilities.drop = %v, want ALL", g.dep, drop)
	}

	var nodeID any
	for _, e := range list(get(c, "env")) {
		if str(get(e, "name")) == "GATEWAY_NODE_ID" {
			nodeID = get(e, "valueFrom", "fieldRef", "fieldPath")
		}
	}
	if nodeID != "metadata.name" {
		t.Errorf("%s: GATEWAY_NODE_ID fieldRef = %v, want metadata.name (unique per pod)", g.dep, nodeID)
	}

	if got := get(g.dep.obj, "spec", "strategy", "rollingUpdate", "maxUnavailable"); got != float64(0) {
		t.Errorf("%s: rollingUpdate.maxUnavailable = %v, want 0 (keep capacity during a rollout)", g.dep, got)
	}
	if sel := mapOf(get(g.dep.obj, "spec", "selector", "matchLabels")); !subset(sel, g.podLabels) {
		t.Errorf("%s: selector %v does not match the pod labels %v", g.dep, sel, g.podLabels)
	}
}

func TestConfigMapAndSecret(t *testing.T) {
	docs := manifests(t)
	g := findGateway(t, docs)
	var cms, secrets int
	for _, ef := range list(get(g.container, "envFrom")) {
		if get(ef, "configMapRef", "name") != nil {
			cms++
		}
		if get(ef, "secretRef", "name") != nil {
			secrets++
		}
	}
	if cms == 0 || secrets == 0 {
		t.Fatalf("%s: envFrom has %d ConfigMaps and %d Secrets, want at least one of each", g.dep, cms, secrets)
	}
	env := configEnv(t, docs, g) // fails when a referenced object is missing
	for _, k := range []string{"GATEWAY_REDIS_URL", "GATEWAY_SHUTDOWN_GRACE", "GATEWAY_JWT_SECRET", "GATEWAY_API_KEYS"} {
		if _, ok := env[k]; !ok {
			t.Errorf("%s: %s not provided through envFrom/env", g.dep, k)
		}
	}
	// Credentials belong in the Secret, never in the ConfigMap.
	for _, cm := range ofKind(docs, "ConfigMap") {
		for k := range mapOf(get(cm.obj, "data")) {
			if k == "GATEWAY_JWT_SECRET" || k == "GATEWAY_API_KEYS" {
				t.Errorf("%s: %s belongs in the Secret", cm, k)
			}
		}
	}
}

func TestService(t *testing.T) {
	docs := manifests(t)
	g := findGateway(t, docs)
	for _, s := range g.serving(t, docs, "Service", g.selectedBy("spec", "selector")) {
		var to8080 bool
		for _, p := range list(get(s.obj, "spec", "ports")) {
			if port, ok := g.resolvePort(get(p, "targetPort")); ok && port == gatewayPort {
				to8080 = true
			}
		}
		if !to8080 {
			t.Errorf("%s: selects the gateway pods but no port targets %d", s, gatewayPort)
		}
		if aff := str(get(s.obj, "spec", "sessionAffinity")); aff != "" && aff != "None" {
			t.Errorf("%s: sessionAffinity %s: any node serves any user, affinity only skews load", s, aff)
		}
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	docs := manifests(t)
	g := findGateway(t, docs)
	for _, p := range g.serving(t, docs, "PodDisruptionBudget", g.selectedBy("spec", "selector", "matchLabels")) {
		if get(p.obj, "spec", "minAvailable") == nil && get(p.obj, "spec", "maxUnavailable") == nil {
			t.Errorf("%s: neither minAvailable nor maxUnavailable set", p)
		}
	}
}

func TestHorizontalPodAutoscaler(t *testing.T) {
	docs := manifests(t)
	g := findGateway(t, docs)
	targets := func(h doc) bool {
		return str(get(h.obj, "spec", "scaleTargetRef", "kind")) == "Deployment" &&
			str(get(h.obj, "spec", "scaleTargetRef", "name")) == g.dep.name()
	}
	for _, h := range g.serving(t, docs, "HorizontalPodAutoscaler", targets) {
		if v := str(get(h.obj, "apiVersion")); v != "autoscaling/v2" {
			t.Errorf("%s: apiVersion %s, want autoscaling/v2", h, v)
		}
		lo, _ := num(get(h.obj, "spec", "minReplicas"))
		hi, _ := num(get(h.obj, "spec", "maxReplicas"))
		if lo < 2 || hi < lo {
			t.Errorf("%s: minReplicas %v, maxReplicas %v: want 2 <= min <= max", h, lo, hi)
		}
		if w, _ := num(get(h.obj, "spec", "behavior", "scaleDown", "stabilizationWindowSeconds")); w < 300 {
			t.Errorf("%s: scaleDown stabilization %vs: below 300s it churns connections", h, w)
		}
	}
}

// TestKustomizeBuild renders the base with kustomize (kubectl's built-in one
// or the standalone binary) when either is installed: it catches what the
// YAML checks cannot, such as a resource kustomize refuses.
func TestKustomizeBuild(t *testing.T) {
	var args []string
	if p, err := exec.LookPath("kustomize"); err == nil {
		args = []string{p, "build", k8sDir}
	} else if p, err := exec.LookPath("kubectl"); err == nil {
		args = []string{p, "kustomize", k8sDir}
	} else {
		t.Skip("neither kustomize nor kubectl is installed")
	}
	c := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	kinds := map[string]bool{}
	for _, raw := range splitDocs(out) {
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			t.Fatalf("decoding kustomize output: %v", err)
		}
		if obj != nil {
			kinds[str(get(obj, "kind"))] = true
		}
	}
	for _, k := range []string{"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} {
		if !kinds[k] {
			t.Errorf("kustomize output has no %s (kinds: %v)", k, kinds)
		}
	}
}

// --- docker-compose ----------------------------------------------------------

// composeCmd returns the command that runs Compose: Debian's docker-compose
// or the docker compose v2 plugin.
func composeCmd(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if p, err := exec.LookPath("docker"); err == nil && exec.Command(p, "compose", "version").Run() == nil {
		return []string{p, "compose"}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("docker-compose is not installed (required when CI is set)")
	}
	t.Skip("docker-compose is not installed")
	return nil
}

func envOf(svc any) map[string]string {
	env := map[string]string{}
	switch e := get(svc, "environment").(type) {
	case map[string]any:
		for k, v := range e {
			switch v := v.(type) {
			case string:
				env[k] = v
			case nil:
				env[k] = ""
			default:
				env[k] = fmt.Sprint(v)
			}
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(str(kv), "=")
			env[k] = v
		}
	}
	return env
}

func dependsOn(svc any) []string {
	var out []string
	switch d := get(svc, "depends_on").(type) {
	case []any:
		for _, n := range d {
			out = append(out, str(n))
		}
	case map[string]any:
		for n := range d {
			out = append(out, n)
		}
	}
	return out
}

// publishes reports whether a port entry (short "8080:8080" or long form)
// publishes host port p.
func publishes(entry any, p int) bool {
	if s, ok := entry.(string); ok {
		parts := strings.Split(strings.TrimSuffix(s, "/tcp"), ":")
		return len(parts) >= 2 && parts[len(parts)-2] == strconv.Itoa(p)
	}
	n, ok := num(get(entry, "published"))
	return ok && int(n) == p
}

// mountsNginxConf reports whether a volume entry (short or long form) binds
// deploy/nginx.conf onto /etc/nginx/nginx.conf.
func mountsNginxConf(entry any) bool {
	src, dst := str(get(entry, "source")), str(get(entry, "target"))
	if s, ok := entry.(string); ok {
		parts := strings.Split(s, ":")
		if len(parts) < 2 {
			return false
		}
		src, dst = parts[0], parts[1]
	}
	return strings.HasSuffix(filepath.ToSlash(filepath.Clean(src)), "deploy/nginx.conf") && dst == "/etc/nginx/nginx.conf"
}

// checkCompose asserts the shape of a compose configuration, raw or as
// `docker-compose config` resolved it.
func checkCompose(t *testing.T, where string, cfg map[string]any) {
	t.Helper()
	services := mapOf(get(cfg, "services"))
	for _, name := range []string{"redis", "gateway1", "gateway2", "gateway3", "nginx"} {
		if services[name] == nil {
			t.Errorf("%s: no service %s", where, name)
		}
	}
	if !strings.HasPrefix(str(get(services, "redis", "image")), "redis:") {
		t.Errorf("%s: redis image = %v", where, get(services, "redis", "image"))
	}
	if get(services, "redis", "healthcheck", "test") == nil {
		t.Errorf("%s: redis has no healthcheck (the gateways wait for it)", where)
	}

	nodeIDs := map[string]bool{}
	for _, name := range []string{"gateway1", "gateway2", "gateway3"} {
		svc := services[name]
		if svc == nil {
			continue
		}
		if df := str(get(svc, "build", "dockerfile")); filepath.ToSlash(df) != "deploy/Dockerfile" {
			t.Errorf("%s: %s build.dockerfile = %q, want deploy/Dockerfile", where, name, df)
		}
		env := envOf(svc)
		if u := env["GATEWAY_REDIS_URL"]; !strings.HasPrefix(u, "redis://redis:6379") {
			t.Errorf("%s: %s GATEWAY_REDIS_URL = %q, want the redis service", where, name, u)
		}
		id := env["GATEWAY_NODE_ID"]
		if id == "" || nodeIDs[id] {
			t.Errorf("%s: %s GATEWAY_NODE_ID = %q, want unique", where, name, id)
		}
		nodeIDs[id] = true
		if !slices.Contains(dependsOn(svc), "redis") {
			t.Errorf("%s: %s does not depend on redis", where, name)
		}
		cfg := checkSettings(t, where+" "+name, env)
		stop, err := time.ParseDuration(str(get(svc, "stop_grace_period")))
		if err != nil || stop <= cfg.ShutdownGrace {
			t.Errorf("%s: %s stop_grace_period %v must exceed the shutdown grace %v (default 10s SIGKILLs the drain)",
				where, name, get(svc, "stop_grace_period"), cfg.ShutdownGrace)
		}
		nofile := get(svc, "ulimits", "nofile")
		if m := mapOf(nofile); m != nil {
			nofile = m["soft"]
		}
		if n, ok := num(nofile); !ok || n < 65536 {
			t.Errorf("%s: %s ulimits.nofile = %v, want >= 65536", where, name, get(svc, "ulimits", "nofile"))
		}
	}

	nginx := services["nginx"]
	if !slices.ContainsFunc(list(get(nginx, "ports")), func(p any) bool { return publishes(p, 8080) }) {
		t.Errorf("%s: nginx does not publish 8080: ports %v", where, get(nginx, "ports"))
	}
	if !slices.ContainsFunc(list(get(nginx, "volumes")), mountsNginxConf) {
		t.Errorf("%s: nginx does not mount deploy/nginx.conf at /etc/nginx/nginx.conf: volumes %v", where, get(nginx, "volumes"))
	}
	for _, gw := range []string{"gateway1", "gateway2", "gateway3"} {
		if !slices.Contains(dependsOn(nginx), gw) {
			t.Errorf("%s: nginx does not depend on %s (it resolves upstream names at start)", where, gw)
		}
	}
}

// TestComposeFile checks the file as written; it needs no docker-compose.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	checkCompose(t, composeFile, cfg)
}

// TestComposeConfig validates the file with Compose itself and checks the
// configuration as Compose resolved it (anchors merged, paths absolute).
func TestComposeConfig(t *testing.T) {
	cmd := composeCmd(t)
	run := func(args ...string) []byte {
		t.Helper()
		c := exec.Command(cmd[0], append(append(cmd[1:], "-f", composeFile, "config"), args...)...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c.Args, " "), err, stderr.String())
		}
		return out
	}
	run("-q")
	var cfg map[string]any
	if err := yaml.Unmarshal(run(), &cfg); err != nil {
		t.Fatalf("decoding the output of compose config: %v", err)
	}
	checkCompose(t, "compose config", cfg)
}

// --- Dockerfile --------------------------------------------------------------

// instruction is one Dockerfile instruction with continuations joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return
		}
		c, a, _ := strings.Cut(s, " ")
		out = append(out, instruction{cmd: strings.ToUpper(c), args: strings.TrimSpace(a)})
	}
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments (and parser directives) may sit inside continuations
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return out
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, dockerfile)
	last := -1
	for i, in := range ins {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last < 1 {
		t.Fatalf("%s: want a multi-stage build (builder, then a final FROM)", dockerfile)
	}
	build, final := ins[:last], ins[last:]

	var cgoOff bool
	for _, in := range build {
		if in.cmd == "RUN" && strings.Contains(in.args, "CGO_ENABLED=0") && strings.Contains(in.args, "go build") {
			cgoOff = true
		}
	}
	if !cgoOff {
		t.Errorf("%s: no RUN with CGO_ENABLED=0 go build in the builder (the final image has no libc)", dockerfile)
	}

	user, healthcheck, expose := "", "", false
	var copied []string
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "HEALTHCHECK":
			healthcheck = in.args
		case "EXPOSE":
			expose = expose || slices.Contains(strings.Fields(in.args), strconv.Itoa(gatewayPort))
		case "COPY":
			f := strings.Fields(in.args)
			copied = append(copied, f[len(f)-1])
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("%s: final stage USER = %q, want a non-root user", dockerfile, user)
	}
	if !strings.Contains(healthcheck, "CMD") || strings.EqualFold(strings.TrimSpace(healthcheck), "NONE") {
		t.Errorf("%s: final stage HEALTHCHECK = %q, want one with CMD", dockerfile, healthcheck)
	} else if !strings.Contains(healthcheck, "/healthcheck") || !slices.Contains(copied, "/healthcheck") {
		t.Errorf("%s: HEALTHCHECK %q must run /healthcheck, which the final stage must COPY (copied: %v)", dockerfile, healthcheck, copied)
	}
	if !expose {
		t.Errorf("%s: final stage does not EXPOSE %d", dockerfile, gatewayPort)
	}
}

// TestDockerignoreKeepsSources guards the build context: .dockerignore must
// not drop what `go build` needs.
func TestDockerignoreKeepsSources(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum", "cmd/gateway/main.go", "internal/server", "deploy/healthcheck/main.go", "deploy/Dockerfile"}
	for _, line := range strings.Split(string(data), "\n") {
		pat := strings.TrimSpace(line)
		if pat == "" || strings.HasPrefix(pat, "#") || strings.HasPrefix(pat, "!") {
			continue
		}
		pat = strings.TrimPrefix(pat, "/")
		for _, p := range needed {
			if ignores(pat, p) {
				t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", pat, p)
			}
		}
	}
}

// ignores approximates .dockerignore matching: a pattern excludes a path when
// it matches the path or one of its parent directories; a leading **/ matches
// at any depth.
func ignores(pat, path string) bool {
	segs := strings.Split(path, "/")
	for i := 1; i <= len(segs); i++ {
		prefix := strings.Join(segs[:i], "/")
		if ok, _ := filepath.Match(pat, prefix); ok {
			return true
		}
		if rest, ok := strings.CutPrefix(pat, "**/"); ok {
			for j := range i {
				if ok, _ := filepath.Match(rest, strings.Join(segs[j:i], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

// TestHealthcheckBinary builds deploy/healthcheck and runs it against a fake
// gateway: exit 0 only on a 200 from the configured URL.
func TestHealthcheckBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "healthcheck")
	if out, err := exec.Command("go", "build", "-o", bin, "./healthcheck").CombinedOutput(); err != nil {
		t.Fatalf("go build ./healthcheck: %v\n%s", err, out)
	}
	var status atomic.Int32 // set by the test, read by the server goroutine
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()

	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL + "/healthz"
	closed.Close()

	for _, tc := range []struct {
		name   string
		status int
		url    string
		wantOK bool
	}{
		{"healthy", http.StatusOK, srv.URL + "/healthz", true},
		{"unhealthy", http.StatusServiceUnavailable, srv.URL + "/healthz", false},
		{"wrong path", http.StatusOK, srv.URL + "/nope", false},
		{"refused", http.StatusOK, closedURL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(tc.status))
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(), "HEALTHCHECK_URL="+tc.url)
			out, err := cmd.CombinedOutput()
			if ok := err == nil; ok != tc.wantOK {
				t.Errorf("healthcheck against %s (status %d): err = %v, want success %v\n%s", tc.url, tc.status, err, tc.wantOK, out)
			}
		})
	}
}
