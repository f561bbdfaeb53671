package autoscale

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/autoscaler/config/autoscalerconfig"
	"knative.dev/serving/pkg/autoscaler/scaling"
	kparesources "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	aresources "knative.dev/serving/pkg/reconciler/autoscaling/resources"
	revresources "knative.dev/serving/pkg/reconciler/revision/resources"
	"sigs.k8s.io/yaml"
)

// Settings is everything the KPA derives for one Revision: the DeciderSpec
// the autoscaler runs with, the metric windows the collector averages over,
// and the scale bounds and scale-to-zero timers the KPA reconciler applies.
// Build it with FromService so the values come from Knative's own code.
type Settings struct {
	// Name is the Service name the settings came from.
	Name string
	// Decider is the spec made by the KPA's MakeDecider.
	Decider scaling.DeciderSpec
	// StableWindow and PanicWindow are the metric windows (MakeMetric).
	StableWindow, PanicWindow time.Duration
	// WeightedAggregation selects the weighted-exponential bucket average
	// (metric-aggregation-algorithm annotation) instead of the linear one.
	WeightedAggregation bool
	// MinScale and MaxScale are PodAutoscaler.ScaleBounds (0 max = unbounded).
	MinScale, MaxScale int32
	// InitialScale is GetInitialScale: the floor until the revision has first
	// reached it.
	InitialScale int32
	// ContainerConcurrency is the hard per-pod in-flight limit enforced by
	// queue-proxy and the activator (0 = unlimited).
	ContainerConcurrency int64
	// CPULimit is the serving container's CPU limit in cores (0: none). The
	// simulator's default pod parallelism is derived from it.
	CPULimit float64
	// MemoryLimit is the serving container's memory limit in bytes (0:
	// none), against which the model's memory per pod is checked.
	MemoryLimit int64
	// EnableScaleToZero, ScaleToZeroGracePeriod and ScaleToZeroPodRetention
	// drive the KPA's handleScaleToZero.
	EnableScaleToZero       bool
	ScaleToZeroGracePeriod  time.Duration
	ScaleToZeroPodRetention time.Duration
}

// LoadService reads a Knative Service manifest (YAML or JSON). A file with
// several YAML documents is not supported: point at the Service's own file.
func LoadService(path string) (*servingv1.Service, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseService(b)
}

// ParseService decodes a Knative Service manifest into serving's own type.
func ParseService(b []byte) (*servingv1.Service, error) {
	var svc servingv1.Service
	if err := yaml.UnmarshalStrict(b, &svc); err != nil {
		return nil, fmt.Errorf("autoscale: parse Service manifest: %w", err)
	}
	if svc.Kind != "Service" || svc.APIVersion != servingv1.SchemeGroupVersion.String() {
		return nil, fmt.Errorf("autoscale: manifest is %s %s, want %s Service",
			svc.APIVersion, svc.Kind, servingv1.SchemeGroupVersion)
	}
	return &svc, nil
}

// AutoscalerConfig returns the cluster autoscaler configuration built from
// the data of a config-autoscaler ConfigMap (nil or empty: Knative's
// defaults), parsed and validated by Knative's own code.
func AutoscalerConfig(data map[string]string) (*autoscalerconfig.Config, error) {
	cfg, err := asconfig.NewConfigFromMap(data)
	if err != nil {
		return nil, fmt.Errorf("autoscale: config-autoscaler: %w", err)
	}
	return cfg, nil
}

// LoadAutoscalerConfigMap reads a config-autoscaler ConfigMap manifest.
func LoadAutoscalerConfigMap(path string) (*autoscalerconfig.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(b, &cm); err != nil {
		return nil, fmt.Errorf("autoscale: parse ConfigMap: %w", err)
	}
	return asconfig.NewConfigFromConfigMap(&cm)
}

// RevisionFor builds the Revision the Configuration reconciler would stamp
// out of the Service's template, marked as routed (routingState=active).
func RevisionFor(svc *servingv1.Service) *servingv1.Revision {
	tmpl := svc.Spec.Template
	ns := svc.Namespace
	if ns == "" {
		ns = "default"
	}
	labels := map[string]string{
		serving.ServiceLabelKey:       svc.Name,
		serving.ConfigurationLabelKey: svc.Name,
		serving.RoutingStateLabelKey:  string(servingv1.RoutingStateActive),
	}
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	anns := make(map[string]string, len(tmpl.Annotations))
	for k, v := range tmpl.Annotations {
		anns[k] = v
	}
	return &servingv1.Revision{
		ObjectMeta: metav1.ObjectMeta{
			Name:        svc.Name + "-00001",
			Namespace:   ns,
			Labels:      labels,
			Annotations: anns,
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
}

// FromService derives the autoscaling Settings of the Service's revision the
// way Knative does: template annotations are validated with
// autoscaling.ValidateAnnotations, the PodAutoscaler is made by the revision
// reconciler's MakePA, the DeciderSpec by the KPA's MakeDecider, the windows
// by MakeMetric and the bounds by PodAutoscaler.ScaleBounds. cfg is the
// cluster config-autoscaler (see AutoscalerConfig).
func FromService(svc *servingv1.Service, cfg *autoscalerconfig.Config) (*Settings, error) {
	rev := RevisionFor(svc)
	if err := autoscaling.ValidateAnnotations(context.Background(), cfg, rev.Annotations); err != nil {
		return nil, fmt.Errorf("autoscale: %s template annotations: %w", svc.Name, err)
	}
	pa := revresources.MakePA(rev, nil)
	if pa.Class() == "" {
		pa.Annotations[autoscaling.ClassAnnotationKey] = cfg.PodAutoscalerClass
	}
	if c := pa.Class(); c != autoscaling.KPA {
		return nil, fmt.Errorf("autoscale: %s uses autoscaler class %q; only %q is simulated", svc.Name, c, autoscaling.KPA)
	}
	s := settingsFromPA(svc.Name, pa, cfg)
	if q, ok := rev.Spec.GetContainer().Resources.Limits[corev1.ResourceCPU]; ok {
		s.CPULimit = q.AsApproximateFloat64()
	}
	if q, ok := rev.Spec.GetContainer().Resources.Limits[corev1.ResourceMemory]; ok {
		s.MemoryLimit = q.Value()
	}
	return s, nil
}

func settingsFromPA(name string, pa *autoscalingv1alpha1.PodAutoscaler, cfg *autoscalerconfig.Config) *Settings {
	decider := kparesources.MakeDecider(pa, cfg)
	metric := aresources.MakeMetric(pa, "simulated", cfg)
	minScale, maxScale := pa.ScaleBounds(cfg)
	retention := cfg.ScaleToZeroPodRetentionPeriod
	if d, ok := pa.ScaleToZeroPodRetention(); ok {
		retention = d
	}
	return &Settings{
		Name:                    name,
		Decider:                 decider.Spec,
		StableWindow:            metric.Spec.StableWindow,
		PanicWindow:             metric.Spec.PanicWindow,
		WeightedAggregation:     metric.AggregationAlgorithm() == autoscaling.MetricAggregationAlgorithmWeightedExponential,
		MinScale:                minScale,
		MaxScale:                maxScale,
		InitialScale:            kparesources.GetInitialScale(cfg, pa),
		ContainerConcurrency:    pa.Spec.ContainerConcurrency,
		EnableScaleToZero:       cfg.EnableScaleToZero,
		ScaleToZeroGracePeriod:  cfg.ScaleToZeroGracePeriod,
		ScaleToZeroPodRetention: retention,
	}
}

// String summarises the settings in one line.
func (s *Settings) String() string {
	d := s.Decider
	return fmt.Sprintf("%s: metric=%s target=%.4g total=%.4g containerConcurrency=%d min=%d max=%d initial=%d "+
		"window=%v panic-window=%v panic-threshold=%.0f%% scale-down-delay=%v tbc=%.0f grace=%v",
		s.Name, d.ScalingMetric, d.TargetValue, d.TotalValue, s.ContainerConcurrency, s.MinScale, s.MaxScale,
		s.InitialScale, s.StableWindow, s.PanicWindow, d.PanicThreshold*100, d.ScaleDownDelay,
		d.TargetBurstCapacity, s.ScaleToZeroGracePeriod)
}
