package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const systemNS = "knative-serving"

// installServing applies Knative Serving's own config/ (CRDs, RBAC,
// config-* ConfigMaps, the Services of its components, webhook
// configurations), starts the node agent, then the webhook, controller,
// autoscaler and activator as processes. Their Deployments are not
// applied: the processes stand in for them, and a mirror Pod for each
// (as the kubelet makes for static pods) gives their Services endpoints.
func (r *runner) installServing(ctx context.Context, refs map[string]string, imgFile string) error {
	core := filepath.Join(r.dirs.serving, "config", "core")
	var files []string
	for _, pat := range []string{
		"100-namespace.yaml", "200-serviceaccount.yaml", "200-roles/*.yaml", "300-resources/*.yaml",
		"300-knativecertificate.yaml", "configmaps/*.yaml", "deployments/*.yaml", "999-cache.yaml",
	} {
		m, err := filepath.Glob(filepath.Join(core, pat))
		if err != nil {
			return err
		}
		files = append(files, m...)
	}
	for _, pat := range []string{filepath.Join(r.dirs.networking, "config", "*.yaml"), filepath.Join(r.dirs.caching, "config", "*.yaml")} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	all, err := readObjects(files...)
	if err != nil {
		return err
	}
	var objs []object
	for _, o := range all {
		// Of deployments/*.yaml only the Services: the processes below
		// replace the Deployments (and their HPAs and PDBs).
		if strings.Contains(o.source, "/deployments/") && o.u.GetKind() != "Service" {
			continue
		}
		objs = append(objs, o)
	}
	if err := koResolve(objs, refs); err != nil {
		return err
	}
	if err := r.apply(ctx, objs); err != nil {
		return fmt.Errorf("apply Knative Serving config: %w", err)
	}
	r.logf("applied Knative Serving v0.50.0 config/core (%d objects; CRDs, RBAC, config-*, Services)", len(objs))

	if _, err := r.start("nodeagent", "", nil, filepath.Join(r.bin, "nodeagent"),
		"-kubeconfig", r.adminKubeconfig, "-images", imgFile, "-workdir", r.work,
		"-bridge", r.bridge.Name, "-bridge-cidr", r.bridge.Prefix.String(),
		"-hosts-file", filepath.Join(r.work, "etc", "hosts")); err != nil {
		return err
	}

	if err := r.startComponent(ctx, "webhook", "webhook", []string{"WEBHOOK_NAME=webhook", "WEBHOOK_PORT=8443"}); err != nil {
		return err
	}
	hooks, err := readObjects(mustGlob(filepath.Join(core, "webhooks", "*.yaml"))...)
	if err != nil {
		return err
	}
	if err := r.apply(ctx, hooks); err != nil {
		return fmt.Errorf("apply webhook configurations: %w", err)
	}
	// The webhook fills in its CA and rules once it sees its configurations.
	err = poll(ctx, 2*time.Minute, func() (bool, error) {
		v, err := r.kc.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "validation.webhook.serving.knative.dev", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return len(v.Webhooks) > 0 && len(v.Webhooks[0].ClientConfig.CABundle) > 0 && len(v.Webhooks[0].Rules) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("webhook never configured itself: %w", err)
	}
	r.logf("webhook serving admission (CA bundle and rules set by the webhook)")
	for _, c := range []struct{ name, svc string }{{"controller", "controller"}, {"autoscaler", "autoscaler"}, {"activator", "activator-service"}} {
		if err := r.startComponent(ctx, c.name, c.svc, nil); err != nil {
			return err
		}
	}
	return nil
}

func mustGlob(p string) []string {
	m, _ := filepath.Glob(p)
	return m
}

// startComponent runs knative.dev/serving/cmd/<name> with the env its
// Deployment sets, in its own network namespace (the activator in the host
// namespace), and creates its mirror Pod, labelled for Service svc.
func (r *runner) startComponent(ctx context.Context, name, svc string, env []string) error {
	ip, ns := r.bridge.Gateway().String(), ""
	if a, ok := sysIPs[name]; ok {
		ip, ns = a, "sys-"+name
		if err := r.bridge.Add(ns, "vs-"+name, mustAddr(a)); err != nil {
			return err
		}
	}
	pod := name + "-e2e"
	env = append(env, "SYSTEM_NAMESPACE="+systemNS, "POD_NAME="+pod, "POD_IP="+ip,
		"CONFIG_LOGGING_NAME=config-logging", "CONFIG_OBSERVABILITY_NAME=config-observability")
	p, err := r.start(name, ns, env, filepath.Join(r.bin, name), "--kubeconfig="+r.adminKubeconfig)
	if err != nil {
		return err
	}
	s, err := r.kc.CoreV1().Services(systemNS).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		return err
	}
	mp := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: systemNS, Labels: s.Spec.Selector,
			Annotations: map[string]string{"e2e.portfolio-mcp.io/process": fmt.Sprint(p.cmd.Process.Pid)}},
		Spec: corev1.PodSpec{
			NodeName: "e2e-host", ServiceAccountName: "controller", AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: name, Image: "ko.local/knative.dev/serving/cmd/" + name}},
		},
	}
	created, err := r.kc.CoreV1().Pods(systemNS).Create(ctx, mp, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = r.kc.CoreV1().Pods(systemNS).Get(ctx, pod, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("mirror pod %s: %w", pod, err)
	}
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: r.bridge.Gateway().String(), StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: name, Image: created.Spec.Containers[0].Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	if _, err := r.kc.CoreV1().Pods(systemNS).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("mirror pod %s status: %w", pod, err)
	}
	r.logf("%s running at %s (mirror pod %s/%s)", name, ip, systemNS, pod)
	return nil
}

// applyProject applies knative/*.yaml as `ko apply -f knative/` would
// (images resolved, files in lexical order, strict field validation), after
// the CRDs its objects need: Knative Eventing's Broker, Trigger and
// SinkBinding and External Secrets' SecretStore and ExternalSecret (CRDs
// only, no controllers). The Secrets External Secrets would sync are
// created with random keys instead.
func (r *runner) applyProject(ctx context.Context, refs map[string]string) error {
	crdFiles := []string{
		filepath.Join(r.dirs.eventing, "config/core/resources/broker.yaml"),
		filepath.Join(r.dirs.eventing, "config/core/resources/trigger.yaml"),
		filepath.Join(r.dirs.eventing, "config/core/resources/sinkbindings.yaml"),
		filepath.Join(r.dirs.eso, "config/crds/bases/external-secrets.io_secretstores.yaml"),
		filepath.Join(r.dirs.eso, "config/crds/bases/external-secrets.io_externalsecrets.yaml"),
	}
	crds, err := readObjects(crdFiles...)
	if err != nil {
		return err
	}
	if err := r.apply(ctx, crds); err != nil {
		return fmt.Errorf("apply CRDs: %w", err)
	}
	files, err := yamlFiles(filepath.Join(r.repo, "knative"))
	if err != nil {
		return err
	}
	objs, err := readObjects(files...)
	if err != nil {
		return err
	}
	if err := koResolve(objs, refs); err != nil {
		return err
	}
	// External Secrets stand-in: the target Secrets exist before the pods.
	for _, o := range objs {
		if o.u.GetKind() != "ExternalSecret" {
			continue
		}
		if err := r.syncExternalSecret(ctx, o.u); err != nil {
			return err
		}
	}
	if err := r.apply(ctx, objs); err != nil {
		return fmt.Errorf("ko apply -f knative/: %w", err)
	}
	r.logf("applied knative/ (%d objects from %d files, strict field validation)", len(objs), len(files))
	return nil
}

func (r *runner) syncExternalSecret(ctx context.Context, u *unstructured.Unstructured) error {
	ns := u.GetNamespace()
	target, _, _ := unstructured.NestedString(u.Object, "spec", "target", "name")
	if target == "" {
		target = u.GetName()
	}
	data, _, _ := unstructured.NestedSlice(u.Object, "spec", "data")
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: target, Namespace: ns,
		Labels: map[string]string{"e2e.portfolio-mcp.io/stand-in-for": "external-secrets"}},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{}}
	for _, d := range data {
		m, _ := d.(map[string]any)
		k, _ := m["secretKey"].(string)
		if k != "" {
			s.Data[k] = secretValue(k)
		}
	}
	// The namespace comes from knative/00-namespace.yaml; create it first
	// if this runs before the apply.
	_, err := r.kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_, err = r.kc.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("secret %s/%s: %w", ns, target, err)
	}
	return nil
}

// secretValue is a stand-in value in the format the binaries check: an
// Ed25519 keyring for the audit trail, a URL for the notifier's webhook,
// 32 random bytes (hex) for HMAC, cookie and API keys.
func secretValue(key string) []byte {
	switch key {
	case "audit-signing-key":
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		return []byte("e2e-1:" + base64.StdEncoding.EncodeToString(priv) + "\n")
	case "webhook-url":
		return []byte("http://127.0.0.1:9/e2e-no-chat-webhook")
	}
	return []byte(randHex(32))
}
