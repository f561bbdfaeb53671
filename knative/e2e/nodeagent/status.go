package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// syncPodStatus writes p's status (phase, address, container states,
// Ready) when it changed.
func (a *agent) syncPodStatus(ctx context.Context, p *pod) {
	p.mu.Lock()
	if p.terminating || !p.ip.IsValid() {
		p.mu.Unlock()
		return
	}
	now := metav1.Now()
	st := corev1.PodStatus{
		Phase:     corev1.PodPending,
		HostIP:    a.bridge.Gateway().String(),
		HostIPs:   []corev1.HostIP{{IP: a.bridge.Gateway().String()}},
		PodIP:     p.ip.String(),
		PodIPs:    []corev1.PodIP{{IP: p.ip.String()}},
		StartTime: &metav1.Time{Time: p.started},
		QOSClass:  corev1.PodQOSBurstable,
	}
	allRunning, allReady := len(p.containers) > 0, len(p.containers) > 0
	var sig []string
	for _, c := range p.containers {
		cs := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image,
			Ready: c.running && c.ready, RestartCount: c.restarts, Started: ptr(c.running),
		}
		if c.running {
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Time{Time: c.started}}
		} else {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waiting}
		}
		allRunning = allRunning && c.running
		allReady = allReady && cs.Ready
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		sig = append(sig, fmt.Sprintf("%s:%v:%v:%d:%s", c.spec.Name, c.running, cs.Ready, c.restarts, c.waiting))
	}
	p.mu.Unlock()
	if allRunning {
		st.Phase = corev1.PodRunning
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now}
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, allReady), cond(corev1.PodReady, allReady),
	}
	s := fmt.Sprint(st.Phase, sig)
	p.mu.Lock()
	same := s == p.lastStatus
	p.mu.Unlock()
	if same {
		return
	}
	obj, err := a.pods.Pods(p.ns).Get(p.name)
	if err != nil || obj.UID != p.uid {
		return // not in the cache yet: the next event brings it
	}
	obj = obj.DeepCopy()
	// Keep transition times of conditions whose status did not change.
	for i, c := range st.Conditions {
		for _, old := range obj.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	obj.Status = st
	if _, err := a.kc.CoreV1().Pods(p.ns).UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			log.Printf("pod %s/%s: status: %v", p.ns, p.name, err)
		}
		return
	}
	p.mu.Lock()
	p.lastStatus = s
	p.mu.Unlock()
	if allReady {
		log.Printf("pod %s/%s: Ready", p.ns, p.name)
	}
}

// syncDeploymentStatus writes d's status from the pods this agent runs
// for it, as the Deployment controller would.
func (a *agent) syncDeploymentStatus(ctx context.Context, d *appsv1.Deployment) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	var replicas, ready int32
	a.mu.Lock()
	for _, p := range a.running {
		if p.ns != d.Namespace || p.deploy != d.Name {
			continue
		}
		p.mu.Lock()
		if !p.terminating {
			replicas++
			if p.readyLocked() {
				ready++
			}
		}
		p.mu.Unlock()
	}
	a.mu.Unlock()
	maxUnavailable := want / 4 // the default 25%, rounded down
	available := ready >= want-maxUnavailable
	st := appsv1.DeploymentStatus{
		ObservedGeneration:  d.Generation,
		Replicas:            replicas,
		UpdatedReplicas:     replicas,
		ReadyReplicas:       ready,
		AvailableReplicas:   ready,
		UnavailableReplicas: max(want-ready, 0),
	}
	now := metav1.Now()
	avail := appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
		Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability.",
		LastUpdateTime: now, LastTransitionTime: now}
	if available {
		avail.Status, avail.Reason, avail.Message = corev1.ConditionTrue, "MinimumReplicasAvailable", "Deployment has minimum availability."
	}
	prog := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
		Reason: "NewReplicaSetAvailable", Message: "pods run by the e2e node agent",
		LastUpdateTime: now, LastTransitionTime: now}
	if ready < want {
		prog.Reason = "ReplicaSetUpdated"
	}
	st.Conditions = []appsv1.DeploymentCondition{avail, prog}
	old := d.Status
	if old.ObservedGeneration == st.ObservedGeneration && old.Replicas == st.Replicas &&
		old.ReadyReplicas == st.ReadyReplicas && old.UnavailableReplicas == st.UnavailableReplicas &&
		sameConds(old.Conditions, st.Conditions) {
		return
	}
	for i, c := range st.Conditions {
		for _, o := range old.Conditions {
			if o.Type == c.Type && o.Status == c.Status {
				st.Conditions[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	nd := d.DeepCopy()
	nd.Status = st
	if _, err := a.kc.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, nd, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
		log.Printf("deployment %s/%s: status: %v", d.Namespace, d.Name, err)
	}
}

func sameConds(a, b []appsv1.DeploymentCondition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Type != b[i].Type || a[i].Status != b[i].Status || a[i].Reason != b[i].Reason {
			return false
		}
	}
	return true
}

const sliceManager = "nodeagent.e2e.portfolio-mcp.io"

// syncEndpoints keeps Endpoints and one EndpointSlice per Service with a
// selector: ready pods as addresses, pods with an address that are not
// (yet) ready as not-ready addresses, terminating pods out of Endpoints
// and marked terminating in the slice.
func (a *agent) syncEndpoints(ctx context.Context) {
	if a.lastEP == nil {
		a.lastEP, a.lastSlice = map[string]string{}, map[string]string{}
	}
	svcs, err := a.svcs.List(labels.Everything())
	if err != nil {
		return
	}
	for _, svc := range svcs {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		pods, err := a.pods.Pods(svc.Namespace).List(labels.SelectorFromSet(svc.Spec.Selector))
		if err != nil {
			continue
		}
		sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
		var ready, notReady []corev1.EndpointAddress
		var sliceEPs []discoveryv1.Endpoint
		var ports []corev1.EndpointPort
		for _, p := range pods {
			if p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			pp, ok := servicePorts(svc, p)
			if !ok {
				continue
			}
			if ports == nil {
				ports = pp
			}
			isReady := podReady(p)
			terminating := p.DeletionTimestamp != nil
			addr := corev1.EndpointAddress{IP: p.Status.PodIP, NodeName: ptr(p.Spec.NodeName),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}}
			switch {
			case terminating:
			case isReady || svc.Spec.PublishNotReadyAddresses:
				ready = append(ready, addr)
			default:
				notReady = append(notReady, addr)
			}
			sliceEPs = append(sliceEPs, discoveryv1.Endpoint{
				Addresses: []string{p.Status.PodIP},
				Conditions: discoveryv1.EndpointConditions{
					Ready: ptr(isReady && !terminating), Serving: ptr(isReady), Terminating: ptr(terminating),
				},
				NodeName:  ptr(p.Spec.NodeName),
				TargetRef: addr.TargetRef,
			})
		}
		var subsets []corev1.EndpointSubset
		if len(ready)+len(notReady) > 0 {
			subsets = []corev1.EndpointSubset{{Addresses: ready, NotReadyAddresses: notReady, Ports: ports}}
		}
		a.writeEndpoints(ctx, svc, subsets)
		a.writeSlice(ctx, svc, sliceEPs, ports)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// servicePorts resolves svc's target ports on pod p.
func servicePorts(svc *corev1.Service, p *corev1.Pod) ([]corev1.EndpointPort, bool) {
	var out []corev1.EndpointPort
	rp := &pod{spec: p.Spec}
	for _, sp := range svc.Spec.Ports {
		tp := sp.TargetPort
		if tp.IntValue() == 0 && tp.StrVal == "" {
			tp.IntVal = sp.Port
		}
		n, err := resolvePort(rp, tp)
		if err != nil {
			return nil, false
		}
		out = append(out, corev1.EndpointPort{Name: sp.Name, Port: int32(n), Protocol: sp.Protocol, AppProtocol: sp.AppProtocol})
	}
	return out, true
}

func (a *agent) writeEndpoints(ctx context.Context, svc *corev1.Service, subsets []corev1.EndpointSubset) {
	k := key(svc.Namespace, svc.Name)
	b, _ := json.Marshal(subsets)
	if a.lastEP[k] == string(b) {
		return
	}
	eps := a.kc.CoreV1().Endpoints(svc.Namespace) //nolint:staticcheck // Knative reads v1 Endpoints.
	ep, err := eps.Get(ctx, svc.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		ep = &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: svc.Labels}, Subsets: subsets}
		_, err = eps.Create(ctx, ep, metav1.CreateOptions{})
	case err == nil:
		ep.Subsets = subsets
		_, err = eps.Update(ctx, ep, metav1.UpdateOptions{})
	}
	if err != nil {
		log.Printf("endpoints %s: %v", k, err)
		return
	}
	a.lastEP[k] = string(b)
}

func (a *agent) writeSlice(ctx context.Context, svc *corev1.Service, eps []discoveryv1.Endpoint, ports []corev1.EndpointPort) {
	k := key(svc.Namespace, svc.Name)
	var sp []discoveryv1.EndpointPort
	for _, p := range ports {
		sp = append(sp, discoveryv1.EndpointPort{Name: ptr(p.Name), Port: ptr(p.Port), Protocol: ptr(p.Protocol), AppProtocol: p.AppProtocol})
	}
	b, _ := json.Marshal([]any{eps, sp})
	if a.lastSlice[k] == string(b) {
		return
	}
	name := svc.Name + "-nodeagent"
	c := a.kc.DiscoveryV1().EndpointSlices(svc.Namespace)
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: svc.Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc.Name,
			discoveryv1.LabelManagedBy:   sliceManager,
		}, OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       sp,
	}
	cur, err := c.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		cur.Endpoints, cur.Ports = eps, sp
		_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		log.Printf("endpointslice %s: %v", k, err)
		return
	}
	a.lastSlice[k] = string(b)
}
