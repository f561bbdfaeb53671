package knative

// The External Secrets objects are validated against their CRDs on the
// real API server (crd_apiserver_test.go); the tests here check what a
// schema cannot: that the secrets reach the server as the files it reads.

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
)

// externalSecret is the part of an ExternalSecret the consistency checks
// read (crd_apiserver_test.go validates the whole object).
type externalSecret struct {
	Metadata struct{ Name string } `json:"metadata"`
	Spec     struct {
		SecretStoreRef struct{ Kind, Name string } `json:"secretStoreRef"`
		Target         struct{ Name string }       `json:"target"`
		Data           []struct {
			SecretKey string `json:"secretKey"`
			RemoteRef struct {
				Key, Property string
			} `json:"remoteRef"`
		} `json:"data"`
	} `json:"spec"`
}

// secretStore is the part of a SecretStore the consistency checks read.
type secretStore struct {
	Spec struct {
		Provider struct {
			AWS struct {
				Service string
				Auth    struct {
					JWT struct {
						ServiceAccountRef struct{ Name string } `json:"serviceAccountRef"`
					} `json:"jwt"`
				} `json:"auth"`
			} `json:"aws"`
		} `json:"provider"`
	} `json:"spec"`
}

// decodeLoose reads the listed fields of a CRD object; unknown fields are
// the schema test's business.
func decodeLoose[T any](t *testing.T, docs []document, kind string) map[string]*T {
	t.Helper()
	out := map[string]*T{}
	for _, d := range docs {
		if d.Kind != kind || d.GVK().Group != "external-secrets.io" {
			continue
		}
		var v T
		if err := yaml.Unmarshal(d.Raw, &v); err != nil {
			t.Fatalf("%s: %v", d.Source, err)
		}
		out[d.Name] = &v
	}
	return out
}

// TestSecretsReachTheServerAsFiles follows each mode's secrets from AWS to
// the server: the Service mounts the Secret the ExternalSecret writes, at
// SECRETS_DIR, as a whole directory (rotation needs the kubelet's atomic
// updates, which subPath mounts never get); the Secret holds exactly the
// files the secrets package reads; the store authenticates as a
// ServiceAccount with an IRSA role; and nothing is shared between paper and
// live.
func TestSecretsReachTheServerAsFiles(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	svcs := objectsOf[servingv1.Service](t, resolved(docs), servingv1.SchemeGroupVersion.WithKind("Service"))
	accounts := objectsOf[corev1.ServiceAccount](t, docs, corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	externals := decodeLoose[externalSecret](t, docs, "ExternalSecret")
	stores := decodeLoose[secretStore](t, docs, "SecretStore")
	wantKeys := []string{secrets.ApprovalEventKey, secrets.AuditSigningKey, secrets.BackendAPIKey, secrets.ConsoleCookieKey, secrets.RequestStateKey}

	used := map[string]string{} // AWS secret, role, store, Secret -> mode
	share := func(what, mode string) {
		if other, ok := used[what]; ok && other != mode {
			t.Errorf("%s is used by both %s and %s", what, other, mode)
		}
		used[what] = mode
	}
	for _, mode := range modes {
		svc := svcs[serviceName(mode)]
		spec := svc.Spec.Template.Spec
		c := spec.GetContainer()
		dir, _ := envValue(c, "SECRETS_DIR")

		var secretName string
		for _, m := range c.VolumeMounts {
			if m.MountPath != dir {
				continue
			}
			if !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" {
				t.Errorf("%s: the secrets mount must be read-only and whole (no subPath): %+v", svc.Name, m)
			}
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					secretName = v.Secret.SecretName
					if v.Secret.Items != nil {
						t.Errorf("%s: the secret volume selects items; mount every key", svc.Name)
					}
				}
			}
		}
		if dir == "" || secretName == "" {
			t.Fatalf("%s: no Secret volume mounted at SECRETS_DIR=%q", svc.Name, dir)
		}
		share("Secret "+secretName, mode)

		es := writerOf(t, externals, svc.Name, secretName)
		var keys []string
		for _, d := range es.Spec.Data {
			keys = append(keys, d.SecretKey)
			share("AWS secret "+d.RemoteRef.Key, mode)
			if !strings.Contains(d.RemoteRef.Key, mode) {
				t.Errorf("%s: key %s comes from AWS secret %q, which does not name the %s mode", es.Metadata.Name, d.SecretKey, d.RemoteRef.Key, mode)
			}
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("%s writes keys %v; the server reads exactly %v", es.Metadata.Name, keys, wantKeys)
		}

		ref := es.Spec.SecretStoreRef
		store := stores[ref.Name]
		if ref.Kind != "SecretStore" || store == nil {
			t.Fatalf("%s uses %s %q, not a SecretStore of these manifests", es.Metadata.Name, ref.Kind, ref.Name)
		}
		share("SecretStore "+ref.Name, mode)
		aws := store.Spec.Provider.AWS
		sa := accounts[aws.Auth.JWT.ServiceAccountRef.Name]
		if aws.Service != "SecretsManager" || sa == nil {
			t.Fatalf("SecretStore %s: service %q, ServiceAccount %q; want Secrets Manager through a ServiceAccount of these manifests", ref.Name, aws.Service, aws.Auth.JWT.ServiceAccountRef.Name)
		}
		role := sa.Annotations["eks.amazonaws.com/role-arn"]
		if !strings.HasPrefix(role, "arn:aws:iam::") || !strings.Contains(role, mode) {
			t.Errorf("ServiceAccount %s: IRSA role %q, want an IAM role ARN for the %s mode", sa.Name, role, mode)
		}
		share("role "+role, mode)
		if sa.Name == spec.ServiceAccountName {
			t.Errorf("%s runs as %s, the account holding the secrets role; the pods need no AWS access", svc.Name, sa.Name)
		}
	}
}

// writerOf is the ExternalSecret that writes the Secret a Service mounts.
func writerOf(t *testing.T, externals map[string]*externalSecret, service, secretName string) *externalSecret {
	t.Helper()
	for _, e := range externals {
		if e.Spec.Target.Name == secretName {
			return e
		}
	}
	t.Fatalf("%s mounts Secret %s, which no ExternalSecret writes", service, secretName)
	return nil
}
