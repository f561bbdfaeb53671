// Package apiservertest runs the real Kubernetes custom-resource API server
// (k8s.io/apiextensions-apiserver, the code kube-apiserver embeds for
// CustomResourceDefinitions) inside the test process, on an embedded etcd,
// so tests can install the CRDs a project publishes and create custom
// resources through client-go exactly as `kubectl apply` does: strict field
// validation, pruning, defaulting, the OpenAPI schema, list types and CEL
// rules, all decided by the server and not by a re-implementation of it.
//
// Starting it takes a few seconds, so a test binary shares one (Shared) and
// stops it in TestMain. It is test-only: etcd's server must never reach a
// binary the project ships.
package apiservertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	servertesting "k8s.io/apiextensions-apiserver/pkg/cmd/server/testing"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// Server is a running apiextensions-apiserver with its etcd.
type Server struct {
	// Dynamic is a client of the server (its privileged loopback
	// identity), for the custom resources its CRDs define.
	Dynamic dynamic.Interface
	crds    apiextensionsclient.Interface
	dir     string
	stop    []func()

	mu    sync.Mutex
	kinds map[schema.GroupVersionKind]Kind
}

// Kind is how the server serves one kind a CRD defines.
type Kind struct {
	Resource   schema.GroupVersionResource
	Namespaced bool
}

// Start runs etcd and the API server on free loopback ports. Close stops
// both and removes their files.
func Start() (_ *Server, err error) {
	dir, err := os.MkdirTemp("", "apiservertest")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	s := &Server{dir: dir, kinds: map[schema.GroupVersionKind]Kind{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	etcdURL, err := s.startEtcd()
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	// The server delegates authentication and authorization to a
	// kube-apiserver, which there is none of: a kubeconfig pointing nowhere
	// satisfies its flags, and the loopback identity the clients use is
	// admitted without asking (as in the apiextensions-apiserver's own
	// integration fixtures, whose flags these are).
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(nowhereKubeconfig), 0o600); err != nil {
		return nil, err
	}
	ts, err := servertesting.StartTestServer(quiet{}, nil, []string{
		"--etcd-servers", etcdURL,
		"--authentication-skip-lookup",
		"--authentication-kubeconfig", kubeconfig,
		"--authorization-kubeconfig", kubeconfig,
		"--kubeconfig", kubeconfig,
		"--enable-priority-and-fairness=false",
		// Admission that would call the missing kube-apiserver. Namespaces
		// are not served here, so objects may name any namespace.
		"--disable-admission-plugins", "NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy",
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("apiextensions-apiserver: %w", err)
	}
	s.stop = append(s.stop, ts.TearDownFn)
	// No client-side rate limit: waiting for CRDs polls quickly, and the
	// default limit would make the later creates queue behind the polls.
	cfg := rest.CopyConfig(ts.ClientConfig)
	cfg.QPS = -1
	if s.crds, err = apiextensionsclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("CRD client: %w", err)
	}
	if s.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return s, nil
}

// nowhereKubeconfig names a kube-apiserver that does not exist.
const nowhereKubeconfig = `apiVersion: v1
kind: Config
clusters:
- {name: none, cluster: {server: "http://127.0.0.1:1"}}
users:
- {name: none, user: {}}
contexts:
- {name: none, context: {cluster: none, user: none}}
current-context: none
`

// startEtcd runs a single-member etcd with its data under s.dir and
// returns its client URL. fsync is off: the data lives as long as the test.
func (s *Server) startEtcd() (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(s.dir, "etcd")
	cfg.UnsafeNoFsync = true
	// etcd logs "server closed" errors on every Close; a real failure
	// reaches the test as StartEtcd's error or the API server's.
	cfg.LogLevel = "fatal"
	client := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", err
	}
	s.stop = append(s.stop, e.Close)
	select {
	case <-e.Server.ReadyNotify():
		return client.String(), nil
	case err := <-e.Err():
		return "", err
	case <-time.After(time.Minute):
		return "", errors.New("not ready after a minute")
	}
}

// freePorts asks the kernel for n unused loopback ports. Another process
// could take one before etcd binds it; on one test machine that is rare
// and shows as a clear bind error.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// quiet drops the test server's progress lines; its errors come back as
// StartTestServer's error.
type quiet struct{}

func (quiet) Logf(string, ...any)          {}
func (quiet) Errorf(string, ...any)        {}
func (quiet) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

var _ servertesting.Logger = quiet{}

// Close stops the API server, then etcd, and removes their files.
func (s *Server) Close() {
	for i := len(s.stop) - 1; i >= 0; i-- {
		s.stop[i]()
	}
	s.stop = nil
	os.RemoveAll(s.dir)
}

// Install creates the CRDs (one already there is kept: a shared server
// sees the same CRDs from several tests), waits until each is Established
// and its resource answers, and records their served kinds for Kind and
// Create. Creating them all before waiting lets the server prepare them
// together, and it delays a create of a custom resource only once by the
// 2 s it holds creates for a CRD established less than 2 s ago (an HA
// guard in its customresource_handler.go).
func (s *Server) Install(ctx context.Context, crds ...*apiextensionsv1.CustomResourceDefinition) error {
	for _, crd := range crds {
		_, err := s.crds.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("CRD %s: %w", crd.Name, err)
		}
	}
	for _, crd := range crds {
		if err := s.waitEstablished(ctx, crd); err != nil {
			return fmt.Errorf("CRD %s: %w", crd.Name, err)
		}
	}
	return nil
}

// waitEstablished polls until the CRD is Established, then until a list of
// each served version succeeds: the handler for a new CRD is set up just
// after the condition flips.
func (s *Server) waitEstablished(ctx context.Context, crd *apiextensionsv1.CustomResourceDefinition) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := s.crds.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiextensionsv1.NamesAccepted && c.Status == apiextensionsv1.ConditionFalse {
				return false, fmt.Errorf("names not accepted: %s", c.Message)
			}
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for Established: %w", err)
	}
	for _, v := range crd.Spec.Versions {
		if !v.Served {
			continue
		}
		k := Kind{
			Resource:   schema.GroupVersionResource{Group: crd.Spec.Group, Version: v.Name, Resource: crd.Spec.Names.Plural},
			Namespaced: crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
		}
		err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := s.Dynamic.Resource(k.Resource).List(ctx, metav1.ListOptions{Limit: 1})
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("waiting for %s to be served: %w", k.Resource, err)
		}
		s.mu.Lock()
		s.kinds[k.Resource.GroupVersion().WithKind(crd.Spec.Names.Kind)] = k
		s.mu.Unlock()
	}
	return nil
}

// Kind reports how gvk is served, if an installed CRD defines it.
func (s *Server) Kind(gvk schema.GroupVersionKind) (Kind, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.kinds[gvk]
	return k, ok
}

// Create sends one object (YAML or JSON) to the server as `kubectl apply`
// does for a new object: a create with fieldValidation=Strict, so an
// unknown or duplicated field is an error and not a warning, in the
// namespace the object names. It returns the object as stored (defaults
// applied, unknown fields pruned).
func (s *Server) Create(ctx context.Context, manifest []byte) (*unstructured.Unstructured, error) {
	var obj unstructured.Unstructured
	if err := yaml.Unmarshal(manifest, &obj.Object); err != nil {
		return nil, fmt.Errorf("decoding the object: %w", err)
	}
	gvk := obj.GroupVersionKind()
	k, ok := s.Kind(gvk)
	if !ok {
		return nil, fmt.Errorf("no installed CRD serves %s", gvk)
	}
	var r dynamic.ResourceInterface = s.Dynamic.Resource(k.Resource)
	if k.Namespaced {
		if obj.GetNamespace() == "" {
			return nil, fmt.Errorf("%s %s names no namespace; it would land in whatever namespace kubectl's context has", gvk.Kind, obj.GetName())
		}
		r = s.Dynamic.Resource(k.Resource).Namespace(obj.GetNamespace())
	}
	return r.Create(ctx, &obj, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
}

// ReadCRDs reads the CustomResourceDefinitions in files (paths relative to
// dir; a file may hold several YAML documents) and fails on anything else.
func ReadCRDs(dir string, files ...string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		docs, err := splitYAML(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, doc := range docs {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := yaml.Unmarshal(doc, &crd); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("%s holds a %s %q, not a CRD", f, crd.Kind, crd.Name)
			}
			out = append(out, &crd)
		}
	}
	return out, nil
}

// Shared is the one Server of a test binary: the first test that needs it
// starts it (tests that do not, and runs filtered to them, pay nothing),
// and TestMain closes it after m.Run:
//
//	var apiServer apiservertest.Shared
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		apiServer.Close()
//		os.Exit(code)
//	}
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Get returns the shared server, starting it on first use. A server that
// cannot start fails the test: it needs nothing but loopback networking.
func (s *Shared) Get(t testing.TB) *Server {
	t.Helper()
	s.once.Do(func() { s.srv, s.err = Start() })
	if s.err != nil {
		t.Fatalf("starting the API server: %v", s.err)
	}
	return s.srv
}

// Close stops the server if a test started it.
func (s *Shared) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
}
